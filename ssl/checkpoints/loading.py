"""Backbones from any supported checkpoint, loaded strictly.

``load_backbone(source, arch=None, ckpt_format="auto", branch=None, small_stem_padding=None)``
returns an ``nn.Module`` with the ``build_backbone`` contract (normalised images -> pooled
features, ``.dim``, ``.name``). Classifier and SSL-head keys are dropped and reported; any
other missing or unexpected key, or a tensor of the wrong shape, is an error that names it.
A loader must never succeed with a different network: the branch taken (online or
momentum/teacher/EMA) is reported, and a small-image stem whose padding the file does not
record is an error until the caller names it.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torchvision
from torch import nn

from sslkit.legacy import FOLDED as LEGACY_BACKBONE_KEYS
from sslkit.legacy import accepts_old_names
from sslkit.nn.backbones import TORCHVISION_PREFIX, Backbone, build_backbone

from .formats import BRANCH_WORDS, FORMATS_BY_NAME, CheckpointError, Format, StateDict, detect_format, sslkit_backbone
from .reading import read_checkpoint
from .vit import ViTRecord, fit_state, precheck, resolve_vit

HEAD_PREFIXES = ("fc.", "head.", "heads.", "classifier.", "projection_head.", "prototypes.", "predictor.",
                 "projector.", "head_drop.", "extra.", "decoder_", "mask_token")  # MAE's decoder
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".tar", ".bin", ".safetensors", ".pkl", ".torch", ".pickle")


@dataclass
class LoadReport:
    """What loading did: the format, the branch taken (and the others there were), the
    architecture (and whether it was inferred), the stem, and the head keys dropped."""

    source: str
    format: str
    arch: str
    branch: str = "online"
    branch_word: str = "network"
    branches: dict[str, str] = field(default_factory=dict)
    default_branch: str = "online"
    arch_inferred: bool = False
    small_stem_padding: int | None = None
    dropped: list[str] = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)  # constructor kwargs the file proves (a ViT's depth, img_size...)
    vit: ViTRecord | None = None  # a ViT's shape, recorded architecture, and what loading assumed or resampled

    @property
    def notes(self) -> list[str]:
        """What loading assumed or changed (a ViT's heads, its resampled position embedding)."""
        return self.vit.notes if self.vit else []

    def summary(self) -> str:
        stem = "standard stem" if self.small_stem_padding is None else \
            f"small-image stem (3x3 stride-1 conv1, padding {self.small_stem_padding}, no max-pool)"
        if self.vit is not None and self.vit.built is not None:
            built = self.vit.built
            stem = f"ViT body ({built.heads} heads, patch {built.patch}, {built.grid[0]}x{built.grid[1]} grid)"
        how = "as named" if self.vit is not None and self.vit.given else \
            "inferred from the weights" if self.arch_inferred else "recorded"
        arch = f"{self.arch}{f' {self.kwargs}' if self.kwargs else ''} ({how})"
        text = f"'{self.source}': {self.format} format, the {self.branch_word}"
        if len(self.branches) > 1:
            default = " (this format's default)" if self.branch == self.default_branch else ""
            others = ", ".join(f"branch='{b}' for the {w}" for b, w in self.branches.items() if b != self.branch)
            text += f" ({self.branch} branch{default}; {others})"
        text += f", as {arch} with a {stem}"
        if self.dropped:
            text += f"; dropped {len(self.dropped)} head tensors ({', '.join(self.dropped[:3])}{', ...' if len(self.dropped) > 3 else ''})"
        return text + "".join(f"\n  note: {note}" for note in self.notes)


def infer_resnet_arch(state: StateDict) -> str | None:
    """The torchvision ResNet whose keys and shapes ``state`` has (resnet18 ... resnet152,
    wide_resnet50_2/101_2), or ``None``."""
    if "layer1.0.conv1.weight" not in state:
        return None
    blocks = []
    for layer in range(1, 5):
        indices = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{layer}.") and k.split(".")[1].isdigit()}
        blocks.append(len(indices))
    bottleneck = "layer1.0.conv3.weight" in state
    width = state["layer1.0.conv1.weight"].shape[0]
    table = {(False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34",
             (True, (3, 4, 6, 3)): "resnet50", (True, (3, 4, 23, 3)): "resnet101", (True, (3, 8, 36, 3)): "resnet152"}
    name = table.get((bottleneck, tuple(blocks)))
    if name in ("resnet50", "resnet101") and width == 128:
        name = f"wide_{name}_2"
    return f"{TORCHVISION_PREFIX}{name}" if name else None


def load_state_strict(backbone: Backbone, state: StateDict, source: str) -> list[str]:
    """Load ``state`` into ``backbone.model``; return the dropped head keys."""
    expected = backbone.model.state_dict()
    dropped = [k for k in state if k not in expected and k.startswith(HEAD_PREFIXES)]
    unexpected = [k for k in state if k not in expected and k not in dropped]
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    for key, value in state.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"'{source}' does not match {backbone.name}: tensor '{key}' has shape {tuple(value.shape)} in "
                f"the checkpoint but {tuple(expected[key].shape)} in the model (another architecture?"
                f"{' a small-image stem?' if key.startswith('conv1') else ''})"
            )
    if missing or unexpected:
        raise CheckpointError(
            f"'{source}' does not match {backbone.name}: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    filled = {k: v for k, v in expected.items() if k not in state}  # num_batches_tracked only
    backbone.model.load_state_dict({**filled, **{k: v for k, v in state.items() if k in expected}}, strict=True)
    return dropped


def _format(checkpoint: dict, source: str, ckpt_format: str) -> Format:
    if ckpt_format == "auto":
        return detect_format(checkpoint, source)
    if ckpt_format not in FORMATS_BY_NAME:
        raise ValueError(f"unknown checkpoint format '{ckpt_format}' (ckpt_format); choose auto or one of "
                         f"{', '.join(FORMATS_BY_NAME)}")
    spec = FORMATS_BY_NAME[ckpt_format]
    if not spec.detect(checkpoint):
        raise CheckpointError(f"'{source}' does not have the key layout of format '{ckpt_format}': {spec.description}")
    return spec


def _branch(spec: Format, checkpoint: dict, source: str, branch: str | None) -> tuple[str, str, dict]:
    branches = spec.branches(checkpoint)
    words = {name: b.word for name, b in branches.items()}
    if branch is None:
        chosen = spec.default_branch(checkpoint)
    else:
        chosen = BRANCH_WORDS.get(branch.lower())
        if chosen is None:
            raise ValueError(f"unknown branch '{branch}': use online or momentum (or student/teacher, query/key, "
                             f"model/ema, online/target)")
    if chosen not in branches:
        raise CheckpointError(f"'{source}' ({spec.name} format) holds no {chosen} network, only: "
                              f"{', '.join(f'{n} ({w})' for n, w in words.items())}")
    return chosen, words[chosen], words


def _stem(spec: Format, checkpoint: dict, state: StateDict, source: str, requested: int | None) -> int | None:
    """The small-stem padding to build, ``None`` for a standard stem."""
    recorded = spec.small_stem_padding(checkpoint)
    conv1 = state.get("conv1.weight")
    small = recorded is not None or (conv1 is not None and conv1.dim() == 4 and tuple(conv1.shape[-2:]) == (3, 3))
    if not small:
        return None
    if recorded is not None and requested is not None and recorded != requested:
        raise CheckpointError(f"'{source}' records a small-image stem with padding {recorded}, not the "
                              f"small_stem_padding={requested} asked for")
    padding = recorded if recorded is not None else requested
    if padding is None:
        raise CheckpointError(
            f"'{source}' has a small-image ResNet stem (3x3 stride-1 conv1, no max-pool) and the file does not "
            f"record its padding, which changes every feature: pass small_stem_padding=1 (MoCo's CIFAR demo, "
            f"sslkit) or 2 (solo-learn) (--small_stem_padding on the command line)")
    return padding


def resolve(checkpoint: dict, source: str, arch: str | None = None, ckpt_format: str = "auto",
            branch: str | None = None, small_stem_padding: int | None = None) -> tuple[StateDict, LoadReport]:
    """The backbone state of ``checkpoint`` and the report of how it was read."""
    spec = _format(checkpoint, source, ckpt_format)
    chosen, word, words = _branch(spec, checkpoint, source, branch)
    state = spec.branches(checkpoint)[chosen].extract(checkpoint)
    if not state:
        raise CheckpointError(f"'{source}' ({spec.name} format) has no weights in its {word}")
    inferred, kwargs, record = False, {}, None
    recorded = spec.arch(checkpoint)
    vit = resolve_vit(spec.name, checkpoint, state, source, arch, recorded,
                      sslkit_backbone(checkpoint).get("kwargs") if spec.name == "sslkit" else None)
    if vit is not None:
        (arch, kwargs, record), inferred = vit, vit[2].inferred
    arch = arch or recorded
    if arch is None:
        arch, inferred = infer_resnet_arch(state), True
    if arch is None:
        raise CheckpointError(
            f"'{source}' ({spec.name} format) does not record its architecture and it is not a torchvision "
            f"ResNet: pass arch=, e.g. 'torchvision.resnet50' or a timm name (--arch on the command line)")
    padding = _stem(spec, checkpoint, state, source, small_stem_padding)
    report = LoadReport(source, spec.name, arch, chosen, word, words, spec.default_branch(checkpoint), inferred,
                        padding, kwargs=kwargs, vit=record)
    return state, report


def _hub_or_missing(source: str, small_images: bool) -> Backbone:
    """A name that is not a file: a timm/torchvision model name (weights from the hub), or an error."""
    looks_like_file = source.endswith(CHECKPOINT_SUFFIXES) or "/" in source or "\\" in source
    name = source.removeprefix(TORCHVISION_PREFIX)
    known = timm.is_model(source) or (source.startswith(TORCHVISION_PREFIX)
                                      and name in torchvision.models.list_models(module=torchvision.models))
    if looks_like_file or not known:
        candidates = [str(p) for p in Path(".").glob(f"*{Path(source).suffix}")] if looks_like_file else timm.list_models()
        close = difflib.get_close_matches(source, candidates, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        what = "checkpoint file" if looks_like_file else "file, nor a timm or torchvision.<arch> model name,"
        raise FileNotFoundError(f"'{source}' is no {what} that exists.{hint}")
    return build_backbone(source, small_images=small_images, pretrained=True)


@accepts_old_names(format="ckpt_format")
def load_backbone_report(
    source: str | Path, arch: str | None = None, ckpt_format: str = "auto", branch: str | None = None,
    small_stem_padding: int | None = None, features: str | None = None, last_n: int | None = None,
) -> tuple[Backbone, LoadReport]:
    """``load_backbone`` that also returns the ``LoadReport``."""
    source = str(source)
    if not Path(source).exists():
        if ckpt_format not in ("auto", "hub"):
            raise FileNotFoundError(f"checkpoint '{source}' does not exist")
        backbone = _hub_or_missing(source, small_stem_padding is not None)
        return backbone.eval(), LoadReport(source, "hub", source)
    checkpoint = read_checkpoint(source)
    state, report = resolve(checkpoint, source, arch, ckpt_format, branch, small_stem_padding)
    recorded = sslkit_backbone(checkpoint) if report.format == "sslkit" else {}
    kwargs = {**(recorded.get("kwargs") or {}), **report.kwargs}
    if report.vit is not None:
        precheck(report.vit, report.arch, kwargs, source)
    backbone = build_backbone(report.arch, small_images=report.small_stem_padding is not None,
                              small_stem_padding=report.small_stem_padding or 1,
                              features=features or recorded.get("features"),
                              last_n=last_n or recorded.get("last_n") or 4, **kwargs)
    if report.vit is not None:
        state = fit_state(backbone.model, state, report.vit, report.arch, source)
    report.dropped = load_state_strict(backbone, state, source)
    return backbone.eval(), report


@accepts_old_names(format="ckpt_format")
def load_backbone(
    source: str | Path, arch: str | None = None, ckpt_format: str = "auto", branch: str | None = None,
    small_stem_padding: int | None = None, features: str | None = None, last_n: int | None = None,
) -> Backbone:
    """A pretrained backbone from ``source``: a checkpoint file in any supported format
    (``FORMATS``; ``auto`` detects it from the keys), or, when no such file exists, a timm
    model name (or ``torchvision.<arch>``) whose published weights are downloaded.

    ``arch``: the architecture (``torchvision.resnet50``, a timm name) where the file does
    not record it (torchvision ResNets are recognised from their weights). ``branch``:
    ``online`` or ``momentum`` (or the project's word: student/teacher, query/key,
    model/ema, online/target); each format has a default, reported. ``small_stem_padding``:
    the padding of a 3x3 small-image stem where the file does not record it. ``features``,
    ``last_n``: what a ViT gives (``cls``, ``avgpool``, ``last_n_cls``; ``sslkit.nn.backbones.Backbone``),
    default what an sslkit checkpoint records, else ``cls``.
    """
    return load_backbone_report(source, arch, ckpt_format, branch, small_stem_padding, features, last_n)[0]


@accepts_old_names(format="ckpt_format")
def load_backbone_weights(backbone: Backbone, source: str | Path, ckpt_format: str = "auto",
                          branch: str | None = None) -> LoadReport:
    """Initialise an existing ``backbone`` (of the right architecture and stem) from ``source``."""
    source = str(source)
    checkpoint = read_checkpoint(source)
    state, report = resolve(checkpoint, source, backbone.name, ckpt_format, branch, backbone.small_stem_padding)
    if report.small_stem_padding != backbone.small_stem_padding:
        raise CheckpointError(f"'{source}' has a {'standard' if report.small_stem_padding is None else 'small-image'} "
                              f"stem but the model was built with "
                              f"{'small_images: false' if backbone.small_stem_padding is None else 'small_images: true'}")
    report.kwargs = {}  # the backbone is built already
    if report.vit is not None:
        state = fit_state(backbone.model, state, report.vit, backbone.name, source)
    report.dropped = load_state_strict(backbone, state, source)
    return report


def method_class(checkpoint: dict, source: str | Path) -> type:
    """The method class an sslkit checkpoint records. A method of the user's own module that is
    not importable from here (another working directory) is imported from the file the
    checkpoint records, where that file still exists; otherwise one line says what to do."""
    class_path = checkpoint["sslkit_class_path"]
    module_name, _, class_name = class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name.split(".")[0] and err.name != module_name:
            raise
        module = _module_from_file(module_name, checkpoint.get("sslkit_class_file"))
        if module is None:
            raise CheckpointError(
                f"'{source}' was written by {class_path}, and module '{module_name}' is not importable here: run from "
                f"the folder that holds {module_name.replace('.', '/')}.py or add that folder to PYTHONPATH") from None
    return getattr(module, class_name)


def _module_from_file(name: str, path: str | None):
    """The module ``name`` executed from ``path`` (and kept in ``sys.modules``), or None."""
    import importlib.util
    import sys

    if not path or not Path(path).is_file():
        return None
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_projector(source: str | Path) -> nn.Module | None:
    """The projector of an sslkit checkpoint (every method has one, ``SSLMethod``), from the
    method the checkpoint records, loaded strictly; ``None`` for other formats."""
    checkpoint = read_checkpoint(source)
    class_path = checkpoint.get("sslkit_class_path")
    if class_path is None:
        return None
    cls = method_class(checkpoint, source)
    class_name = cls.__name__
    kwargs = {k: v for k, v in (checkpoint.get("hyper_parameters") or {}).items()
              if k not in ("augment", "backbone_weights") and not k.startswith("_")}
    kwargs["backbone"] = {**sslkit_backbone(checkpoint), "ckpt_path": None}  # its weights come from the file itself
    kwargs = {k: v for k, v in kwargs.items() if k not in LEGACY_BACKBONE_KEYS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # a 0.2 checkpoint's names: nothing for the user to change
        model = cls(**kwargs)
    model.on_load_checkpoint(checkpoint)  # parts a method builds from the data (its online classifier)
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"'{source}' does not fit the {class_name} it records: {err}") from err
    return model.projector.eval()


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (the identity of a checkpoint for caches)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
