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


COLLAPSE_THRESHOLD = 0.05
"""``train/embedding_spread`` below this counts as collapse (about 1 when spread, 0 when collapsed)."""


class NumericalGuard(pl.Callback):
    """Watches for numerical faults and representation collapse.

    A non-finite loss stops the run with the step named (``on_fault: stop``; checkpoints
    already written stay intact), or (``rollback``) skips the step and restores the model
    and optimiser from an in-memory snapshot taken every ``snapshot_every`` good steps, at
    most ``max_rollbacks`` times. Collapse: ``train/embedding_spread`` (per-dimension std
    of the normalised embeddings x sqrt(dim); about 1 when spread, 0 when collapsed) below
    ``collapse_threshold`` for ``collapse_patience`` steps warns, or stops under ``stop``.
    """

    def __init__(self, on_fault: str = "stop", snapshot_every: int = 50, max_rollbacks: int = 3,
                 collapse_threshold: float = COLLAPSE_THRESHOLD, collapse_patience: int = 20) -> None:
        if on_fault not in ("stop", "rollback"):
            raise ValueError(f"on_fault must be 'stop' or 'rollback', got '{on_fault}'")
        self.on_fault, self.snapshot_every, self.max_rollbacks = on_fault, snapshot_every, max_rollbacks
        self.collapse_threshold, self.collapse_patience = collapse_threshold, collapse_patience
        self.rollbacks, self._low = 0, 0
        self._snapshot: tuple[dict, list[dict]] | None = None
        self._fault: str | None = None

    def setup(self, trainer, module, stage: str) -> None:
        self._fault = None
        if self.on_fault == "rollback":  # the method skips a faulty step and tells us (SSLMethod.fault_handler)
            module.fault_handler = self._report

    def _report(self, message: str) -> None:
        self._fault = message

    def _take_snapshot(self, trainer, module) -> None:
        model = {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}
        optimizers = [copy_state(o.state_dict()) for o in trainer.optimizers]
        self._snapshot = (model, optimizers)

    def on_train_start(self, trainer, module) -> None:
        self._take_snapshot(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self._fault is not None:
            fault, self._fault = self._fault, None
            self._rollback(trainer, module, fault)
            return
        spread = trainer.callback_metrics.get("train/embedding_spread")
        if spread is not None and float(spread) < self.collapse_threshold:
            self._low += 1
            if self._low == self.collapse_patience:
                message = (f"representation collapse: train/embedding_spread {float(spread):.4f} < "
                           f"{self.collapse_threshold} for {self.collapse_patience} steps (step {trainer.global_step})")
                if self.on_fault == "stop":
                    raise FloatingPointError(message + "; checkpoints written before are intact")
                from pytorch_lightning.utilities import rank_zero_warn

                rank_zero_warn(message)
        else:
            self._low = 0
        if self.snapshot_every and trainer.global_step % self.snapshot_every == 0:
            self._take_snapshot(trainer, module)

    def _rollback(self, trainer, module, fault: str) -> None:
        self.rollbacks += 1
        if self.rollbacks > self.max_rollbacks or self._snapshot is None:
            raise FloatingPointError(f"{fault}: gave up after {self.max_rollbacks} rollbacks")
        model, optimizers = self._snapshot
        module.load_state_dict(model)
        for optimizer, state in zip(trainer.optimizers, optimizers):
            optimizer.load_state_dict(copy_state(state))
        rank_zero_info(f"sslkit: {fault}; rolled back to the snapshot (rollback {self.rollbacks} of "
                       f"{self.max_rollbacks})")


def copy_state(state):
    """A deep copy of an optimiser state_dict (tensors cloned)."""
    if torch.is_tensor(state):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: copy_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [copy_state(v) for v in state]
    return state
