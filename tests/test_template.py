"""The method template's contract for recipes: a key a user gives merges over the method's
own default; parameter groups with their own rates and weight decay through schedule, LARS
and resume; a final rate relative to the batch-scaled peak; checkpoints of a user's own
method readable from any folder."""
import math
import shutil
import sys

import pytest
import pytorch_lightning as pl
import torch
import yaml

from helpers import invoke, tiny_baseline, tiny_byol, tiny_data, tiny_trainer
from sslkit.methods import BYOL, BarlowTwins, OptimConfig, SimSiam, SSLMethod, SwAV

CONFIG = {
    "trainer": {"max_steps": 1, "logger": False},
    "model": {"class_path": "sslkit.methods.BYOL", "init_args": {"backbone": {"name": "test_resnet"}}},
    "data": {"class_path": "sslkit.data.SyntheticScenes", "init_args": {"image_size": 32}},
}


def printed(tmp_path, capfd, monkeypatch, *flags):
    (tmp_path / "byol.yaml").write_text(yaml.safe_dump(CONFIG))
    code, out, err = invoke(["fit", "-c", tmp_path / "byol.yaml", *flags, "--print_config"], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-2000:]
    return yaml.safe_load(out)["model"]["init_args"]


def test_one_optimiser_key_changes_that_key_of_the_methods_recipe(tmp_path, capfd, monkeypatch):
    optim = printed(tmp_path, capfd, monkeypatch, "--model.init_args.optim.lr=0.3")["optim"]
    assert optim["lr"] == 0.3
    assert optim["name"] == "lars" and optim["weight_decay"] == 1.5e-6 and optim["exclude_bias_and_norm"]
    assert optim["warmup_epochs"] == 10 and optim["warmup_ends_at_peak"] is False


def test_one_augmentation_key_changes_that_key_of_the_methods_views(tmp_path, capfd, monkeypatch):
    augment = printed(tmp_path, capfd, monkeypatch, "--model.init_args.augment.init_args.crop_size=96")["augment"]
    assert augment["class_path"].endswith("BYOLViews") and augment["init_args"]["crop_size"] == 96
    assert list(augment["init_args"]["blur_p"]) == [1.0, 0.1] and list(augment["init_args"]["solarize_p"]) == [0.0, 0.2]


def test_online_classifier_keys_merge_over_its_defaults(tmp_path, capfd, monkeypatch):
    online = printed(tmp_path, capfd, monkeypatch, "--model.init_args.online_classifier.lr=0.5")["online_classifier"]
    assert online["lr"] == 0.5 and online["views"] == "global" and online["schedule"] == "cosine"


def test_python_calls_merge_a_dict_over_the_recipe_and_copy_the_default():
    model = BYOL(backbone="test_resnet", optim={"lr": 0.3})
    assert model.optim.name == "lars" and model.optim.lr == 0.3 and model.optim.weight_decay == 1.5e-6
    with pytest.raises(TypeError, match="no field 'lrr'"):
        BYOL(backbone="test_resnet", optim={"lrr": 0.3})
    first, second = SwAV(backbone="test_resnet"), SwAV(backbone="test_resnet")
    assert first.augment is not second.augment and first.optim is not second.optim  # nothing shared
    first.optim.lr = 1.0
    assert SwAV(backbone="test_resnet").optim.lr == 4.8
    assert type(first.augment).__name__ == "MultiCropViews"
    assert BYOL(backbone="test_resnet", optim=None).optim.name == "lars"  # None: the recipe, as before


# ---------------------------------------------------------------- parameter groups
class LearningRates(pl.Callback):
    """Each group's learning rate and weight decay before every optimiser step."""

    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.append({g["name"]: (g["lr"], g["weight_decay"], g["exclude"] if "exclude" in g else None)
                          for g in trainer.optimizers[0].param_groups})


def official_barlow_lr(step, max_steps, warmup_steps, batch_size):
    """barlowtwins ``main.py`` adjust_learning_rate: the weights' and the biases' rates."""
    base_lr = batch_size / 256
    if step < warmup_steps:
        lr = base_lr * step / warmup_steps
    else:
        step -= warmup_steps
        max_steps -= warmup_steps
        q = 0.5 * (1 + math.cos(math.pi * step / max_steps))
        end_lr = base_lr * 0.001
        lr = base_lr * q + end_lr * (1 - q)
    return lr * 0.2, lr * 0.0048


