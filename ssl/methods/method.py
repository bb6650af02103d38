"""What every sslkit method is, and the Lightning hooks that run it.

A method is a ``LightningModule`` that builds, in its constructor:

    backbone    ``Backbone``: images -> features. What is evaluated and exported.
    projector   ``nn.Module``: backbone features -> the embedding the loss sees.
    augment     ``MultiView``: a uint8 batch -> the views.
    knn         ``KNNAccuracy``: the ``val/knn_top1`` monitor.
    optim       ``OptimConfig``; speed: ``SpeedConfig``.

and provides:

    step(views, labels) -> (loss, stats)   the loss of one batch of views (labels serve
                                           diagnostics only); a numerical fault raises
                                           ``FloatingPointError``.
    momentum_pairs() -> [(online, copy)]   networks that follow others by EMA (default: none)
    momentum_at(step) -> float             their rate after optimiser step ``step``
    check_data(datamodule, world_size)     refuse data the method cannot use, early
    prepare()                              module surgery before the speed settings
                                           (BatchNorm conversion, queue sizes)
    uses_negatives (class attribute)       whether BG_Swaps' hard negative can join its loss

The hooks below run that contract, in the order Lightning calls them:

    setup                    check_data (unless the CLI did), prepare, then speed
                             (channels_last, compile)
    configure_optimizers     ``optim`` over every trainable parameter, warm-up + cosine
    on_after_batch_transfer  JPEGs decoded (data module), reseed, views or evaluation image
    training_step            step(); a non-finite loss or FloatingPointError goes to the
                             ``fault_handler`` (``NumericalGuard``) or stops the run
    optimizer_step           after the update, every momentum pair moves
    on_train_epoch_end       data issues (missing masks, unreadable images) logged
    validation/test          weighted kNN on backbone features
    on_save_checkpoint       class path recorded, hyper-parameters stored as plain data
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from sslkit.data.base import seed_from_environment, share_cores, to_device
from sslkit.nn import distributed
from sslkit.nn.backbones import build_backbone

from .momentum import momentum_update
from .optim import configure_optimization
from .speed import apply_speed, to_memory_format


# Views are made in the method's on_after_batch_transfer by design, with any data module.
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule` but")
warnings.filterwarnings("ignore", message="You have overridden `transfer_batch_to_device` in `LightningModule` but")


def make_backbone(name: str, small_images: bool, small_stem_padding: int, kwargs: dict | None, weights: str | None,
                  weights_format: str = "auto", weights_branch: str | None = None):
    """The method's backbone (``build_backbone``), initialised from ``weights`` when given."""
    from sslkit.checkpoints import load_backbone_weights

    backbone = build_backbone(name, small_images=small_images, small_stem_padding=small_stem_padding, **(kwargs or {}))
    if weights:
        load_backbone_weights(backbone, weights, weights_format, weights_branch)
    return backbone


