"""An interrupted run resumed from its checkpoint ends exactly where an uninterrupted one
does: parameters, queue, target network, optimiser and scheduler state, data order."""
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from helpers import record_draws, tiny_baseline, tiny_byol, tiny_data, tiny_moco, tiny_mocov3, tiny_swav, tiny_trainer
from sslkit.methods import BYOL, MoCoV2, OptimConfig, SwAV


def swav_with_queue():
    return tiny_swav(queue_size=32, queue_start_epoch=0)


@pytest.mark.parametrize("build, cls, state", [
    (tiny_moco, MoCoV2, ["queue.keys", "queue.ptr", "momentum_backbone.model.conv1.0.weight"]),
    (tiny_byol, BYOL, ["momentum_backbone.model.conv1.0.weight", "momentum_projector.0.weight"]),
    (swav_with_queue, SwAV, ["queues.0.keys", "queues.1.keys", "prototypes.weight"]),
], ids=["moco", "byol", "swav"])
def test_load_from_checkpoint_restores_every_tensor(tmp_path, build, cls, state):
    """A saved method loads back with every tensor it trained (queues and their pointers,
    momentum networks, prototypes), each of which differs from a fresh model's."""
    torch.manual_seed(0)
    model = build()
    trainer = tiny_trainer(tmp_path, max_steps=3)
    trainer.fit(model, tiny_data())
    trainer.save_checkpoint(tmp_path / "method.ckpt")
    restored, fresh = cls.load_from_checkpoint(tmp_path / "method.ckpt").state_dict(), build().state_dict()
    trained = model.state_dict()
    assert restored.keys() == trained.keys()
    for key in trained:
        assert torch.equal(restored[key], trained[key]), key
    assert all(not torch.equal(fresh[key], trained[key]) for key in state)


class StopAt(pl.Callback):
    """What a kill after step ``step`` leaves: the run stops right after that step's checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def fit(tmp_path, build, max_steps, ckpt_path=None, every=None, accumulate=1, callbacks=()):
    pl.seed_everything(7)
    model = build()
    callbacks = list(callbacks) + ([ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=every, save_top_k=-1),
                                    StopAt(every)] if every else [])
    trainer = pl.Trainer(default_root_dir=str(tmp_path), max_steps=max_steps, logger=False, accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                         callbacks=callbacks, enable_checkpointing=bool(every), num_sanity_val_steps=0,
                         accumulate_grad_batches=accumulate)
    trainer.fit(model, tiny_data(num_train=128) if accumulate > 1 else tiny_data(), ckpt_path=ckpt_path)
    return model, trainer


@pytest.mark.parametrize("build, accumulate", [
    (tiny_moco, 1), (tiny_byol, 1), (swav_with_queue, 1), (tiny_moco, 2),
    (partial(tiny_baseline, "SimCLR"), 1), (partial(tiny_baseline, "SimSiam"), 1),
    (partial(tiny_baseline, "BarlowTwins"), 1), (partial(tiny_baseline, "VICReg"), 1),
    (partial(tiny_mocov3, optim=OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05, weight_decay_end=0.2)), 1)],
    ids=["moco", "byol", "swav", "moco-accumulate-2", "simclr", "simsiam-fixed-predictor-lr", "barlow-bias-lr",
         "vicreg", "mocov3-vit-adamw-wd-schedule"])
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, build, accumulate):
    n = 6  # 4 (8 micro-) batches per epoch: the interruption falls in the middle of epoch 2
    whole, whole_trainer = fit(tmp_path / "whole", build, 2 * n, accumulate=accumulate)
    first, _ = fit(tmp_path / "first", build, 2 * n, every=n, accumulate=accumulate)
    assert first.trainer.global_step == n
    ckpt = next((tmp_path / "first").glob("*step=6.ckpt"))
    resumed, resumed_trainer = fit(tmp_path / "second", build, 2 * n, ckpt_path=str(ckpt), accumulate=accumulate)
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    opt_a = whole_trainer.optimizers[0].state_dict()["state"]
    opt_b = resumed_trainer.optimizers[0].state_dict()["state"]
    for index in opt_a:
        for name, value in opt_a[index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b[index][name])), (index, name)
    assert whole_trainer.lr_scheduler_configs[0].scheduler.state_dict() == \
        resumed_trainer.lr_scheduler_configs[0].scheduler.state_dict()
    assert whole_trainer.global_step == resumed_trainer.global_step == 2 * n


class RecordCropBoxes(pl.Callback):
    """The crop boxes of every training batch, as the crop stage hands them back."""

    def on_fit_start(self, trainer, module):
        self.draws = record_draws(module.augment.views[0].stages[0])

    @property
    def boxes(self):
        return [draw["boxes"] for draw in self.draws]


def test_micro_batches_of_one_step_draw_their_own_augmentation(tmp_path):
    """Under gradient accumulation every micro-batch draws its own crops and colours (the
    generator is seeded by run seed, step, micro-batch and rank): the crop boxes of the two
    micro-batches of a step differ, and those of a step repeat in a rerun."""
    runs = []
    for name in ("a", "b"):
        recorder = RecordCropBoxes()
        fit(tmp_path / name, tiny_moco, max_steps=2, accumulate=2, callbacks=[recorder])
        runs.append(recorder.boxes)
    first, second = runs[0][:2]  # the two micro-batches of step 0 (same image sizes: 32 x 32)
    assert not torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(*runs))
