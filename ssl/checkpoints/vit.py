"""Vision Transformer files: what their tensors prove, what they record, what loading assumes.

A ViT state_dict under timm's names (DINO's ``vision_transformer.py``, MoCo v3's ``vits.py``,
MAE's encoder and timm itself all use them) proves its width (``cls_token``), depth (the
``blocks.N`` indices), patch size (``patch_embed.proj.weight``) and position grid
(``pos_embed``), but not its number of attention heads: ``attn.qkv`` has the same shape for
6 heads as for 12. Timm's ``vit_small_patch16_224`` (DINO's and DeiT's ViT-S) has 6, MoCo v3's
``vit_small`` 12, so the same tensors give two different functions. The heads therefore come
from the architecture a file records (MoCo v3 ``arch``, DINO ``args.arch``, MAE and timm
``args.model``, sslkit ``hyper_parameters``); a name that disagrees with it, or with what the
tensors prove, is refused in one line, and where nothing records them the report says what was
assumed. A position grid that differs from the built model's is resampled on load and reported.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from .formats import CheckpointError, StateDict

# the standard ViT of each width, when a file records no architecture (heads: that model's)
STANDARD_WIDTHS = {192: "vit_tiny", 384: "vit_small", 768: "vit_base", 1024: "vit_large", 1280: "vit_huge"}


@dataclass(frozen=True)
class ViTShape:
    """What a ViT's tensors fix (``heads``: only where a model is at hand)."""

    width: int
    depth: int
    patch: int
    grid: tuple[int, int] | None
    heads: int | None = None

    def words(self) -> str:
        grid = f", {self.grid[0]}x{self.grid[1]} position grid" if self.grid else ""
        heads = f", {self.heads} heads" if self.heads else ""
        return f"{self.width} wide, {self.depth} blocks, patch {self.patch}{grid}{heads}"


@dataclass
class ViTRecord:
    """A ViT file's facts for the load report: the shape its tensors prove, the architecture it
    records (``recorded``, in ``recorded_words``, with ``heads``), the name to use
    (``suggestion``), and the model built (``built``, set when loading)."""

    file: ViTShape
    recorded: str | None
    recorded_words: str | None
    heads: int | None
    suggestion: str
    inferred: bool
    given: str | None
    built: ViTShape | None = None
    notes: list[str] = field(default_factory=list)


def file_shape(state: StateDict) -> ViTShape | None:
    """The shape a ViT state_dict proves, or ``None`` when ``state`` is no (plain-patch) ViT."""
    proj = state.get("patch_embed.proj.weight")
    if proj is None or proj.dim() != 4 or proj.shape[-1] != proj.shape[-2] or "cls_token" not in state:
        return None
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()})
    if depth == 0:
        return None
    return ViTShape(int(proj.shape[0]), depth, int(proj.shape[-1]), _grid(state))


def _grid(state: StateDict) -> tuple[int, int] | None:
    pos = state.get("pos_embed")
    if pos is None or pos.dim() != 3:
        return None
    prefix = 1 + (state["reg_token"].shape[1] if "reg_token" in state else 0)
    for tokens in (pos.shape[1] - prefix, pos.shape[1]):  # class token embedded, or not (no_embed_class)
        side = math.isqrt(max(tokens, 0))
        if side and side * side == tokens:
            return side, side
    return None


def model_shape(model: VisionTransformer) -> ViTShape:
    attn = model.blocks[0].attn
    return ViTShape(int(model.embed_dim), len(model.blocks), int(model.patch_embed.patch_size[0]),
                    tuple(int(g) for g in model.patch_embed.grid_size), getattr(attn, "num_heads", None))


_SHAPES: dict[str, ViTShape | None] = {}


