"""What keeps a week-long pretraining run safe: checkpoints written atomically, a
checkpoint on SIGTERM/SIGINT (a scheduler's preemption notice, or Ctrl-C) before the
run stops, and ``--ckpt_path last`` that finds the newest ``last.ckpt`` of earlier runs.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_info


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes ``path.partial``, flushes it to disk, then renames it over ``path``: a
    process killed while saving leaves the previous checkpoint intact, never half a file."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)


class PreemptionCheckpoint(pl.Callback):
    """On SIGTERM or SIGINT, finish the current step, write ``last.ckpt`` and stop. A
    second SIGINT interrupts at once. Under DDP a signal on any rank stops all of them."""

    def __init__(self, signals: tuple[str, ...] = ("SIGTERM", "SIGINT")) -> None:
        self.signals = signals
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.received = None
        for name in self.signals:
            number = getattr(signal, name)
            self._previous[number] = signal.getsignal(number)
            signal.signal(number, self._handler)

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx) -> None:
        stop = trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)
        if not stop:
            return
        path = checkpoint_dir(trainer) / "last.ckpt"
        trainer.save_checkpoint(path)
        trainer.should_stop = True
        rank_zero_info(f"sslkit: {self.received or 'a signal on another rank'} received; wrote {path} at step "
                       f"{trainer.global_step} and stopped. Resume with --ckpt_path last")

    def on_train_end(self, trainer, module) -> None:
        self._restore()

    def on_exception(self, trainer, module, exception) -> None:
        self._restore()


def checkpoint_dir(trainer: pl.Trainer) -> Path:
    callback = trainer.checkpoint_callback
    if callback is not None and callback.dirpath:
        return Path(callback.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"


def find_last_checkpoint(trainer: pl.Trainer) -> Path | None:
    """The newest ``last.ckpt`` of this logger's earlier versions (or under the root)."""
    logger = trainer.logger
    roots = []
    if logger is not None and getattr(logger, "save_dir", None):
        roots.append(Path(logger.save_dir) / (logger.name or ""))
    roots.append(Path(trainer.default_root_dir))
    found = [p for root in roots if root.exists() for p in root.rglob("last.ckpt")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
