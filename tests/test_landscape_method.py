"""The loss landscape of a method's own objective: the closures sslkit builds from a method
agree with a hand-written closure of the same loss, leave the method as they found it, and run
as a monitor during training (changing nothing of it) and as ``sslkit landscape``."""
import json
import os

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from conftest import REPO
from helpers import invoke, tiny_data, tiny_moco, tiny_swav, tiny_trainer
from sslkit.checkpoints import file_digest
from sslkit.eval import LandscapeMonitor
from sslkit.eval.landscape import hessian_trace, top_eigenvalues
from sslkit.eval.objectives import measure_landscape, method_closures, trained_blocks


def batches(count=2, size=16):
    data = tiny_data(batch_size=size)
    data.setup("fit")
    loader = iter(data.eval_loader(data.eval_split("train")))
    return [next(loader) for _ in range(count)]


def test_a_methods_landscape_is_that_of_its_loss_written_by_hand():
    """MoCo v2's InfoNCE against the queue as it stands, with the views each batch's seed draws:
    the same top eigenvalue and the same trace (same probes) as sslkit's closures."""
    torch.manual_seed(0)
    model = tiny_moco(batchnorm="plain").train()
    data = batches()
    queue = model.queue.keys.clone()

    def by_hand(index, batch):
        def loss():
            torch.manual_seed(index)  # method_closures' seed for batch `index` with seed 0
            with torch.no_grad():
                views = model.augment(batch)
                keys = F.normalize(model.momentum_projector(model.momentum_backbone(views[1]["image"])), dim=1)
            query = F.normalize(model.projector(model.backbone(views[0]["image"])), dim=1)
            logits = torch.cat([(query * keys).sum(1, keepdim=True), query @ queue.T], 1) / model.temperature
            return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long))
        return loss

    params = [p for group in trained_blocks(model).values() for p in group]
    ours, theirs = method_closures(model, data), [by_hand(i, b) for i, b in enumerate(data)]
    top = [top_eigenvalues(c, params, k=2, tol=1e-6, model=model).eigenvalues for c in (ours, theirs)]
    assert torch.allclose(top[0], top[1], rtol=1e-5)
    traces = [hessian_trace(c, params, samples=6, model=model).estimate for c in (ours, theirs)]
    assert traces[0] == pytest.approx(traces[1], rel=1e-5)


