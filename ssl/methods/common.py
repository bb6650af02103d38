"""Small helpers every method composes: schedules from the trainer, the kNN monitor,
loss sanity. Functions, not a base class, so each method reads top to bottom."""
from __future__ import annotations

import dataclasses
import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from sslkit.data.base import seed_from_environment
from sslkit.nn import distributed

from .optim import OptimConfig, build_optimizer, lr_at, scaled_lr
from .speed import SpeedConfig, apply_speed, to_memory_format


def config(value, cls, default):
    """A configuration argument: an instance of ``cls``, its fields as a dict (how
    checkpoints store it), or ``None`` for ``default``."""
    if value is None:
        return default
    return cls(**value) if isinstance(value, dict) else value


def global_batch_size(module: pl.LightningModule) -> int:
    """Images per optimiser step over all ranks (data batch x world size x accumulation)."""
    trainer = module.trainer
    datamodule = getattr(trainer, "datamodule", None)
    batch = getattr(datamodule, "batch_size", None)
    if batch is None:
        rank_zero_warn("no datamodule.batch_size: the learning rate is not scaled by batch size")
        return 0
    return batch * trainer.world_size * trainer.accumulate_grad_batches


def configure_optimization(module: pl.LightningModule, params: nn.Module, config: OptimConfig) -> dict:
    """Optimiser at the batch-scaled peak rate and its warm-up + cosine schedule (``lr_at``),
    stepped every optimiser step or every epoch as the recipe says."""
    batch = global_batch_size(module) or config.reference_batch_size
    optimizer = build_optimizer(params, config, batch)
    peak = scaled_lr(config, batch)
    if peak <= 0:
        raise ValueError(f"optim.lr must be positive, got {config.lr}")
    trainer = module.trainer
    if config.schedule_interval == "epoch":
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            raise ValueError("optim.schedule_interval: epoch needs trainer.max_epochs; set it, or use 'step'")
        total, warmup = int(trainer.max_epochs), int(round(config.warmup_epochs))
    else:
        total = int(trainer.estimated_stepping_batches)
        warmup = int(round(config.warmup_epochs * steps_per_epoch(trainer)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(
        step, total, warmup, peak, config.warmup_start_lr, config.final_lr, config.warmup_ends_at_peak) / peak)
    return {"optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": config.schedule_interval}}


def steps_per_epoch(trainer: pl.Trainer) -> int:
    """Optimiser steps in one epoch (loads the train loader if the trainer has not yet)."""
    if trainer.train_dataloader is None:
        trainer.fit_loop.setup_data()
    batches = trainer.num_training_batches
    if batches == float("inf"):
        raise ValueError("warm-up in epochs needs a train loader of known length")
    return max(1, math.ceil(batches / trainer.accumulate_grad_batches))


def augment_on_device(module: pl.LightningModule, batch: dict) -> dict:
    """``on_after_batch_transfer``: training views while fitting, else the evaluation view."""
    if "image" not in batch:  # every image of this batch was unreadable (bad_images: skip)
        return batch
    speed = getattr(module, "speed", None) or SpeedConfig()
    with torch.no_grad():
        if module.trainer is not None and module.trainer.training:
            seed_step(module)
            batch["views"] = to_memory_format(module.augment(batch), speed)
        else:
            batch["eval_image"] = to_memory_format([{"image": module.augment.evaluate(batch)}], speed)[0]["image"]
    return batch


def seed_step(module: pl.LightningModule) -> None:
    """The random draws of a training batch (augmentation, key shuffles) come from the global
    generator reseeded with (run seed, optimiser step, micro-batch of that step, rank): every
    micro-batch of an accumulated step draws its own crops and colours, and an interrupted run
    resumes with the randomness it would have had, whatever ran in between."""
    trainer = module.trainer
    micro = trainer.fit_loop.epoch_loop.batch_progress.current.ready % max(1, trainer.accumulate_grad_batches)
    key = ((seed_from_environment() * 1_000_003 + module.global_step) * 1_009 + micro) * 1_013 + distributed.rank()
    torch.manual_seed(key % (2 ** 63))


def check_canvas(module: pl.LightningModule, datamodule) -> None:
    """Fit the recipe to the data: crops no larger than a fixed-size canvas, and the data's
    normalisation statistics wherever the recipe names none."""
    canvas = getattr(datamodule, "image_size", None)
    if canvas is not None and not getattr(datamodule, "whole_images", False):
        module.augment.check_canvas(canvas)
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if mean is not None and std is not None:
        module.augment.use_statistics(mean, std)


def reject_swap_negative(augment: nn.Module, method: str) -> None:
    """Methods without negatives take BG_Swaps' positive part only."""
    swap = getattr(augment, "background_swap", None)
    if swap is not None and swap.hard_negative:
        raise ValueError(
            f"{method} has no negatives to append the BG_Swaps hard negative to: set "
            f"model.augment.init_args.background_swap.init_args.hard_negative: false"
        )


