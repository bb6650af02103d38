"""Fault injection: a kill while saving, SIGTERM during fit, `--ckpt_path last`."""
import os
import signal
import subprocess
import sys
import time

import pytest
import pytorch_lightning as pl
import torch

from conftest import REPO
from sslkit.reliability import AtomicCheckpointIO

SSLKIT = [sys.executable, "-m", "sslkit.cli"]


def test_a_kill_while_saving_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(torch.load(path, weights_only=True)["step"]) == 1


def test_sigterm_during_fit_writes_a_checkpoint_and_last_resumes(tmp_path):
    args = ["fit", "-c", os.path.join(REPO, "configs/demo.yaml"), "--trainer.max_epochs=100",
            "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
            "--data.init_args.num_train=128", "--data.init_args.num_val=32", "--data.init_args.batch_size=32",
            "--model.init_args.queue_size=256", "--trainer.check_val_every_n_epoch=50"]
    process = subprocess.Popen(SSLKIT + args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "runs").rglob("metrics.csv")):
        time.sleep(0.5)
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output[-3000:]
    assert "SIGTERM received; wrote" in output
    last = next((tmp_path / "runs").rglob("last.ckpt"))
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert 0 < checkpoint["global_step"] < 400 and "queue.keys" in checkpoint["state_dict"]
    assert not list((tmp_path / "runs").rglob("*.partial"))
    resumed = subprocess.run(SSLKIT + args[:-1] + ["--trainer.max_epochs=" + str(checkpoint["epoch"] + 2),
                                                   "--ckpt_path=last"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from runs/demo/version_0/checkpoints/last.ckpt" in resumed.stdout + resumed.stderr
    assert "Restored all states" in resumed.stdout + resumed.stderr


def poisoned(model, at_steps):
    """``model`` whose loss is NaN at the given global steps (a fault injected from outside)."""
    step = model.step

    def faulty(views, labels=None):
        loss, stats = step(views, labels)
        if model.global_step in at_steps:
            loss = loss * float("nan")
        return loss, stats

    model.step = faulty
    return model


def test_nan_loss_stops_with_the_step_named_and_keeps_earlier_checkpoints(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from helpers import tiny_data, tiny_moco, tiny_trainer
    from sslkit.reliability import NumericalGuard

    model = poisoned(tiny_moco(), {3})
    trainer = tiny_trainer(tmp_path, max_steps=6, enable_checkpointing=True,
                           callbacks=[NumericalGuard(), ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1,
                                                                        save_top_k=-1)])
    with pytest.raises(FloatingPointError, match="non-finite loss .* at global step 3"):
        trainer.fit(model, tiny_data())
    saved = sorted(p.name for p in tmp_path.glob("*.ckpt"))
    assert saved == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "epoch=0-step=3.ckpt"]
    state = torch.load(tmp_path / "epoch=0-step=3.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


class StateAt(pl.Callback):
    """The module's state (weights, queue, momentum encoder) and the optimiser's momentum
    buffers after every step before the guard's first rollback, and right after it."""

    def __init__(self, guard):
        self.guard, self.states = guard, {}

    def on_train_batch_end(self, trainer, module, *args):
        state = ({k: v.clone() for k, v in module.state_dict().items()},
                 [b.clone() for g in trainer.optimizers[0].param_groups for p in g["params"]
                  if (b := trainer.optimizers[0].state.get(p, {}).get("momentum_buffer")) is not None])
        if self.guard.rollbacks == 1 and "rolled back" not in self.states:
            self.states["rolled back"] = state
        elif self.guard.rollbacks == 0:
            self.states[trainer.global_step] = state


def test_rollback_restores_the_last_good_state_and_goes_on(tmp_path):
    from helpers import tiny_data, tiny_moco, tiny_trainer
    from sslkit.reliability import NumericalGuard

    guard = NumericalGuard(on_fault="rollback", snapshot_every=2)
    model = poisoned(tiny_moco(), {3})
    recorder = StateAt(guard)
    trainer = tiny_trainer(tmp_path, max_steps=5, callbacks=[guard, recorder])
    trainer.fit(model, tiny_data())
    assert guard.rollbacks == 1 and trainer.global_step == 5
    (snapshot, snapshot_buffers), (restored, restored_buffers) = recorder.states[2], recorder.states["rolled back"]
    before_fault = recorder.states[3][0]
    assert not torch.equal(before_fault["queue.keys"], snapshot["queue.keys"])  # step 3 moved the state on
    for key in snapshot:  # weights, momentum encoder, queue keys and pointer: back to step 2
        assert torch.equal(restored[key], snapshot[key]), key
    assert len(snapshot_buffers) > 0 and all(torch.equal(a, b) for a, b in zip(restored_buffers, snapshot_buffers))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(FloatingPointError, match="gave up after 1 rollbacks"):
        tiny_trainer(tmp_path, max_steps=6, callbacks=[NumericalGuard("rollback", max_rollbacks=1)]).fit(
            poisoned(tiny_moco(), {2, 3, 4}), tiny_data())


def test_collapse_is_detected(tmp_path):
    from helpers import tiny_data, tiny_moco, tiny_trainer
    from sslkit.reliability import NumericalGuard

    model = tiny_moco()
    step = model.step
    model.step = lambda views, labels=None: (lambda out: (out[0], {**out[1], "train/embedding_spread": torch.tensor(0.001)}))(step(views, labels))
    with pytest.raises(FloatingPointError, match="representation collapse"):
        tiny_trainer(tmp_path, max_steps=6, callbacks=[NumericalGuard(collapse_patience=3)]).fit(model, tiny_data())


def test_deterministic_mode_makes_two_runs_bit_identical(tmp_path):
    import pytorch_lightning as pl

    from helpers import tiny_data, tiny_moco, tiny_trainer

    states = []
    for run in range(2):
        pl.seed_everything(3)
        model = tiny_moco()
        tiny_trainer(tmp_path / str(run), max_steps=4, deterministic=True).fit(model, tiny_data())
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
