"""Fine-tuning a pretrained backbone with a linear classifier: full, BatchNorm-only or head-only,
on all labels or a labelled subset (the semi-supervised 1% / 10% protocol).

``FineTuner`` is the LightningModule (``sslkit finetune`` wraps it in a LightningCLI);
``LabelledData`` wraps any sslkit data module so that training reads only the labelled subset
and validation/test read the val split through the module's evaluation loader.

Labelled subsets (``labels``):

- ``1%`` / ``10%`` on an ImageNet-layout folder (class folders named ``n########``): the
  image lists SimCLR published (google-research/simclr ``imagenet_subsets/1percent.txt``,
  ``10percent.txt``; shipped gzipped in ``sslkit/data/imagenet_subsets``), matched to the
  folder's files by file name. SwAV's ``eval_semisup.py`` and BYOL's semi-supervised runs use
  the same lists.
- ``1%`` / ``10%`` / ``0.05`` ... on any other data: a class-balanced subset (that fraction
  of every class, at least one image each) drawn with ``label_seed``.
- a file path: a list of file names (one per line, ``.gz`` allowed) resolved the same way.
- ``all`` (or ``100%``): every labelled training image.

What was drawn is recorded: in the logger's hyperparameters (``labelled`` in ``hparams.yaml``),
in every checkpoint (``checkpoint['labelled']``) and ``labelled.json`` beside the metrics (the
indices and, for folders, the file names). ``finetune.json`` in the log folder holds the result
(last val and test top-1/top-5) with the backbone's source and its SHA-256, which ``sslkit
report --finetune`` joins to the same checkpoint.

``train``: ``all`` (every parameter), ``batchnorm`` (only the affine weights and biases of
the normalisation layers, plus the linear head; every other parameter keeps its exact bits;
BatchNorm running statistics follow the training batches as usual), ``head`` (a linear probe
trained by the same loop: the backbone frozen and in eval mode).

``layer_decay`` (ViTs): MAE's layer-wise learning-rate decay (facebookresearch/mae
``util/lr_decay.py``, ``param_groups_lrd``): with L blocks, the patch embedding, class token
and position embedding are layer 0, block i is layer i + 1, everything after the blocks (final
norm, the head) layer L + 1; layer j's rate is ``lr x layer_decay ** (L + 1 - j)``. 1-d
parameters and the class/position tokens get no weight decay.
"""
from __future__ import annotations

import gzip
import json
import math
import re
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchmetrics.classification import MulticlassAccuracy

from sslkit.augmentations.geometry import RandomHorizontalFlip, RandomResizedCrop
from sslkit.augmentations.recipes import eval_view
from sslkit.augmentations.stages import Normalize
from sslkit.augmentations.views import View
from sslkit.data.base import collate_dropping_skipped, decode_batch, seed_from_environment, to_device
from sslkit.data.sampler import ResumableSampler
from sslkit.lightning_adapter import batches_started, training_batches
from sslkit.methods.optim import OptimConfig, configure_optimization

TrainMode = Literal["all", "batchnorm", "head"]
IMAGENET_LISTS = {"1%": "1percent.txt.gz", "10%": "10percent.txt.gz"}
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
WNID = re.compile(r"^n\d{8}$")


@rank_zero_only
def say(line: str) -> None:
    print(line, file=sys.stderr)


# ----------------------------------------------------------------------------- labelled subsets
def imagenet_list(which: str) -> list[str]:
    """SimCLR's published ImageNet subset (``1%``: 12,811 file names; ``10%``: 128,116)."""
    if which not in IMAGENET_LISTS:
        raise ValueError(f"labels: the ImageNet lists are {', '.join(IMAGENET_LISTS)}, got '{which}'")
    data = resources.files("sslkit.data").joinpath("imagenet_subsets", IMAGENET_LISTS[which]).read_bytes()
    return gzip.decompress(data).decode().split()


def read_list(path: str | Path) -> list[str]:
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode().split()


def parse_fraction(spec: str) -> float | None:
    """``'1%'`` -> 0.01, ``'0.1'`` -> 0.1, ``'all'`` -> 1.0; ``None`` where ``spec`` is no fraction."""
    text = str(spec).strip()
    if text.lower() == "all":
        return 1.0
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return None
    if not 0 < value <= 1:
        raise ValueError(f"labels: a fraction must be in (0, 1] (or 0%-100%), got '{spec}'")
    return value