@pytest.mark.parametrize("batch_size", [16, 32])
def test_barlow_twins_rates_follow_main_py_at_any_batch_size(tmp_path, batch_size):
    """Weights at 0.2, biases and norms at 0.0048 (x B/256), warm-up then cosine to 0.001 x the
    peak: the relative final rate holds at every batch size."""
    model = tiny_baseline("BarlowTwins", optim={"lr": 0.2, "warmup_epochs": 1})
    rates = LearningRates()
    data = tiny_data(num_train=4 * batch_size, batch_size=batch_size)
    tiny_trainer(tmp_path, max_steps=12, max_epochs=3, callbacks=[rates], limit_val_batches=0).fit(model, data)
    assert len(rates.seen) == 12
    for step, groups in enumerate(rates.seen):
        weights, biases = official_barlow_lr(step, 12, 4, batch_size)
        assert groups["weights"][0] == pytest.approx(weights, rel=1e-9, abs=1e-15)
        assert groups["biases"][0] == pytest.approx(biases, rel=1e-9, abs=1e-15)
        assert groups["weights"][1:] == (1e-6, False) and groups["biases"][1:] == (0.0, True)


@pytest.mark.parametrize("pred_lr_mult", [1.0, 10.0])
def test_simsiam_predictor_keeps_the_peak_rate_as_fix_pred_lr(tmp_path, pred_lr_mult):
    """main_simsiam.py adjust_learning_rate: per epoch, ``init_lr * 0.5 (1 + cos(pi epoch /
    epochs))``, and ``init_lr`` for the predictor with ``--fix-pred-lr`` (x ``pred_lr_mult``)."""
    model = tiny_baseline("SimSiam", optim={"lr": 0.05, "schedule_interval": "epoch", "weight_decay": 1e-4},
                          pred_lr_mult=pred_lr_mult)
    rates = LearningRates()
    tiny_trainer(tmp_path, max_steps=12, max_epochs=3, callbacks=[rates], limit_val_batches=0).fit(model, tiny_data())
    init_lr = 0.05 * 16 / 256
    assert len(rates.seen) == 12
    for step, groups in enumerate(rates.seen):
        epoch = step // 4
        assert groups["encoder"][0] == pytest.approx(init_lr * 0.5 * (1 + math.cos(math.pi * epoch / 3)), rel=1e-9)
        assert groups["predictor"][0] == pytest.approx(pred_lr_mult * init_lr, rel=1e-12)
        assert groups["encoder"][1] == groups["predictor"][1] == 1e-4


def test_byol_predictor_at_pred_lr_mult_follows_the_byol_schedule(tmp_path):
    """With ``pred_lr_mult`` the predictor has a group of its own at that multiple of
    ``byol/utils/schedules.py``'s ``learning_schedule`` (rebuilt in test_schedules); at 1 the
    method keeps one group, the layout of earlier checkpoints."""
    from test_schedules import byol_schedule

    assert [g["name"] for g in tiny_byol().param_groups()] == ["all"]
    model = tiny_byol(pred_lr_mult=10.0, optim={"name": "sgd", "lr": 0.2, "warmup_epochs": 1,
                                                  "warmup_ends_at_peak": False, "exclude_bias_and_norm": False})
    rates = LearningRates()
    tiny_trainer(tmp_path, max_steps=12, max_epochs=3, callbacks=[rates], limit_val_batches=0).fit(model, tiny_data())
    assert len(rates.seen) == 12
    for step, groups in enumerate(rates.seen):
        assert groups["encoder"][0] == pytest.approx(byol_schedule(step, 16, 0.2, 12, 4), rel=1e-9, abs=1e-15)
        assert groups["predictor"][0] == pytest.approx(10 * byol_schedule(step, 16, 0.2, 12, 4), rel=1e-9, abs=1e-15)
    predictor = {id(p) for p in model.predictor.parameters()}
    optimiser = model.trainer.optimizers[0]
    grouped = {g["name"]: {id(p) for p in g["params"]} for g in optimiser.param_groups}
    assert grouped["predictor"] == predictor
    assert grouped["encoder"] == {id(p) for p in model.trainable_parameters()} - predictor


class Grouped(SimSiam):
    """A method of a user's own, with groups of every kind."""

    def param_groups(self):
        return [{"name": "backbone", "params": list(self.backbone.parameters()), "weight_decay_mult": 0.0},
                {"name": "projector", "params": [p for p in self.projector.parameters() if p.requires_grad],
                 "lr_mult": 0.5},
                {"name": "predictor", "params": list(self.predictor.parameters()), "lr_mult": 2.0,
                 "fixed_lr": True}]


