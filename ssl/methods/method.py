"""What every sslkit method is, and the Lightning hooks that run it.

``SSLMethod.__init__`` takes what every method shares and does the shared work:

    backbone    ``BackboneConfig`` (or a model name): built, and initialised from a checkpoint
                when it names one. What is evaluated and exported.
    augment     ``MultiView``: a uint8 batch -> the views; checked against BG_Swaps.
    optim       ``OptimConfig``; speed: ``SpeedConfig``; knn: ``KNNConfig`` (``val/knn_top1``).
    online_classifier  ``OnlineClassifierConfig`` or ``None``: a linear layer on detached
                backbone features, of the step's crops or refitted on the kNN bank at each
                validation (``train/online_top1``, ``val/online_top1``, ``val/online_top5``).

and saves every constructor argument of the method as hyper-parameters. A method (a
subclass) then builds its heads (``projector`` at least), its momentum copies and its loss,
and provides:

    step(views, labels) -> (loss, stats)   the loss of one batch of views (labels serve
                                           diagnostics only); a numerical fault raises
                                           ``FloatingPointError``.
    param_groups() -> [dict]               the optimiser's groups with their own lr and
                                           weight-decay multipliers or a fixed rate
                                           (default: one group)
    momentum_pairs() -> [(online, copy)]   networks that follow others by EMA (default: none)
    momentum_at(step) -> float             their rate after optimiser step ``step``
    check_data(data, world_size)           refuse data the method cannot use, early
    prepare()                              module surgery before the speed settings
                                           (BatchNorm conversion, queue sizes)
    uses_negatives (class attribute)       whether BG_Swaps' hard negative can join its loss
    evaluated_branch (class attribute)     ``online`` (the backbone) or ``momentum`` (its EMA
                                           copy, DINO's teacher): what kNN, the evaluators and
                                           the checkpoint loaders take by default

The hooks below run that contract, in the order Lightning calls them:

    setup                    check_data, prepare, speed (channels_last, compile), the online
                             classifier (its classes from the data's labels); the main
                             process's threads shared with the data workers on a CPU
    configure_optimizers     ``plan_schedule`` (the one place where steps are counted:
                             ``schedule.total_steps``, ``schedule.steps_per_epoch``), then
                             ``optim`` over ``param_groups()``, warm-up + cosine
    transfer_batch_to_device everything but JPEG bytes, which the data module decodes
    on_after_batch_transfer  JPEGs decoded, reseed, views or evaluation image
    training_step            step(), with the backbone's features of the step caught for an
                             in-step online classifier; a non-finite loss or FloatingPointError goes
                             to the ``fault_handler`` (``NumericalGuard``) or stops the run
    optimizer_step           after the update, every momentum pair moves
    on_train_epoch_end       data issues (missing masks, unreadable images) logged
    validation/test          weighted kNN and the online classifier on backbone features
                             (a ``bank`` classifier refitted on the bank before the queries)
    on_load_checkpoint       an online classifier the checkpoint has (or lacks) made to fit,
                             its optimiser group added or dropped
    on_save_checkpoint       class path recorded, hyper-parameters stored as plain data
    teardown                 the process's thread count restored
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from sslkit.augmentations import MultiView
from sslkit.data.base import seed_from_environment, share_cores, to_device
from sslkit.data.contract import data_contract
from sslkit.eval.knn import KNNAccuracy, KNNConfig
from sslkit.eval.online import OnlineClassifier, OnlineClassifierConfig
from sslkit.lightning_adapter import batches_started, training_batches
from sslkit.nn import distributed
from sslkit.nn.backbones import BackboneConfig
from sslkit.nn.momentum import momentum_update

from sslkit.legacy import fold
from .optim import OptimConfig, configure_optimization, schedule_weight_decay
from .speed import SpeedConfig, apply_speed, to_memory_format

# Views are made in the method's on_after_batch_transfer by design, with any data module.
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule` but")
warnings.filterwarnings("ignore", message="You have overridden `transfer_batch_to_device` in `LightningModule` but")


def as_config(value, cls: type):
    """A configuration argument as an instance of ``cls``: given as one, as its fields in a
    dict (how checkpoints store it), or, for a backbone, as a model name."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str) and cls is BackboneConfig:
        return BackboneConfig(name=value)
    if isinstance(value, dict):
        return cls(**value)
    raise TypeError(f"expected a {cls.__name__} or a dict of its fields, got {type(value).__name__}")