def name_shape(name: str, kwargs: dict | None = None) -> ViTShape | None:
    """The shape of the timm ViT ``name`` built with ``kwargs`` (on the meta device, cached);
    ``None`` for a name that is not a timm ViT."""
    key = f"{name} {sorted((kwargs or {}).items())!r}"
    if key not in _SHAPES:
        shape = None
        if timm.is_model(name):
            try:
                with torch.device("meta"):
                    model = timm.create_model(name, num_classes=0, **(kwargs or {}))
                shape = model_shape(model) if isinstance(model, VisionTransformer) else None
            except Exception:  # noqa: BLE001 - not buildable with these kwargs: no facts, the build will say why
                shape = None
        _SHAPES[key] = shape
    return _SHAPES[key]


def standard_name(shape: ViTShape) -> str | None:
    """The timm ViT of ``shape``'s width (its patch size if timm has that variant)."""
    size = STANDARD_WIDTHS.get(shape.width)
    if size is None:
        return None
    candidates = [f"{size}_patch{shape.patch}_224", f"{size}_patch16_224", f"{size}_patch14_224"]
    return next((n for n in candidates if timm.is_model(n)), None)


def proven_kwargs(shape: ViTShape, named: ViTShape | None, grid_only: bool = False) -> dict:
    """Constructor kwargs that make the model ``named`` describes have the file's ``shape``."""
    if named is None:
        return {}
    kwargs = {} if grid_only else {k: v for k, v, d in (("embed_dim", shape.width, named.width),
                                                         ("depth", shape.depth, named.depth),
                                                         ("patch_size", shape.patch, named.patch)) if v != d}
    if shape.grid and named.grid:
        size, default = shape.grid[0] * shape.patch, named.grid[0] * named.patch
        if shape.grid[0] == shape.grid[1] and size != default:
            kwargs["img_size"] = size
    return kwargs


def recorded_words(format_name: str, checkpoint: dict) -> str | None:
    """Where the file records its architecture, in its own words."""
    args = checkpoint.get("args")
    args = args if isinstance(args, argparse.Namespace) else None
    if format_name == "mocov3":
        return f"MoCo v3 arch '{checkpoint.get('arch')}'"
    if format_name == "dino" and args is not None:
        return f"DINO args.arch '{getattr(args, 'arch', None)}', patch_size {getattr(args, 'patch_size', 16)}"
    if format_name in ("timm", "plain") and args is not None:
        return f"args.model '{getattr(args, 'model', None)}'"
    if format_name == "sslkit":
        return "sslkit hyper_parameters"
    return None


def _with_kwargs(name: str, kwargs: dict) -> str:
    return f"{name} with kwargs {kwargs}" if kwargs else name


def resolve_vit(format_name: str, checkpoint: dict, state: StateDict, source: str, given: str | None,
                recorded: str | None, recorded_kwargs: dict | None) -> tuple[str, dict, ViTRecord] | None:
    """For a ViT file: the name to build, its kwargs and the record of what the file proves and
    records; ``None`` when ``state`` is not a ViT."""
    shape = file_shape(state)
    if shape is None:
        return None
    recorded_kwargs = dict(recorded_kwargs or {})
    words = recorded_words(format_name, checkpoint) if recorded else None
    heads = None
    if recorded is not None:
        named = name_shape(recorded, recorded_kwargs)
        if named is None:
            raise CheckpointError(
                f"'{source}' records its architecture as {words or recorded} ({recorded}), which is no ViT sslkit "
                f"builds, while its tensors are a ViT ({shape.words()}): pass arch= a timm ViT with the same "
                f"layers and heads")
        base, heads = recorded, named.heads
    else:
        base = standard_name(shape)
        if base is None and given is None:
            raise CheckpointError(
                f"'{source}' holds a ViT ({shape.words()}) and records no architecture, and no standard ViT is "
                f"{shape.width} wide: pass arch= a timm ViT name (--arch on the command line)")
    suggestion_kwargs = {**recorded_kwargs, **proven_kwargs(shape, name_shape(base, recorded_kwargs))} if base else {}
    record = ViTRecord(shape, recorded, words, heads, _with_kwargs(base, suggestion_kwargs) if base else "",
                       inferred=given is None and recorded is None, given=given)
    if given is not None:  # the user's name: built as named, at the file's position grid
        return given, proven_kwargs(shape, name_shape(given), grid_only=True), record
    return base, suggestion_kwargs, record