def embedding_spread(embeddings: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of L2-normalised embeddings over the batch, times sqrt(dim):
    about 1 for embeddings spread over the sphere, near 0 when they collapse to a point."""
    z = F.normalize(embeddings.detach().float(), dim=1)
    return z.std(0).mean() * z.shape[1] ** 0.5


def check_finite(loss: torch.Tensor, module: pl.LightningModule) -> bool:
    """True if ``loss`` is finite. Otherwise raise, naming the step, unless a
    ``NumericalGuard`` with ``on_fault: rollback`` watches the run (then False: the step
    is skipped and the guard restores the last good state)."""
    if torch.isfinite(loss):
        return True
    if getattr(module, "_fault_policy", "stop") == "rollback":
        module._fault = f"non-finite loss ({loss.item()}) at global step {module.global_step}"
        return False
    raise FloatingPointError(
        f"non-finite loss ({loss.item()}) at global step {module.global_step}, epoch "
        f"{module.current_epoch}: lower the learning rate, or check the data and precision; "
        f"checkpoints written before this step are intact"
    )


def knn_validation_step(module: pl.LightningModule, batch: dict, dataloader_idx: int) -> None:
    """Feed backbone features of the evaluation view to ``module.knn``.

    Loader 0 is the bank (train split, no augmentation), loader 1 the queries (val split).
    """
    if "label" not in batch:
        return
    features = module.backbone(batch["eval_image"])
    module.knn.update(features, batch["label"], bank=dataloader_idx == 0)


def log_knn(module: pl.LightningModule, name: str = "val/knn_top1") -> None:
    """Log the kNN accuracy of the epoch (validation or test) when both bank and query
    features arrived; a split without labels leaves nothing to log."""
    knn = module.knn
    try:
        if knn.update_count > 0:
            module.log(name, knn.compute(), prog_bar=True)
    except RuntimeError:
        pass
    finally:
        knn.reset()


def count_data_issues(module: pl.LightningModule, batch: dict) -> None:
    """Images trained on with a full-foreground stand-in mask (``missing_mask: foreground``),
    and images left out of their batch as unreadable (``bad_images: skip``)."""
    missing = batch.get("mask_missing")
    if missing is not None:
        module._missing_masks = getattr(module, "_missing_masks", 0) + int(missing.sum())
    skipped = batch.get("skipped")
    if skipped:
        module._skipped_images = getattr(module, "_skipped_images", []) + list(skipped)


def report_data_issues(module: pl.LightningModule) -> None:
    """Log the epoch's counts over all ranks as ``data/missing_masks`` and
    ``data/skipped_images``, and warn when they are not zero."""
    if hasattr(module, "_skipped_images"):
        skipped = module._skipped_images
        total = int(distributed.all_reduce_sum(torch.tensor(float(len(skipped)), device=module.device)))
        module._skipped_images = []
        module.log("data/skipped_images", float(total))
        if total:
            rank_zero_warn(f"epoch {module.current_epoch}: {total} unreadable training images skipped "
                           f"(data.bad_images: skip); first: {skipped[:3]}")
    if not hasattr(module, "_missing_masks"):
        return
    total = int(distributed.all_reduce_sum(torch.tensor(float(module._missing_masks), device=module.device)))
    module._missing_masks = 0
    module.log("data/missing_masks", float(total))
    if total:
        rank_zero_warn(
            f"epoch {module.current_epoch}: {total} training images had no mask file and were "
            f"used without background augmentation (data.missing_mask: foreground)"
        )


class SSLHooks:
    """The Lightning hooks every method shares, and nothing else: augment on the device,
    log a finite loss, feed the kNN monitor, run the method's ``check_data`` before fit.

    A method provides ``step(views, labels) -> (loss, stats)`` (labels, when the data has
    them, serve diagnostics only), ``augment``, ``knn`` and
    ``check_data(datamodule, world_size)``.
    """

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        data = self.trainer.datamodule if self.trainer is not None else None
        if hasattr(data, "decode"):  # JPEGs the workers left encoded, decoded on this device
            batch = data.decode(batch)
        return augment_on_device(self, batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        count_data_issues(self, batch)
        if "views" not in batch:
            return None
        loss, stats = self.step(batch["views"], labels=batch.get("label"))
        if not check_finite(loss, self):
            return None
        self.log_dict({"train/loss": loss, **stats})
        self.log("loss", loss, prog_bar=True, logger=False)
        return loss

    def on_train_epoch_end(self) -> None:
        report_data_issues(self)

    def setup(self, stage: str) -> None:
        if self.trainer is not None and self.trainer.datamodule is not None:
            self.check_data(self.trainer.datamodule, self.trainer.world_size)
        if not getattr(self, "_speed_applied", False):
            apply_speed(self, getattr(self, "speed", None) or SpeedConfig())
            self._speed_applied = True

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        knn_validation_step(self, batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        log_knn(self)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        knn_validation_step(self, batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        log_knn(self)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the method, so tools can rebuild it from the checkpoint alone, and keep
        its hyper-parameters plain data (configuration dataclasses as dicts, which every
        constructor takes back): any process reads them without unpickling sslkit classes."""
        checkpoint["sslkit_class_path"] = f"{type(self).__module__}.{type(self).__qualname__}"
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict):
            checkpoint["hyper_parameters"] = {
                k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
                for k, v in hparams.items()}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of normalised images."""
        return self.backbone(images)
