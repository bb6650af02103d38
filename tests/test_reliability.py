"""Fault injection: a kill while saving, SIGTERM during fit, `--ckpt_path last`."""
import os
import signal
import subprocess
import sys
import time

import pytest
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