def _refusal(record: ViTRecord, built: ViTShape | None, name: str, source: str) -> str | None:
    """One line when the model ``name`` (of shape ``built``; ``None``: not a timm ViT) cannot hold the file."""
    shape = record.file
    use = f"use {record.suggestion} (arch= / --arch / backbone.name)" if record.suggestion else \
        "pass a timm ViT of that shape"
    proof = f"recorded as {record.recorded_words}: {record.recorded}" if record.recorded else "proven by its tensors"
    if built is None:
        return (f"'{source}' holds a ViT ({shape.words()}; {proof}) but {name} is not a timm Vision Transformer: "
                f"{use}")
    if (built.width, built.depth, built.patch) != (shape.width, shape.depth, shape.patch):
        return (f"'{source}' holds a ViT {shape.width} wide with {shape.depth} blocks and patch {shape.patch} ({proof}) "
                f"but {name} is {built.width} wide with {built.depth} blocks and patch {built.patch}: {use}")
    if record.heads is not None and built.heads != record.heads:
        return (f"'{source}' records its architecture ({record.recorded_words}: {record.recorded}, {record.heads} "
                f"attention heads) but {name} has {built.heads} heads: the tensors have the same shapes, the features "
                f"differ; {use}")
    return None


def precheck(record: ViTRecord, name: str, kwargs: dict, source: str) -> None:
    """The refusal of ``fit_state``, before the model is built (from its shape on the meta device)."""
    built = name_shape(name, kwargs)
    message = _refusal(record, built, name, source) if built is not None else None
    if message:
        raise CheckpointError(message)


def fit_state(model, state: StateDict, record: ViTRecord, name: str, source: str) -> StateDict:
    """Check the built ``model`` against what the file proves and records (one-line
    ``CheckpointError`` otherwise), note what was assumed, and resample the position embedding
    to the model's grid. Returns the state to load."""
    shape = record.file
    built = model_shape(model) if isinstance(model, VisionTransformer) else None
    message = _refusal(record, built, name, source)
    if message:
        raise CheckpointError(message)
    record.built = built
    if record.heads is None:
        if record.inferred:
            moco = "; MoCo v3's ViT-S has 12: arch='mocov3_vit_small'" if shape.width == 384 else ""
            record.notes.append(
                f"the file does not record its attention heads: assumed {built.heads}, as {name} has ({shape.width} "
                f"wide, like the DINO, DeiT and MAE ViTs of that width){moco}; pass arch= to choose")
        else:
            record.notes.append(f"the file does not record its attention heads: {built.heads}, those of {name} as named")
    return _resampled(model, state, record)


def _resampled(model: VisionTransformer, state: StateDict, record: ViTRecord) -> StateDict:
    pos, target, old = state.get("pos_embed"), getattr(model, "pos_embed", None), record.file.grid
    if pos is None or target is None or old is None or tuple(pos.shape) == tuple(target.shape):
        return state
    new = tuple(int(g) for g in model.patch_embed.grid_size)
    prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    if pos.shape[-1] != target.shape[-1] or pos.shape[1] - old[0] * old[1] != prefix:
        return state  # not a grid this model's embedding resamples: the strict load names the mismatch
    resized = resample_abs_pos_embed(pos, new_size=list(new), old_size=list(old), num_prefix_tokens=prefix,
                                     interpolation="bicubic", antialias=False)
    patch = record.file.patch
    record.notes.append(
        f"position embedding resampled from the file's {old[0]}x{old[1]} grid ({old[0] * patch} px) to the model's "
        f"{new[0]}x{new[1]} ({new[0] * patch} px): bicubic, timm resample_abs_pos_embed, as DINO and MAE interpolate it")
    return {**state, "pos_embed": resized}