def embedding_spread(embeddings: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of L2-normalised embeddings over the batch, times sqrt(dim):
    about 1 for embeddings spread over the sphere, near 0 when they collapse to a point."""
    z = F.normalize(embeddings.detach().float(), dim=1)
    return z.std(0).mean() * z.shape[1] ** 0.5


@dataclasses.dataclass
class Schedule:
    """How many optimiser steps the run makes in all and per epoch."""

    total_steps: int
    steps_per_epoch: int


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


def recipe_value(value, default):
    """A constructor argument resolved against the method's own default (its recipe): ``None``
    or the default itself gives a fresh copy of the default; a dict of some fields of a config
    dataclass changes those fields of the method's default, not of the dataclass's generic
    one, as a YAML key or a ``--model.init_args.optim.lr`` flag does through LightningCLI."""
    if hasattr(type(default), "lazy_get_init_data"):  # jsonargparse.lazy_instance: a class default
        if value is None or value is default:
            data = default.lazy_get_init_data()
            module, _, name = data.class_path.rpartition(".")
            init_args = dict(vars(data.init_args)) if "init_args" in data else {}
            return getattr(importlib.import_module(module), name)(**init_args)
        return value
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        if value is None or value is default:
            return dataclasses.replace(default)
        if isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(default)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise TypeError(f"{type(default).__name__} has no field {unknown[0]!r}; its fields: {sorted(known)}")
            return dataclasses.replace(default, **value)
    return value


def _recording_arguments(init: Callable) -> Callable:
    """A method's ``__init__`` that accepts 0.2's argument names (``legacy.fold``), resolves
    each argument against the method's default (``recipe_value``) and records the arguments
    of the outermost constructor, which ``SSLMethod`` saves as hyper-parameters."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        kwargs = fold(kwargs, type(self).legacy_names)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            bound.arguments[name] = recipe_value(value, signature.parameters[name].default)
        if "_init_arguments" not in self.__dict__:
            object.__setattr__(self, "_init_arguments", dict(list(bound.arguments.items())[1:]))
        init(*bound.args, **bound.kwargs)

    return wrapper


class SSLMethod(pl.LightningModule):
    """The template of the module docstring. A subclass calls ``super().__init__`` with the
    shared arguments first, then builds its heads. ``legacy_names``: its own arguments
    renamed since 0.2 (old -> new), accepted with a note."""

    uses_negatives: ClassVar[bool] = False
    evaluated_branch: ClassVar[str] = "online"
    legacy_names: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_arguments(cls.__dict__["__init__"])

    def __init__(
        self,
        backbone: BackboneConfig | str,
        augment: MultiView,
        optim: OptimConfig,
        speed: SpeedConfig | None = None,
        knn: KNNConfig | None = None,
        online_classifier: OnlineClassifierConfig | None = None,
    ) -> None:
        super().__init__()
        backbone = as_config(backbone, BackboneConfig)
        arguments = dict(self.__dict__.get("_init_arguments", {}), backbone=backbone)
        self.save_hyperparameters({"_class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                                   **{k: v for k, v in arguments.items() if k != "augment"}})
        self.backbone = backbone.build()
        self.augment = augment
        self.optim = as_config(optim, OptimConfig)
        self.speed = as_config(speed or SpeedConfig(), SpeedConfig)
        knn = as_config(knn or KNNConfig(), KNNConfig)
        self.knn = KNNAccuracy(knn.k, knn.temperature)
        self.online = as_config(online_classifier, OnlineClassifierConfig) if online_classifier is not None else None
        self.online_classifier: OnlineClassifier | None = None
        self._caught: list[tuple[tuple[int, int], torch.Tensor]] | None = None
        self.fault_handler: Callable[[str], None] | None = None
        self.data_issues = DataIssues()
        self.schedule = Schedule(0, 0)
        self._prepared = False
        self._threads_before: int | None = None
        self._classifier_group_from: dict | None = None
        self.measuring = False  # True while an evaluator (the landscape tools) runs step
        self.refuse_swap_negative()

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's ``load_from_checkpoint`` for a checkpoint of any sslkit version: the
        file is read safely (``read_checkpoint``) and hyper-parameters saved by 0.2 are renamed
        and folded (``sslkit.legacy``) before the method is built from them."""
        import io

        from sslkit.checkpoints.reading import read_checkpoint

        checkpoint = read_checkpoint(checkpoint_path)
        hparams = {k: v for k, v in (checkpoint.get("hyper_parameters") or {}).items()
                   if k not in ("_instantiator", "_class_path")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # a file's old names: nothing for the user to change
            checkpoint["hyper_parameters"] = fold(hparams, cls.legacy_names)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        buffer.seek(0)
        return super().load_from_checkpoint(buffer, *args, **kwargs)

    # ------------------------------------------------------------------ the contract
    def step(self, views: list[dict], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return []

    def momentum_at(self, step: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} has momentum pairs but no momentum_at")

    def refuse_swap_negative(self) -> None:
        """A method without negatives takes BG_Swaps' positive part only."""
        swap = self.augment.background_swap
        if swap is not None and swap.hard_negative and not self.uses_negatives:
            raise ValueError(f"{type(self).__name__} has no negatives to append the BG_Swaps hard negative to: set "
                             f"model.init_args.augment.init_args.background_swap.init_args.hard_negative: false")

    def check_data(self, datamodule, world_size: int = 1) -> None:
        """The recipe fits the data: crops no larger than a fixed-size canvas, the data's
        normalisation statistics wherever the recipe names none. ``sslkit fit`` calls it
        before the run folder is made, ``setup`` again (it is idempotent)."""
        data = data_contract(datamodule)
        if not data.whole_images:
            self.augment.check_canvas(data.image_size)
        self.augment.use_statistics(data.mean, data.std)

    def prepare(self) -> None:
        """Module surgery that needs the trainer (devices, ranks), before the speed settings."""

    def global_batchnorm(self, *names: str) -> None:
        """Under DDP, every BatchNorm of the named submodules normalises over the global batch
        (the official codes' SyncBatchNorm; ``GlobalBatchNorm`` off GPUs). Call from
        ``prepare``."""
        if distributed.world_size() > 1:
            from sslkit.nn.syncbn import synchronise_batchnorm

            on_gpu = self.trainer.strategy.root_device.type == "cuda"
            for name in names:
                setattr(self, name, synchronise_batchnorm(getattr(self, name), on_gpu))

    def param_groups(self) -> list[dict]:
        """The optimiser's parameter groups: every trainable parameter but the online
        classifier's, in exactly one group. A group is a dict with ``params`` and, optionally,
        ``name``, ``lr_mult`` (x the scheduled, batch-scaled rate), ``weight_decay_mult``,
        ``fixed_lr`` (stays at ``lr_mult`` x the peak: no warm-up, no cosine) and ``exclude``
        (no weight decay, no LARS adaptation). Default: one group of everything."""
        return [{"name": "all", "params": self.trainable_parameters()}]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter the optimiser trains: those that need gradient, but the online
        classifier's (a group of its own)."""
        own = {id(p) for p in self.online_classifier.parameters()} if self.online_classifier is not None else set()
        return [p for p in self.parameters() if p.requires_grad and id(p) not in own]

    def encoders(self) -> list[nn.Module]:
        """The backbone and its momentum copies: what ``speed.compile`` compiles."""
        copies = [copy for online, copy in self.momentum_pairs() if online is self.backbone]
        return [self.backbone, *copies]

    def evaluated_backbone(self) -> nn.Module:
        """The network the method is judged by (``evaluated_branch``): the backbone, or the
        momentum copy that follows it."""
        if self.evaluated_branch == "momentum":
            copies = [copy for online, copy in self.momentum_pairs() if online is self.backbone]
            if not copies:
                raise ValueError(f"{type(self).__name__}.evaluated_branch is 'momentum' but no momentum pair follows "
                                 f"the backbone")
            return copies[0]
        return self.backbone

    def build_online_classifier(self, num_classes: int, standardize: bool | None = None) -> None:
        """The online classifier on the backbone's features, and the hook that catches
        those features whenever the step runs the backbone."""
        standardize = self.online.standardize if standardize is None else standardize
        self.online_classifier = OnlineClassifier(self.backbone.dim, num_classes, standardize).to(self.device)
        if self._online_in_step:
            self.backbone.register_forward_hook(self._catch_features)
        else:
            self.online_classifier.requires_grad_(False)  # refitted at validation, outside the optimiser

    @property
    def _online_in_step(self) -> bool:
        return self.online is None or self.online.in_step

    def _catch_features(self, backbone: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if self._caught is not None:
            self._caught.append((tuple(inputs[0].shape[-2:]), output))

    def _online_loss(self, views: list[dict], labels: torch.Tensor | None) -> torch.Tensor | None:
        """The online classifier's loss on the features the step computed: of the large crops
        (those at the first view's size) or of every view, each batch of them labelled."""
        caught, self._caught = self._caught or [], None
        if labels is None or not caught:
            return None
        size = tuple(views[0]["image"].shape[-2:])
        features = [f for hw, f in caught if self.online.views == "all" or hw == size]
        features = torch.cat([f for f in features if f.shape[0] % labels.shape[0] == 0])
        return self.online_classifier.loss(features, labels.repeat(features.shape[0] // labels.shape[0]))

    def plan_schedule(self) -> Schedule:
        """The run's optimiser steps, in all and per epoch (the train loader's length after
        ``limit_train_batches``, over gradient accumulation); every schedule in steps (learning
        rate, momentum, SwAV's prototype freeze) is derived from it."""
        trainer = self.trainer
        batches = training_batches(trainer)
        total = int(trainer.estimated_stepping_batches)
        if batches == float("inf"):
            raise ValueError("schedules in epochs need a train loader of known length")
        per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
        return Schedule(total, per_epoch)

    @property
    def total_steps(self) -> int:
        return self.schedule.total_steps

    # ------------------------------------------------------------------ hooks
    def setup(self, stage: str) -> None:
        trainer = self.trainer
        if trainer.datamodule is not None:
            self.check_data(trainer.datamodule, trainer.world_size)
        if not self._prepared:
            self.prepare()
            apply_speed(self, self.speed)
            self._prepared = True
        if self.online is not None and self.online_classifier is None:
            num_classes = self.online.num_classes
            if num_classes is None and trainer.datamodule is not None:
                num_classes = int(data_contract(trainer.datamodule).labels("train").max()) + 1
            if num_classes is None or num_classes < 2:
                rank_zero_warn("model.online_classifier needs labels (or online_classifier.num_classes); it is off "
                               "for this run")
            else:
                self.build_online_classifier(num_classes)
        if trainer.datamodule is not None and self._threads_before is None:
            self._threads_before = share_cores(trainer.datamodule.num_workers, trainer.strategy.root_device,
                                               trainer.num_devices)

    def teardown(self, stage: str) -> None:
        """The process's thread count back to what it was before ``setup`` shared the cores."""
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def configure_optimizers(self):
        self.schedule = self.plan_schedule()
        classifier = None
        if self.online_classifier is not None and self._online_in_step:
            classifier = (list(self.online_classifier.parameters()), self.online)
        configured = configure_optimization(self, self.optim, self.param_groups(), classifier)
        if self._classifier_group_from is not None:
            match_classifier_group(self._classifier_group_from, configured)
            self._classifier_group_from = None
        return configured

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        """Everything to ``device`` but the JPEG bytes the data module decodes there (they stay
        in host memory, where the decoder reads them)."""
        return to_device(batch, device)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if self.trainer is not None and self.trainer.datamodule is not None:
            batch = data_contract(self.trainer.datamodule).decode(batch, self.device)
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
        micro = batches_started(trainer) % max(1, trainer.accumulate_grad_batches)
        key = ((seed_from_environment() * 1_000_003 + self.global_step) * 1_009 + micro) * 1_013 + distributed.rank()
        torch.manual_seed(key % (2 ** 63))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        self.data_issues.count(batch)
        if "views" not in batch:
            return None
        self._caught = [] if self.online_classifier is not None and self._online_in_step else None
        try:
            loss, stats = self.step(batch["views"], labels=batch.get("label"))
        except FloatingPointError as err:
            self._caught = None
            return self._fault(str(err))
        if not torch.isfinite(loss):
            self._caught = None
            return self._fault(f"non-finite loss ({loss.item()}) at global step {self.global_step}, "
                               f"epoch {self.current_epoch}")
        self.log_dict({"train/loss": loss, **stats})
        self.log("loss", loss, prog_bar=True, logger=False)
        online = self._online_loss(batch["views"], batch.get("label")) if self._caught is not None else None
        if online is not None:
            self.log("train/online_loss", online)
            return loss + online  # no gradient reaches the backbone: the classifier sees detached features
        return loss

    def _fault(self, message: str) -> None:
        """A numerical fault: skip the step for the ``fault_handler`` to roll back, or stop."""
        if self.fault_handler is not None:
            self.fault_handler(message)
            return None
        raise FloatingPointError(f"{message}: lower the learning rate, or check the data and precision; "
                                 f"checkpoints written before this step are intact")

    def optimizer_step(self, *args, **kwargs) -> None:
        """Before optimiser step k the weight decay is set for k (``optim.weight_decay_end``);
        after it every momentum copy moves: xi <- m_k xi + (1 - m_k) theta
        (MoCo eq. 2, BYOL sec. 3.1). Lightning counts the step only after this hook, so
        ``global_step`` is k here."""
        optimizer = args[2] if len(args) > 2 else kwargs["optimizer"]
        schedule_weight_decay(getattr(optimizer, "optimizer", optimizer), self.optim, self.global_step, self.total_steps)
        super().optimizer_step(*args, **kwargs)
        pairs = self.momentum_pairs()
        if pairs:
            m = self.momentum_at(self.global_step)
            for online, copy in pairs:
                momentum_update(online, copy, m)

    def on_train_epoch_end(self) -> None:
        self.data_issues.report(self)
        if self.online_classifier is not None and self.online_classifier.train_top1.update_count:
            self.log("train/online_top1", self.online_classifier.train_top1.compute())
            self.online_classifier.train_top1.reset()

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loader 0 is the kNN bank (train split, no augmentation), loader 1 the queries, which
        the online classifier is scored on too (a ``bank`` classifier is refitted on the bank
        before the first query; not while Lightning's sanity check runs)."""
        if "label" in batch and "eval_image" in batch:
            features = self.evaluated_backbone()(batch["eval_image"])
            self.knn.update(features, batch["label"], bank=dataloader_idx == 0)
            classifier = self.online_classifier
            if classifier is None:
                return
            if dataloader_idx == 0 and not self._online_in_step:
                classifier.collect(features, batch["label"])
            elif dataloader_idx == 1:
                if not self._online_in_step and not self.trainer.sanity_checking:
                    classifier.fit_bank(self.online.weight_decay, self.online.max_iter)
                classifier.drop_bank()
                classifier.evaluate(features, batch["label"])

    def on_validation_epoch_end(self) -> None:
        self._log_knn()
        self._log_online()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._log_knn()
        self._log_online()

    def _log_online(self) -> None:
        """``val/online_top1`` and ``val/online_top5`` of the epoch, over all ranks."""
        classifier = self.online_classifier
        if classifier is not None:
            classifier.drop_bank()
        if classifier is not None and not self._online_in_step and classifier.train_top1.update_count:
            self.log("train/online_top1", classifier.train_top1.compute())
            classifier.train_top1.reset()
        if classifier is not None and classifier.val_top1.update_count:
            self.log_dict({"val/online_top1": classifier.val_top1.compute(),
                           "val/online_top5": classifier.val_top5.compute()}, prog_bar=False)
            classifier.val_top1.reset()
            classifier.val_top5.reset()

    def _log_knn(self) -> None:
        """``val/knn_top1`` of the epoch when bank and queries both arrived (a split without
        labels leaves nothing to log)."""
        if self.knn.update_count > 0 and self.knn.ready():
            self.log("val/knn_top1", self.knn.compute(), prog_bar=True)
        self.knn.reset()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint with an online classifier gets one of its shape (``load_from_checkpoint``
        builds none before loading); a checkpoint without one (sslkit 0.2) leaves this run's
        fresh one as it is, its optimiser state included. Resuming with the classifier switched
        between ``bank`` and a training-step source adds or drops its optimiser group."""
        state = checkpoint.get("state_dict", {})
        weight = state.get("online_classifier.linear.weight")
        if weight is not None and self.online_classifier is None:
            self.build_online_classifier(weight.shape[0], "online_classifier.standardize.mean" in state)
        elif weight is None and self.online_classifier is not None:
            rank_zero_warn("the checkpoint has no online classifier: this run's starts fresh")
            for key, value in self.online_classifier.state_dict(prefix="online_classifier.").items():
                checkpoint["state_dict"][key] = value
        saved = (checkpoint.get("hyper_parameters") or {}).get("online_classifier")
        saved_group = weight is not None and saved is not None and as_config(saved, OnlineClassifierConfig).in_step
        if saved_group != (self.online_classifier is not None and self._online_in_step):
            self._classifier_group_from = checkpoint  # matched to this run's groups once they exist

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sslkit_class_path"] = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["sslkit_evaluated_branch"] = self.evaluated_branch
        with contextlib.suppress(TypeError, OSError):  # where a method of the user's own module is defined
            checkpoint["sslkit_class_file"] = str(Path(inspect.getfile(type(self))).resolve())
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict):
            checkpoint["hyper_parameters"] = {
                k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
                for k, v in hparams.items()}


def match_classifier_group(checkpoint: dict, configured: dict) -> None:
    """Resume a checkpoint whose optimiser lacks the online classifier's group (sslkit 0.2, or
    a ``bank`` classifier) into a run that trains it in the step: the group (the optimiser's
    last) joins the stored optimiser and schedule states as the run's fresh one. The other way
    round, the stored group and its momentum buffers are dropped."""
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    for stored in checkpoint.get("optimizer_states", [])[:1]:
        live = optimizer.state_dict()["param_groups"]
        if len(stored["param_groups"]) == len(live) - 1:
            stored["param_groups"].append(live[-1])
        elif len(stored["param_groups"]) == len(live) + 1:
            for index in stored["param_groups"].pop()["params"]:
                stored["state"].pop(index, None)
    for stored in checkpoint.get("lr_schedulers", [])[:1]:
        live = scheduler.state_dict()
        for key in ("base_lrs", "_last_lr", "lr_lambdas"):
            if key in stored and len(stored[key]) == len(live[key]) - 1:
                stored[key].append(live[key][-1])
            elif key in stored and len(stored[key]) == len(live[key]) + 1:
                stored[key].pop()