def test_group_multipliers_and_exclusions_reach_the_optimiser(tmp_path):
    model = Grouped(backbone="test_resnet", proj_hidden_dim=16, proj_output_dim=8, pred_hidden_dim=4,
                    augment=tiny_baseline("SimSiam").augment,
                    optim=OptimConfig(name="lars", lr=0.4, weight_decay=1e-3, exclude_bias_and_norm=True,
                                      warmup_epochs=1))
    rates = LearningRates()
    tiny_trainer(tmp_path, max_steps=8, max_epochs=2, callbacks=[rates], limit_val_batches=0).fit(model, tiny_data())
    peak = 0.4 * 16 / 256
    groups = rates.seen[5]
    shape = groups["backbone"][0] / peak
    assert 0 < shape < 1
    assert groups["projector"][0] == pytest.approx(0.5 * peak * shape)
    assert groups["projector/bias_and_norm"][0] == pytest.approx(0.5 * peak * shape)
    assert all(seen["predictor"][0] == pytest.approx(2 * peak) for seen in rates.seen)
    assert groups["backbone"][1:] == (0.0, False) and groups["projector"][1:] == (1e-3, False)
    assert groups["projector/bias_and_norm"][1:] == (0.0, True)  # LARS: no weight decay, no adaptation


def test_groups_that_leave_out_or_repeat_a_parameter_are_refused(tmp_path):
    class Missing(SimSiam):
        def param_groups(self):
            return [{"params": list(self.backbone.parameters())}]

    class Twice(SimSiam):
        def param_groups(self):
            return [{"params": list(self.backbone.parameters())}, {"params": self.trainable_parameters()}]

    for cls, message in ((Missing, "leaves out trainable parameters.*projector"), (Twice, "is in two groups")):
        model = cls(backbone="test_resnet", proj_hidden_dim=16, proj_output_dim=8, pred_hidden_dim=4,
                    augment=tiny_baseline("SimSiam").augment)
        with pytest.raises(ValueError, match=message):
            tiny_trainer(tmp_path, max_steps=1).fit(model, tiny_data())


def test_final_lr_and_its_ratio_are_one_or_the_other():
    from sslkit.methods.optim import final_lr

    assert final_lr(OptimConfig(final_lr_ratio=0.001), 3.2) == pytest.approx(0.0032)
    assert final_lr(OptimConfig(final_lr=0.01), 3.2) == 0.01
    with pytest.raises(ValueError, match="give one"):
        final_lr(OptimConfig(final_lr=0.01, final_lr_ratio=0.001), 3.2)


# ---------------------------------------------------------------- a user's own method
USER_METHOD = '''
from sslkit.methods import SimSiam


class MySimSiam(SimSiam):
    """A method of the user's own module."""
'''


def test_a_user_methods_checkpoint_opens_from_another_folder(tmp_path, monkeypatch):
    from sslkit.checkpoints import CheckpointError, load_projector

    project = tmp_path / "project"
    project.mkdir()
    (project / "my_methods.py").write_text(USER_METHOD)
    monkeypatch.syspath_prepend(str(project))
    sys.modules.pop("my_methods", None)
    import my_methods

    model = my_methods.MySimSiam(backbone="test_resnet", proj_hidden_dim=16, proj_output_dim=8, pred_hidden_dim=4,
                                 augment=tiny_baseline("SimSiam").augment)
    trainer = tiny_trainer(tmp_path, max_steps=1, max_epochs=1, limit_val_batches=0)
    trainer.fit(model, tiny_data())
    trainer.save_checkpoint(tmp_path / "mine.ckpt")
    sys.modules.pop("my_methods", None)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(project)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    projector = load_projector(tmp_path / "mine.ckpt")  # from the file the checkpoint records
    assert torch.equal(projector[0].weight, model.projector[0].weight)
    sys.modules.pop("my_methods", None)
    shutil.move(project / "my_methods.py", tmp_path / "moved.py")
    with pytest.raises(CheckpointError, match="module 'my_methods' is not importable here.*PYTHONPATH") as error:
        load_projector(tmp_path / "mine.ckpt")
    assert "\n" not in str(error.value)
    sys.modules.pop("my_methods", None)


def test_every_method_is_an_sslmethod_with_a_projector():
    for name in ("SimCLR", "SimSiam", "BarlowTwins", "VICReg"):
        model = tiny_baseline(name)
        assert isinstance(model, SSLMethod) and hasattr(model, "projector")
    assert isinstance(BarlowTwins(backbone="test_resnet", proj_hidden_dim=8, proj_output_dim=8), SSLMethod)
