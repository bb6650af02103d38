"""The online linear classifier: trained on the step's detached backbone features, it changes
nothing of the method's training, ignores unlabelled samples, has its own optimiser group,
counts right under DDP and lives in checkpoints but not in exported backbones."""
import pytest
import torch
import torch.nn.functional as F

from ddp import run_distributed
from helpers import invoke, tiny_byol, tiny_data, tiny_moco, tiny_trainer
from sslkit.eval.online import OnlineClassifier
from sslkit.methods import OnlineClassifierConfig


def trained(build, tmp_path, online, steps=4, **trainer_kwargs):
    torch.manual_seed(0)
    model = build(online_classifier=online)
    trainer = tiny_trainer(tmp_path, max_steps=steps, limit_val_batches=0, **trainer_kwargs)
    trainer.fit(model, tiny_data())
    return model, trainer


@pytest.mark.parametrize("build", [tiny_moco, tiny_byol], ids=["moco-sgd", "byol-lars"])
def test_backbone_and_projector_are_bit_identical_with_and_without_it(tmp_path, build):
    without, _ = trained(build, tmp_path / "a", None)
    with_it, trainer = trained(build, tmp_path / "b", OnlineClassifierConfig(lr=0.5, weight_decay=1e-3))
    assert with_it.online_classifier is not None and trainer.callback_metrics["train/online_loss"] > 0
    for name in ("backbone", "projector"):
        a, b = getattr(without, name).state_dict(), getattr(with_it, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert not torch.equal(with_it.online_classifier.linear.weight,
                           OnlineClassifier(with_it.backbone.dim, 4).linear.weight)  # and it did train


def test_its_group_is_not_scaled_and_not_adapted_by_lars(tmp_path):
    online = OnlineClassifierConfig(lr=0.37, weight_decay=0.01, schedule="constant")
    model, trainer = trained(tiny_byol, tmp_path, online, steps=1)
    group = trainer.optimizers[0].param_groups[-1]
    assert [p for p in group["params"]] == list(model.online_classifier.parameters())
    assert group["lr"] == pytest.approx(0.37) and group["weight_decay"] == 0.01  # batch 16: not x 16/256
    assert group["adapt"] is False and not group["exclude"]
    assert trainer.optimizers[0].param_groups[0]["lr"] != pytest.approx(0.37)


def test_a_lars_step_of_the_classifier_is_momentum_sgd_with_its_weight_decay():
    from sslkit.methods.lars import LARS

    w = torch.nn.Parameter(torch.randn(3, 4))
    w.grad = torch.randn(3, 4)
    expected = w.detach() - 0.5 * (w.grad + 0.1 * w.detach())  # first step: buffer = update
    LARS([{"params": [w], "lr": 0.5, "weight_decay": 0.1, "adapt": False}], lr=1.0, trust_coefficient=0.001).step()
    assert torch.allclose(w.detach(), expected)


def test_unlabelled_samples_are_ignored():
    torch.manual_seed(0)
    classifier = OnlineClassifier(6, 3, standardize=False)
    features, labels = torch.randn(8, 6), torch.tensor([0, -1, 2, 1, -1, -1, 2, 0])
    known = labels >= 0
    expected = F.cross_entropy(classifier.linear(features[known]), labels[known])
    assert torch.allclose(classifier.loss(features, labels), expected)
    assert int(classifier.train_top1.update_count) == 1 and classifier.loss(features, torch.full((8,), -1)) is None
    classifier.evaluate(features, torch.full((8,), -1))
    assert int(classifier.val_top1.update_count) == 0


def test_features_are_standardised_by_running_statistics_of_every_sample():
    """The first batch sets mean and variance (all samples, labelled or not), later ones move
    them by the momentum; the linear layer sees standardised features."""
    from sslkit.eval.online import RunningStandardize

    torch.manual_seed(0)
    a, b = torch.randn(32, 5) * 3 + 2, torch.randn(16, 5) + 1
    classifier = OnlineClassifier(5, 3)
    classifier.loss(a, torch.full((32,), -1))
    norm = classifier.standardize
    assert torch.allclose(norm.mean, a.mean(0), atol=1e-5) and torch.allclose(norm.var, a.var(0, unbiased=False), atol=1e-4)
    classifier.loss(b, torch.zeros(16, dtype=torch.long))
    assert torch.allclose(norm.mean, 0.99 * a.mean(0) + 0.01 * b.mean(0), atol=1e-5)
    expected = classifier.linear((b - norm.mean) / (norm.var + 1e-5).sqrt())
    assert torch.allclose(classifier(b), expected, atol=1e-6) and isinstance(norm, RunningStandardize)


def _standardize_on_rank(rank, world_size, features):
    from sslkit.eval.online import RunningStandardize

    norm = RunningStandardize(features.shape[1])
    norm.update(features.chunk(world_size)[rank])
    return norm.mean, norm.var


def test_running_statistics_under_ddp_equal_one_process():
    features = torch.randn(24, 4) * 2 + 1
    single = _standardize_on_rank(0, 1, features)
    for mean, var in run_distributed(_standardize_on_rank, 2, features):
        assert torch.allclose(mean, single[0], atol=1e-6) and torch.allclose(var, single[1], atol=1e-5)


def test_no_gradient_reaches_the_features():
    features = torch.randn(4, 6, requires_grad=True)
    OnlineClassifier(6, 3).loss(features, torch.tensor([0, 1, 2, 1])).backward()
    assert features.grad is None


def _accuracy_on_rank(rank, world_size, logits, labels):
    classifier = OnlineClassifier(logits.shape[1], logits.shape[1])
    classifier.linear.weight.data.copy_(torch.eye(logits.shape[1]))
    classifier.linear.bias.data.zero_()
    part = torch.arange(len(labels)).chunk(world_size)[rank]
    classifier.evaluate(logits[part], labels[part])
    return float(classifier.val_top1.compute()), float(classifier.val_top5.compute())


def test_val_accuracy_under_ddp_equals_one_process():
    torch.manual_seed(0)
    logits, labels = torch.randn(40, 6), torch.randint(0, 6, (40,))
    labels[::7] = -1
    single = _accuracy_on_rank(0, 1, logits, labels)
    known = labels >= 0
    assert single[0] == pytest.approx(float((logits[known].argmax(1) == labels[known]).float().mean()))
    assert all(r == pytest.approx(single) for r in run_distributed(_accuracy_on_rank, 2, logits, labels))


def test_it_is_in_checkpoints_never_in_exported_backbones(tmp_path):
    from sslkit.checkpoints import export_backbone
    from sslkit.methods import MoCoV2

    model, trainer = trained(tiny_moco, tmp_path, OnlineClassifierConfig(), steps=2)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    restored = MoCoV2.load_from_checkpoint(tmp_path / "m.ckpt")
    assert torch.equal(restored.online_classifier.linear.weight, model.online_classifier.linear.weight)
    export_backbone(tmp_path / "m.ckpt", tmp_path / "b.pth", "timm")
    assert not any("online" in key or "linear" in key for key in torch.load(tmp_path / "b.pth", weights_only=True))


def test_a_0_2_run_resumes_with_the_classifier_switched_on(tmp_path, capfd, monkeypatch):
    from conftest import REPO

    old = f"{REPO}/tests/data/v0.2"
    with pytest.warns(UserWarning, match="no online classifier: this run's starts fresh"):
        code, out, err = invoke(["fit", "-c", f"{old}/mocov2.config.yaml", "--ckpt_path", f"{old}/mocov2.ckpt",
                                 "--model.init_args.online_classifier={lr: 0.1}", "--trainer.max_epochs=2",
                                 "--trainer.enable_progress_bar=false"], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    assert "finished 4 steps, 2 epochs" in out + err
    metrics = next((tmp_path / "runs").rglob("metrics.csv")).read_text()
    assert "val/online_top1" in metrics


# ---------------------------------------------------------------- views: bank
def objective_gradient(weight, bias, x, y, l2):
    """Gradient of ``mean CE(x W^T + b, y) + (l2 / 2) ||W||^2``, written out by hand:
    ``(softmax - onehot)^T x / N + l2 W`` and the column mean of ``softmax - onehot``."""
    scores = x @ weight.T + bias
    p = (scores - scores.max(1, keepdim=True).values).exp()
    p = p / p.sum(1, keepdim=True)
    residual = p - F.one_hot(y, weight.shape[0]).to(p)
    return residual.T @ x / len(x) + l2 * weight, residual.mean(0)


def fitted_standardisation(classifier, x):
    return (x - classifier.standardize.mean) / (classifier.standardize.var + classifier.standardize.eps).sqrt()


def test_a_bank_fit_is_the_optimum_of_the_probe_objective_on_the_labelled_bank():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (90,))
    features = torch.randn(90, 6) * torch.tensor([1.0, 3, 0.5, 2, 1, 4]) + labels[:, None].float() + 5
    labels[::9] = -1
    classifier = OnlineClassifier(6, 3)
    classifier.collect(features[:50], labels[:50])
    classifier.collect(features[50:], labels[50:])
    classifier.fit_bank(l2=1e-2, max_iter=300)
    known = labels >= 0
    x, y = features[known], labels[known]
    mean = sum(x) / len(x)
    assert torch.allclose(classifier.standardize.mean, mean, atol=1e-5)
    assert torch.allclose(classifier.standardize.var, sum((r - mean) ** 2 for r in x) / len(x), atol=1e-4)
    grad_w, grad_b = objective_gradient(classifier.linear.weight, classifier.linear.bias,
                                        fitted_standardisation(classifier, x), y, 1e-2)
    assert grad_w.abs().max() < 1e-4 and grad_b.abs().max() < 1e-4
    accuracy = (classifier(x).argmax(1) == y).float().mean()
    assert float(classifier.train_top1.compute()) == pytest.approx(float(accuracy))
    before = classifier.linear.weight.clone()
    classifier.fit_bank(l2=1e-2, max_iter=300)  # the bank was used up: nothing to refit on
    assert torch.equal(classifier.linear.weight, before)


def _bank_fit_on_rank(rank, world_size, features, labels):
    classifier = OnlineClassifier(features.shape[1], 3)
    part = torch.arange(len(labels)).chunk(world_size)[rank]
    classifier.collect(features[part], labels[part])
    classifier.fit_bank(l2=1e-2, max_iter=200)
    return classifier.linear.weight, classifier.standardize.mean, float(classifier.train_top1.compute())


def test_a_bank_fit_under_ddp_equals_one_process_and_every_rank_holds_the_same():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (41,))  # uneven parts: 21 and 20
    features = torch.randn(41, 5) + labels[:, None].float()
    single = _bank_fit_on_rank(0, 1, features, labels)
    ranks = run_distributed(_bank_fit_on_rank, 2, features, labels)
    assert torch.equal(ranks[0][0], ranks[1][0]) and torch.equal(ranks[0][1], ranks[1][1])
    assert torch.allclose(ranks[0][0], single[0], rtol=0, atol=2e-3)  # L-BFGS to its tolerance on other threads
    assert torch.allclose(ranks[0][1], single[1], atol=1e-6)
    assert ranks[0][2] == pytest.approx(single[2])