def balanced_subset(labels: torch.Tensor, fraction: float, seed: int) -> list[int]:
    """``fraction`` of every class (rounded, at least one image), drawn with ``seed``: sorted
    indices into ``labels``. The same labels, fraction and seed give the same subset."""
    generator = torch.Generator().manual_seed(int(seed))
    chosen = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        take = max(1, int(round(fraction * len(members))))
        order = torch.randperm(len(members), generator=generator)
        chosen += members[order[:take]].tolist()
    return sorted(chosen)


def resolve_names(paths: Sequence[str | Path], names: Sequence[str], what: str) -> list[int]:
    """Indices of ``paths`` whose file name is in ``names``; an error where none is."""
    wanted = {Path(n).name for n in names}
    found = [i for i, p in enumerate(paths) if Path(p).name in wanted]
    if not found:
        raise ValueError(f"labels: none of the {len(wanted)} files of {what} is in the training folder "
                         f"(matched by file name, e.g. '{next(iter(sorted(wanted)))}')")
    return found


def is_imagenet_layout(dataset) -> bool:
    classes = getattr(dataset, "classes", None)
    return bool(classes) and all(WNID.match(str(c)) for c in classes)


def select_labelled(dataset, spec: str, seed: int) -> tuple[list[int], dict]:
    """The labelled subset ``spec`` names (module docstring) of ``dataset`` (a data module's
    ``eval_split('train')``), and the record of how it was drawn."""
    samples = getattr(dataset, "samples", None)
    paths = [p for p, _ in samples] if samples is not None else None
    labels = dataset.labels()
    fraction = parse_fraction(spec)
    if fraction is None:  # a file of names
        if paths is None:
            raise ValueError(f"labels: '{spec}' is neither a fraction (1%, 10%, 0.05) nor all; a list of files "
                             f"needs an image-folder data module")
        if not Path(spec).is_file():
            raise FileNotFoundError(f"labels: list file '{spec}' does not exist")
        indices, source = resolve_names(paths, read_list(spec), f"'{spec}'"), f"file {spec}"
    elif spec in IMAGENET_LISTS and paths is not None and is_imagenet_layout(dataset):
        names = imagenet_list(spec)
        indices = resolve_names(paths, names, f"SimCLR's ImageNet {spec} list")
        source = f"SimCLR imagenet_subsets/{IMAGENET_LISTS[spec][:-3]} ({len(indices)} of its {len(names)} files here)"
    elif fraction >= 1.0:
        indices, source = list(range(len(labels))), "all labels"
    else:
        indices, source = balanced_subset(labels, fraction, seed), f"class-balanced {fraction:g} of each class"
    counts = torch.bincount(labels[indices]).tolist()
    record = {"labels": str(spec), "seed": int(seed), "source": source, "num_labelled": len(indices),
              "num_train": len(labels), "per_class": counts}
    return indices, record


