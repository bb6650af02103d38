"""What sslkit reads of Lightning that Lightning exposes only inside its loops, in one place:
two batch counters, and the number of training batches before the loop loads its data. ``tests/test_lightning_adapter.py`` pins the Lightning versions they were
checked against and checks their meaning on a run, so an upgrade that moves them fails
there first."""
from __future__ import annotations

import pytorch_lightning as pl

CHECKED_VERSIONS = ("2.5", "2.6")


def batches_started(trainer: pl.Trainer) -> int:
    """Training batches fetched so far in the current epoch (the one in flight included)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.ready


def batches_done(trainer: pl.Trainer) -> int:
    """Training batches fully processed so far in the current epoch."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def training_batches(trainer: pl.Trainer) -> int | float:
    """Training batches per epoch (after ``limit_train_batches``), loading the train loader
    first when the fit loop has not yet (from ``configure_optimizers``); ``inf`` for a loader
    without a length."""
    if trainer.train_dataloader is None:
        trainer.fit_loop.setup_data()
    return trainer.num_training_batches