def test_a_bank_classifier_in_a_run_is_the_fit_on_the_clean_bank_and_leaves_training_alone(tmp_path):
    """In a run, the classifier after a validation is the optimum on the kNN bank's features
    (train split, evaluation view, eval mode), and ``val/online_top1`` is its accuracy on the
    val split's; the backbone and projector are bit-identical to a run without it, and the
    sanity check's partial bank fits nothing."""
    from sslkit.eval.features import extract_features

    online = OnlineClassifierConfig(views="bank", weight_decay=1e-2, max_iter=500)
    runs = {}
    for name, config in (("without", None), ("with", online)):
        torch.manual_seed(0)
        model, data = tiny_moco(online_classifier=config), tiny_data()
        trainer = tiny_trainer(tmp_path / name, max_steps=-1, max_epochs=1, limit_val_batches=None,
                               num_sanity_val_steps=2)
        trainer.fit(model, data)
        runs[name] = model, trainer, data
    for part in ("backbone", "projector"):
        a, b = (getattr(runs[n][0], part).state_dict() for n in ("without", "with"))
        assert all(torch.equal(a[k], b[k]) for k in a), part
    model, trainer, data = runs["with"]
    assert trainer.optimizers[0].param_groups[-1]["params"][0] is not model.online_classifier.linear.weight
    classifier = model.online_classifier
    bank = extract_features(model.backbone, data.eval_loader(data.knn_bank()), model.augment.evaluate,
                            progress=False, prepare=data.prepare)
    val = extract_features(model.backbone, data.eval_loader(data.eval_split("val")), model.augment.evaluate,
                           progress=False, prepare=data.prepare)
    assert torch.allclose(classifier.standardize.mean, bank[0].mean(0), atol=1e-4)
    grad_w, grad_b = objective_gradient(classifier.linear.weight, classifier.linear.bias,
                                        fitted_standardisation(classifier, bank[0]), bank[1], 1e-2)
    assert grad_w.abs().max() < 1e-3 and grad_b.abs().max() < 1e-3
    accuracy = float((classifier(val[0]).argmax(1) == val[1]).float().mean())
    assert float(trainer.callback_metrics["val/online_top1"]) == pytest.approx(accuracy)
    assert "train/online_top1" in trainer.callback_metrics and "train/online_loss" not in trainer.callback_metrics