class LabelledData(pl.LightningDataModule):
    """Training on the labelled subset ``labels`` of ``data``'s train split (``eval_split('train')``:
    no augmentation in the workers; the fine-tuner augments on the device), in the shuffled,
    resumable order of sslkit's training loader; validation and test on the val split through
    ``data.eval_loader``. The batch is ``data.batch_size``, or the whole subset where it is smaller."""

    def __init__(self, data: pl.LightningDataModule, labels: str = "all", seed: int = 0) -> None:
        super().__init__()
        self.data, self.spec, self.seed = data, labels, seed
        self.indices: list[int] | None = None
        self.record: dict | None = None
        self._sampler: ResumableSampler | None = None
        self._resume: tuple[int, int] | None = None

    def __getattr__(self, name):  # the wrapped module's contract (mean, std, decode, eval_split, ...)
        if name.startswith("_") or "data" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["data"], name)

    @property
    def batch_size(self) -> int:
        size = self.data.batch_size
        return min(size, len(self.indices)) if self.indices is not None else size

    def setup(self, stage: str | None = None) -> None:
        if self.indices is None:
            self.data.setup("validate" if stage in (None, "fit") else stage)
            self.indices, self.record = select_labelled(self.data.eval_split("train"), self.spec, self.seed)

    def train_set(self):
        self.setup()
        return Subset(self.data.eval_split("train"), self.indices)

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_set()
        self._sampler = ResumableSampler(len(dataset), seed_from_environment())
        if self._resume is not None:
            self._sampler.resume(*self._resume)
            self._resume = None
        workers = self.data.num_workers
        return DataLoader(dataset, batch_size=self.batch_size, sampler=self._sampler, drop_last=True,
                          num_workers=workers, pin_memory=getattr(self.data, "pin_memory", False),
                          collate_fn=collate_dropping_skipped, persistent_workers=workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self.data.eval_loader(self.data.eval_split("val"))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def state_dict(self) -> dict:
        trainer = self.trainer
        if trainer is None:
            return {"labels": self.spec, "seed": self.seed}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"labels": self.spec, "seed": self.seed, "epoch": trainer.current_epoch,
                "consumed": done * self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if "labels" in state and (str(state["labels"]), int(state["seed"])) != (str(self.spec), int(self.seed)):
            raise ValueError(f"the checkpoint was fine-tuned on labels {state['labels']} (seed {state['seed']}), "
                             f"this run asks for {self.spec} (seed {self.seed})")
        if "epoch" in state:
            self._resume = (int(state["epoch"]), int(state["consumed"]))
            if self._sampler is not None:
                self._sampler.resume(*self._resume)


# ----------------------------------------------------------------------------- parameter groups
def norm_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The affine weights and biases of every normalisation layer (BatchNorm, SyncBatchNorm,
    LayerNorm, GroupNorm) of ``module``."""
    return [p for m in module.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)]


def vit_layer_id(name: str, num_layers: int) -> int:
    """MAE ``util/lr_decay.py`` ``get_layer_id_for_vit``: tokens and patch embedding 0, block i
    i + 1, anything else (final norm, head) ``num_layers`` (= blocks + 1)."""
    if name in ("cls_token", "pos_embed", "dist_token", "reg_token") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def layer_decay_groups(model: nn.Module, layer_decay: float, prefix: str = "",
                       no_weight_decay: Sequence[str] = ("pos_embed", "cls_token", "dist_token", "reg_token")) -> list[dict]:
    """``model``'s (a timm ViT's) trainable parameters in MAE's layer-wise groups: one per
    (layer, decay or not), with ``lr_mult = layer_decay ** (L + 1 - layer)`` and
    ``weight_decay_mult`` 0 for 1-d tensors and the tokens."""
    num_layers = len(model.blocks) + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim == 1 or name in no_weight_decay)
        layer = vit_layer_id(name, num_layers)
        group = groups.setdefault((layer, decay), {
            "name": f"{prefix}layer_{layer}_{'decay' if decay else 'no_decay'}", "params": [],
            "lr_mult": layer_decay ** (num_layers - layer), "exclude": not decay})
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


# ----------------------------------------------------------------------------- the module
def load_or_build(ckpt_path: str, arch=None, ckpt_format="auto", branch=None, small_stem_padding=None,
                  features=None, last_n=None) -> nn.Module:
    """The backbone to fine-tune: ``load_backbone`` of ``ckpt_path``, or with ``random:NAME``
    the architecture ``NAME`` (timm or ``torchvision.<arch>``) at random initialisation."""
    if ckpt_path.startswith("random:"):
        from sslkit.nn.backbones import build_backbone

        name = ckpt_path[len("random:"):]
        kwargs = {} if features is None else {"features": features}
        if last_n is not None:
            kwargs["last_n"] = last_n
        small = small_stem_padding is not None
        say(f"sslkit: {name} at random initialisation")
        return build_backbone(name, small_images=small, small_stem_padding=small_stem_padding or 1, **kwargs)
    from sslkit.checkpoints import load_backbone_report

    backbone, report = load_backbone_report(ckpt_path, arch, ckpt_format, branch, small_stem_padding, features, last_n)
    say(f"sslkit: loaded {report.summary()}")
    return backbone


RESULT_FILE = "finetune.json"


def source_identity(ckpt_path: str) -> dict:
    """Which backbone a run fine-tunes: ``{"ckpt_path", "sha256"}`` of a file (the SHA-256 is
    what ``sslkit report`` matches checkpoints by), or ``{"ckpt_path": "random:NAME", "sha256": None}``."""
    if Path(ckpt_path).is_file():
        from sslkit.checkpoints import file_digest

        return {"ckpt_path": str(Path(ckpt_path).resolve()), "sha256": file_digest(ckpt_path)}
    return {"ckpt_path": ckpt_path, "sha256": None}


class FineTuner(pl.LightningModule):
    """A pretrained backbone and a linear classifier, trained with cross-entropy on labelled
    images (see the module docstring for ``train``, ``labels`` and ``layer_decay``).

    Views are made on the device: training a random-resized crop (``crop_scale``) and a
    horizontal flip, evaluation the evaluators' ``eval_view`` (resize, centre crop); both
    normalise with ``mean``/``std`` (default: the data module's). The random draws of every step
    come from a generator seeded by (run seed, step, rank), so a resumed run continues exactly.
    ``optim``: the recipe's optimiser and warm-up + cosine schedule (``OptimConfig``; the learning
    rate is batch-scaled as it says); the head's rate is ``head_lr_mult`` x the backbone's.
    ``milestones``: instead of warm-up + cosine, every rate x ``gamma`` at these epochs
    (SwAV ``eval_semisup.py``'s ``MultiStepLR``).
    ``num_classes``: default, from the training labels.
    """

    def __init__(
        self,
        ckpt_path: str,
        arch: str | None = None,
        ckpt_format: str = "auto",
        branch: str | None = None,
        small_stem_padding: int | None = None,
        features: str | None = None,
        last_n: int | None = None,
        train: TrainMode = "all",
        labels: str = "all",
        label_seed: int = 0,
        num_classes: int | None = None,
        optim: OptimConfig = OptimConfig(lr=0.1, weight_decay=0.0, lr_scaling="linear"),
        head_lr_mult: float = 1.0,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        layer_decay: float | None = None,
        head_init_std: float = 0.01,
        label_smoothing: float = 0.0,
        crop_size: int = 224,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        resize: int | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__()
        if train not in ("all", "batchnorm", "head"):
            raise ValueError(f"train must be all, batchnorm or head, got '{train}'")
        self.save_hyperparameters()
        self.optim = optim
        self.backbone = load_or_build(ckpt_path, arch, ckpt_format, branch, small_stem_padding, features, last_n)
        if layer_decay is not None and not getattr(self.backbone, "vit", False):
            raise ValueError(f"layer_decay needs a Vision Transformer; '{self.backbone.name}' is none")
        self.backbone.requires_grad_(train == "all").train(train != "head")
        if train == "batchnorm":
            trainable = norm_parameters(self.backbone)
            if not trainable:
                raise ValueError(f"train: batchnorm: '{self.backbone.name}' has no normalisation layers")
            for p in trainable:
                p.requires_grad_(True)
        self.classifier: nn.Linear | None = None
        if num_classes is not None:
            self._build_head(num_classes)
        self.train_view: View | None = None
        self.eval_view: View | None = None
        self.labelled: dict | None = None
        self.source = source_identity(ckpt_path)

    # -- construction that needs the data
    def _build_head(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.backbone.dim, num_classes)
        nn.init.normal_(self.classifier.weight, std=self.hparams.head_init_std)
        nn.init.zeros_(self.classifier.bias)
        self.hparams["num_classes"] = num_classes
        for name, k in (("train", 1), ("val", 1), ("test", 1), ("train", 5), ("val", 5), ("test", 5)):
            setattr(self, f"{name}_top{k}", MulticlassAccuracy(num_classes, top_k=min(k, num_classes), average="micro"))
        self.to(self.backbone_device())

    def backbone_device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule if self.trainer is not None else None
        if data is not None:
            data.setup(stage)
        if self.classifier is None:
            if data is None:
                raise ValueError("num_classes: give it, or fine-tune with a data module that has labels")
            labels = torch.cat([data.labels("train"), data.labels("val")])
            self._build_head(int(labels.max()) + 1)
        if data is not None and getattr(data, "record", None) is not None:
            self.labelled = dict(data.record)
        h = self.hparams
        mean = h.mean or (getattr(data, "mean", None) if data is not None else None) or (0.485, 0.456, 0.406)
        std = h.std or (getattr(data, "std", None) if data is not None else None) or (0.229, 0.224, 0.225)
        self.train_view = View([RandomResizedCrop(h.crop_size, tuple(h.crop_scale)), RandomHorizontalFlip(),
                                Normalize(mean, std)])
        self.eval_view = eval_view(h.crop_size, mean, std, h.resize)

    @rank_zero_only
    def on_fit_start(self) -> None:
        data = self.trainer.datamodule
        if self.trainer.log_dir and getattr(data, "record", None) is not None:
            folder = Path(self.trainer.log_dir)
            folder.mkdir(parents=True, exist_ok=True)
            record = dict(data.record, indices=data.indices)
            samples = getattr(data.data.eval_split("train"), "samples", None)
            if samples is not None:
                record["files"] = [str(Path(samples[i][0]).name) for i in data.indices]
            (folder / "labelled.json").write_text(json.dumps(record))
        if self.logger is not None and self.labelled is not None:  # hparams.yaml was written before setup
            self.logger.log_hyperparams({"labelled": self.labelled})
        say(f"sslkit: fine-tuning ({self.hparams.train}) on {data.record['num_labelled']} labelled images "
            f"({data.record['source']}, seed {data.record['seed']})"
            if getattr(data, "record", None) else f"sslkit: fine-tuning ({self.hparams.train})")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.labelled is not None:
            checkpoint["labelled"] = self.labelled

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._record_result("val")

    def on_test_epoch_end(self) -> None:
        self._record_result("test")

    @rank_zero_only
    def _record_result(self, split: str) -> None:
        """``finetune.json`` in the log folder: the backbone's source (path and SHA-256, so that
        ``sslkit report`` joins the result to that checkpoint), the mode, the labels drawn and the
        last ``split`` top-1/top-5 with the epoch and step they were taken at."""
        folder = self.trainer.log_dir
        metrics = self.trainer.callback_metrics
        if not folder or f"{split}/top1" not in metrics:
            return
        path = Path(folder) / RESULT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        h = self.hparams
        record = json.loads(path.read_text()) if path.is_file() else {}
        record.update({"source": self.source, "train": h.train, "labels": h.labels, "label_seed": h.label_seed,
                       "num_labelled": (self.labelled or {}).get("num_labelled")})
        record[split] = {"top1": float(metrics[f"{split}/top1"]), "top5": float(metrics[f"{split}/top5"]),
                         "epoch": self.current_epoch, "step": self.global_step}
        path.write_text(json.dumps(record, indent=2))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.hparams.train == "head":
            self.backbone.eval()
        return self

    # -- data on the device
    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        return to_device(batch, device)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        data = self.trainer.datamodule if self.trainer is not None else None
        batch = data.decode(batch, self.device) if data is not None else decode_batch(batch, "error", self.device)
        if "image" not in batch:  # every image of the batch unreadable (bad_images: skip)
            return batch
        if "label" not in batch:
            raise ValueError("fine-tuning needs labelled batches ('label'); this split has none")
        with torch.no_grad():
            if self.trainer is not None and self.trainer.training:
                self._seed_step()
                batch["ft_image"] = self.train_view(batch)["image"]
            else:
                batch["ft_image"] = self.eval_view(batch)["image"]
        return batch

    def _seed_step(self) -> None:
        trainer = self.trainer
        micro = batches_started(trainer) % max(1, trainer.accumulate_grad_batches)
        key = ((seed_from_environment() * 1_000_003 + self.global_step) * 1_009 + micro) * 1_013 + self.global_rank
        torch.manual_seed(key % (2 ** 63))

    # -- steps
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.train == "head":
            with torch.no_grad():
                features = self.backbone(images)
        else:
            features = self.backbone(images)
        return self.classifier(features)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        if "ft_image" not in batch:
            return None
        logits = self(batch["ft_image"])
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.hparams.label_smoothing)
        self.train_top1(logits, batch["label"])
        n = len(batch["label"])
        self.log("train/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
        self.log("train/top1", self.train_top1, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def _evaluate(self, batch: dict, split: str) -> None:
        if "ft_image" not in batch:
            return
        logits = self(batch["ft_image"])
        top1, top5 = getattr(self, f"{split}_top1"), getattr(self, f"{split}_top5")
        top1(logits, batch["label"])
        top5(logits, batch["label"])
        n = len(batch["label"])
        self.log(f"{split}/loss", F.cross_entropy(logits, batch["label"]), sync_dist=True, batch_size=n)
        self.log(f"{split}/top1", top1, prog_bar=True, batch_size=n)
        self.log(f"{split}/top5", top5, batch_size=n)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # -- optimisation
    def param_groups(self) -> list[dict]:
        h = self.hparams
        groups = []
        if h.layer_decay is not None:
            groups += layer_decay_groups(self.backbone.model, h.layer_decay, prefix="backbone/")
        else:
            params = [p for p in self.backbone.parameters() if p.requires_grad]
            if params:
                groups.append({"name": "backbone", "params": params})
        head = {"name": "head", "params": list(self.classifier.parameters()), "lr_mult": h.head_lr_mult}
        if h.layer_decay is not None:  # MAE: the head's weight decays, its bias not
            groups += [{**head, "name": "head", "params": [self.classifier.weight]},
                       {**head, "name": "head/bias", "params": [self.classifier.bias], "exclude": True}]
        else:
            groups.append(head)
        return groups

    def configure_optimizers(self):
        from sslkit.methods.method import Schedule

        trainer = self.trainer
        batches = training_batches(trainer)
        per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
        self.schedule = Schedule(int(trainer.estimated_stepping_batches), per_epoch)
        if self.hparams.milestones is None:
            return configure_optimization(self, self.optim, self.param_groups())
        from sslkit.methods.optim import build_optimizer, check_groups, global_batch_size

        groups = self.param_groups()
        check_groups(self, groups)
        optimizer = build_optimizer(groups, self.optim, global_batch_size(self) or self.optim.reference_batch_size)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.hparams.milestones), self.hparams.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