def renamed_arguments(**renames: str):
    """Constructor arguments renamed in 0.2 keep working for one release (Python calls; the
    CLI renames config keys with ``RENAMED_ARGUMENTS``), with a warning naming the new one."""
    def decorate(init):
        @functools.wraps(init)
        def wrapper(self, *args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    warnings.warn(f"{type(self).__name__}({old}=...) is now {new}= (the old name goes in the next "
                                  f"release)", FutureWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            init(self, *args, **kwargs)
        wrapper.renamed = dict(renames)
        return wrapper
    return decorate


def refuse_swap_negative(method: "SSLMethod") -> None:
    """A method without negatives takes BG_Swaps' positive part only."""
    swap = getattr(method.augment, "background_swap", None)
    if swap is not None and swap.hard_negative and not method.uses_negatives:
        raise ValueError(f"{type(method).__name__} has no negatives to append the BG_Swaps hard negative to: set "
                         f"model.init_args.augment.init_args.background_swap.init_args.hard_negative: false")


def config(value, cls, default):
    """A configuration argument: an instance of ``cls``, its fields as a dict (how
    checkpoints store it), or ``None`` for ``default``."""
    if value is None:
        return default
    return cls(**value) if isinstance(value, dict) else value


def embedding_spread(embeddings: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of L2-normalised embeddings over the batch, times sqrt(dim):
    about 1 for embeddings spread over the sphere, near 0 when they collapse to a point."""
    z = F.normalize(embeddings.detach().float(), dim=1)
    return z.std(0).mean() * z.shape[1] ** 0.5


class DataIssues:
    """Images trained on with a stand-in mask (``missing_mask: foreground``) and images left
    out of their batch as unreadable (``bad_images: skip``), counted over an epoch."""

    def __init__(self) -> None:
        self.missing_masks = 0
        self.skipped: list[str] = []

    def count(self, batch: dict) -> None:
        missing = batch.get("mask_missing")
        if missing is not None:
            self.missing_masks += int(missing.sum())
        self.skipped += list(batch.get("skipped") or [])

    def report(self, module: pl.LightningModule) -> None:
        """Log the epoch's counts over all ranks (``data/missing_masks``,
        ``data/skipped_images``), warn when not zero, and start counting again."""
        device = module.device
        skipped = int(distributed.all_reduce_sum(torch.tensor(float(len(self.skipped)), device=device)))
        missing = int(distributed.all_reduce_sum(torch.tensor(float(self.missing_masks), device=device)))
        module.log_dict({"data/skipped_images": float(skipped), "data/missing_masks": float(missing)})
        if skipped:
            rank_zero_warn(f"epoch {module.current_epoch}: {skipped} unreadable training images skipped "
                           f"(data.bad_images: skip); first: {self.skipped[:3]}")
        if missing:
            rank_zero_warn(f"epoch {module.current_epoch}: {missing} training images had no mask file and were "
                           f"used without background augmentation (data.missing_mask: foreground)")
        self.missing_masks, self.skipped = 0, []


class SSLMethod(pl.LightningModule):
    """The contract of the module docstring. Subclasses call ``super().__init__()`` first."""

    uses_negatives = False

    def __init__(self) -> None:
        super().__init__()
        self.fault_handler: Callable[[str], None] | None = None
        self.data_issues = DataIssues()
        self.total_steps = 0
        self._prepared = False
        self._checked_data: int | None = None
        self._threads_before: int | None = None

    # ------------------------------------------------------------------ the contract
    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return []

    def momentum_at(self, step: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} has momentum pairs but no momentum_at")

    def check_data(self, datamodule, world_size: int = 1) -> None:
        """The recipe fits the data: crops no larger than a fixed-size canvas, the data's
        normalisation statistics wherever the recipe names none. ``sslkit fit`` calls it
        before the run folder is made, ``setup`` when no one has."""
        self._checked_data = id(datamodule)
        canvas = getattr(datamodule, "image_size", None)
        if canvas is not None and not getattr(datamodule, "whole_images", False):
            self.augment.check_canvas(canvas)
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        if mean is not None and std is not None:
            self.augment.use_statistics(mean, std)

    def prepare(self) -> None:
        """Module surgery that needs the trainer (devices, ranks), before the speed settings."""

    def encoders(self) -> list[nn.Module]:
        """The backbone and its momentum copies: what ``speed.compile`` compiles."""
        copies = [copy for online, copy in self.momentum_pairs() if online is self.backbone]
        return [self.backbone, *copies]

    # ------------------------------------------------------------------ hooks
    def setup(self, stage: str) -> None:
        trainer = self.trainer
        if trainer is not None and trainer.datamodule is not None and self._checked_data != id(trainer.datamodule):
            self.check_data(trainer.datamodule, trainer.world_size)
        if not self._prepared:
            self.prepare()
            apply_speed(self, self.speed)
            self._prepared = True
        if trainer is not None and trainer.datamodule is not None and self._threads_before is None:
            self._threads_before = share_cores(getattr(trainer.datamodule, "num_workers", 0),
                                               trainer.strategy.root_device, trainer.num_devices)

    def teardown(self, stage: str) -> None:
        """The process's thread count back to what it was before ``setup`` shared the cores."""
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def configure_optimizers(self):
        self.total_steps = int(self.trainer.estimated_stepping_batches)
        return configure_optimization(self, self, self.optim)

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        """Everything to ``device`` but the JPEG bytes the data module decodes there (they stay
        in host memory, where the decoder reads them)."""
        return to_device(batch, device)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        data = self.trainer.datamodule if self.trainer is not None else None
        if hasattr(data, "decode"):  # JPEGs the workers left encoded, decoded on this device
            batch = data.decode(batch, self.device)
        if "image" not in batch:  # every image of this batch was unreadable (bad_images: skip)
            return batch
        with torch.no_grad():
            if self.trainer is not None and self.trainer.training:
                self._seed_step()
                batch["views"] = to_memory_format(self.augment(batch), self.speed)
            else:
                image = self.augment.evaluate(batch)
                batch["eval_image"] = to_memory_format([{"image": image}], self.speed)[0]["image"]
        return batch

    def _seed_step(self) -> None:
        """The random draws of a training batch (augmentation, key shuffles) come from the
        global generator reseeded with (run seed, optimiser step, micro-batch of that step,
        rank): every micro-batch of an accumulated step draws its own crops and colours, and
        an interrupted run resumes with the randomness it would have had."""
        trainer = self.trainer
        micro = trainer.fit_loop.epoch_loop.batch_progress.current.ready % max(1, trainer.accumulate_grad_batches)
        key = ((seed_from_environment() * 1_000_003 + self.global_step) * 1_009 + micro) * 1_013 + distributed.rank()
        torch.manual_seed(key % (2 ** 63))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        self.data_issues.count(batch)
        if "views" not in batch:
            return None
        try:
            loss, stats = self.step(batch["views"], labels=batch.get("label"))
        except FloatingPointError as err:
            return self._fault(str(err))
        if not torch.isfinite(loss):
            return self._fault(f"non-finite loss ({loss.item()}) at global step {self.global_step}, "
                               f"epoch {self.current_epoch}")
        self.log_dict({"train/loss": loss, **stats})
        self.log("loss", loss, prog_bar=True, logger=False)
        return loss

    def _fault(self, message: str) -> None:
        """A numerical fault: skip the step for the ``fault_handler`` to roll back, or stop."""
        if self.fault_handler is not None:
            self.fault_handler(message)
            return None
        raise FloatingPointError(f"{message}: lower the learning rate, or check the data and precision; "
                                 f"checkpoints written before this step are intact")

    def optimizer_step(self, *args, **kwargs) -> None:
        """After optimiser step k every momentum copy moves: xi <- m_k xi + (1 - m_k) theta
        (MoCo eq. 2, BYOL sec. 3.1). Lightning counts the step only after this hook, so
        ``global_step`` is k here."""
        super().optimizer_step(*args, **kwargs)
        pairs = self.momentum_pairs()
        if pairs:
            m = self.momentum_at(self.global_step)
            for online, copy in pairs:
                momentum_update(online, copy, m)

    def on_train_epoch_end(self) -> None:
        self.data_issues.report(self)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loader 0 is the kNN bank (train split, no augmentation), loader 1 the queries."""
        if "label" in batch and "eval_image" in batch:
            self.knn.update(self.backbone(batch["eval_image"]), batch["label"], bank=dataloader_idx == 0)

    def on_validation_epoch_end(self) -> None:
        self._log_knn()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._log_knn()

    def _log_knn(self) -> None:
        """``val/knn_top1`` of the epoch when bank and queries both arrived (a split without
        labels leaves nothing to log)."""
        if self.knn.update_count > 0 and self.knn.ready():
            self.log("val/knn_top1", self.knn.compute(), prog_bar=True)
        self.knn.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sslkit_class_path"] = f"{type(self).__module__}.{type(self).__qualname__}"
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict):
            checkpoint["hyper_parameters"] = {
                k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
                for k, v in hparams.items()}