def test_a_bank_classifier_is_not_fitted_on_the_sanity_check(tmp_path):
    torch.manual_seed(0)
    model = tiny_moco(online_classifier=OnlineClassifierConfig(views="bank"))
    trainer = tiny_trainer(tmp_path, max_steps=-1, max_epochs=1, limit_train_batches=1, num_sanity_val_steps=2,
                           check_val_every_n_epoch=2)
    data = tiny_data()
    trainer.fit(model, data)
    fresh = OnlineClassifier(model.backbone.dim, 4)
    assert torch.equal(model.online_classifier.standardize.var, fresh.standardize.var)  # never fitted: still ones
    assert int(model.online_classifier.standardize.batches) == 0


@pytest.mark.parametrize("before,after", [("global", "bank"), ("bank", "global")])
def test_a_run_resumes_with_the_classifier_switched_between_bank_and_step(tmp_path, before, after):
    torch.manual_seed(0)
    model = tiny_moco(online_classifier=OnlineClassifierConfig(views=before))
    trainer = tiny_trainer(tmp_path, max_steps=2)
    trainer.fit(model, tiny_data())
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    resumed = tiny_moco(online_classifier=OnlineClassifierConfig(views=after))
    trainer = tiny_trainer(tmp_path, max_steps=3)
    trainer.fit(resumed, tiny_data(), ckpt_path=tmp_path / "a.ckpt")
    groups = trainer.optimizers[0].param_groups
    classifier = list(resumed.online_classifier.parameters())
    assert trainer.global_step == 3
    assert (groups[-1]["params"] == classifier) == (after == "global")
    assert not any(p is c for g in groups[:-1] for p in g["params"] for c in classifier)