@pytest.mark.parametrize("build", [tiny_moco, tiny_swav], ids=["moco", "swav"])
def test_measuring_leaves_the_method_as_it_was(build):
    torch.manual_seed(0)
    model = build().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    closures = method_closures(model, batches(1))
    rng = torch.get_rng_state()
    record = measure_landscape(closures, trained_blocks(model), model, top_k=2,
                               trace_samples=4, density_probes=2, lanczos_steps=6, tol=1e-2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # queue, prototypes, BN
    assert torch.equal(rng, torch.get_rng_state()) and model.training
    assert len(record["top_eigenvalues"]) == 2 and record["top_eigenvalues"][0] >= record["top_eigenvalues"][1]
    assert record["most_negative_eigenvalue"] <= record["top_eigenvalues"][0]
    assert set(record["by_block"]) == set(trained_blocks(model))
    assert abs(torch.trapezoid(torch.tensor(record["density"]["density"]), torch.tensor(record["density"]["grid"]))
               - 1) < 1e-6


class Weights(pl.Callback):
    def on_train_end(self, trainer, module):
        self.state = {k: v.clone() for k, v in module.state_dict().items()}


def test_the_monitor_logs_the_landscape_and_changes_nothing_of_training(tmp_path):
    runs = []
    for monitor in (None, LandscapeMonitor(every_n_epochs=1, batches=1, trace_samples=4, fisher=True,
                                           fisher_batches=2, at_start=True)):
        torch.manual_seed(0)
        weights = Weights()
        trainer = tiny_trainer(tmp_path, max_steps=-1, max_epochs=2, limit_val_batches=0,
                               callbacks=[weights] + ([monitor] if monitor else []),
                               logger=pl.loggers.CSVLogger(tmp_path, name="monitor" if monitor else "plain"))
        trainer.fit(tiny_moco(), tiny_data())
        runs.append((weights.state, trainer))
    assert all(torch.equal(runs[0][0][k], v) for k, v in runs[1][0].items())  # bit for bit
    metrics = runs[1][1].callback_metrics
    assert metrics["val/hessian_top"] > 0 and torch.isfinite(metrics["val/hessian_trace"])
    assert metrics["val/gradient_noise_top"] > 0 and metrics["val/fisher_top"] > 0
    assert metrics["val/fisher_trace"] > 0  # every Hutchinson probe of a positive semi-definite F is >= 0
    assert metrics["val/weight_norm"] > 0 and metrics["val/adaptive_hessian_top"] > 0
    assert torch.isfinite(metrics["val/adaptive_hessian_trace"])
    history = json.loads((tmp_path / "monitor" / "version_0" / "landscape.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert "backbone.model.layer1.0.bn2" in history[0]["nondifferentiable_at"]  # timm's zero-gamma init
    assert "nondifferentiable_at" not in history[-1]


def test_sslkit_landscape_writes_the_json_and_joins_the_report(tmp_path, capfd, monkeypatch):
    demo = os.path.join(REPO, "configs", "demo.yaml")
    small = ["--data.init_args.num_train=96", "--data.init_args.num_val=64", "--data.init_args.batch_size=32"]
    code, _, err = invoke(["fit", "-c", demo, *small, "--trainer.max_epochs=1", "--trainer.limit_val_batches=1",
                           "--trainer.enable_progress_bar=false", "--model.init_args.queue_size=128"],
                          tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    ckpt = next((tmp_path / "runs" / "demo").glob("version_*/checkpoints/last.ckpt"))
    code, out, err = invoke(["landscape", "-c", demo, "--ckpt_path", ckpt, "--batches", "1", "--trace_samples", "4",
                             "--density_probes", "2", "--lanczos_steps", "6", "--tol", "0.01", "--fisher", "true",
                             *small, "--model.init_args.queue_size=128"], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    record = json.loads((ckpt.parent / "landscape.json").read_text())
    assert {"top_eigenvalues", "trace", "trace_stderr", "density", "by_block", "fisher"} <= set(record)
    assert record["fisher"]["top_eigenvalues"][0] > 0 and "true Fisher: top eigenvalues" in out
    assert record["loss"] == "ssl" and record["by_block"]["projector"]["parameters"] > 0
    assert record["twice_differentiable"] and record["weight_norm"] > 0 and record["adaptive_top_eigenvalues"][0] > 0
    assert record["by_block"]["projector"]["weight_norm"] == record["weight_norms"]["projector"] > 0
    assert "adaptive Hessian T H T" in out and isinstance(record["most_negative_converged"], bool)
    assert record["ckpt_sha256"] == file_digest(ckpt) and record["ckpt_path"] == str(ckpt.resolve())
    assert (ckpt.parent / "landscape.png").stat().st_size > 0
    probe = os.path.join(REPO, "configs", "linear_probe.yaml")
    code, _, err = invoke(["report", "-c", probe, "--ckpt_path", ckpt, "--out", tmp_path / "report", *small,
                           "--l2_grid=[0.01]"], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    card = json.loads((tmp_path / "report" / "report.json").read_text())["checkpoints"][0]
    assert card["hessian_top"] == record["top_eigenvalues"][0] and card["hessian_trace"] == record["trace"]
    assert card["hessian_loss"] == "ssl" and card["landscape"]["matched_by"] == "sha256"
    assert "| Hessian top (ssl loss) |" in (tmp_path / "report" / "report.md").read_text()
    code, _, err = invoke(["landscape", "-c", demo, "--ckpt_path", tmp_path / "nope.ckpt"], tmp_path, capfd, monkeypatch)
    assert code == 2 and "nope.ckpt" in err and "Traceback" not in err
