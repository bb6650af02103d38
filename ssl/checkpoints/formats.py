"""Checkpoint layouts researchers actually have, recognised by their keys.

A ``Format`` turns a loaded checkpoint into the flat state_dict of one backbone under
torchvision/timm names (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...). Files that
hold several networks (online/target, query/key, student/teacher, model/EMA) name them as
*branches*: ``online`` and ``momentum`` everywhere, plus the project's own word for each.
Each format says which branch its project evaluates by default; the loader reports the
branch it took. Classifier and head keys survive this step; the loader drops and reports them.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

StateDict = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint that cannot give what was asked of it; the message names the file."""


def tensor_dict(obj) -> StateDict | None:
    """``obj`` if it is a non-empty dict of tensors, else ``None``."""
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        return obj
    return None


def main_state_dict(checkpoint: dict) -> StateDict | None:
    """The state_dict a checkpoint wraps: itself, or under ``state_dict`` / ``model``."""
    for candidate in (checkpoint, checkpoint.get("state_dict"), checkpoint.get("model")):
        found = tensor_dict(candidate)
        if found is not None:
            return found
    return None


def strip(state: StateDict | None, prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in (state or {}).items() if k.startswith(prefix)}


def has(state: StateDict | None, prefix: str) -> bool:
    return state is not None and any(k.startswith(prefix) for k in state)


RESNET_CHILDREN = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]


def from_sequential(state: StateDict, prefix: str = "") -> StateDict:
    """Keys of ``nn.Sequential(*resnet.children()[:-1])`` (``4.0.conv1.weight``) under
    torchvision names (``layer1.0.conv1.weight``); indices past the ResNet (a head a
    project appended to the Sequential) keep their index and are reported as extra."""
    out = {}
    for key, value in strip(state, prefix).items():
        index, _, rest = key.partition(".")
        known = index.isdigit() and int(index) < len(RESNET_CHILDREN)
        out[f"{RESNET_CHILDREN[int(index)]}.{rest}" if known else f"extra.{key}"] = value
    return out


def torchvision_arch(name) -> str | None:
    if not isinstance(name, str) or not name:
        return None
    return name if name.startswith("torchvision.") else f"torchvision.{name}"


@dataclass(frozen=True)
class Branch:
    """One network of a checkpoint: how to get its backbone state, and what the project calls it."""

    extract: Callable[[dict], StateDict]
    word: str


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    files: str
    detect: Callable[[dict], bool]
    branches: Callable[[dict], dict[str, Branch]]
    default_branch: Callable[[dict], str] = lambda c: "online"
    arch: Callable[[dict], str | None] = lambda c: None
    small_stem_padding: Callable[[dict], int | None] = lambda c: None
    fallback: bool = False
    notes: dict = field(default_factory=dict)


def single(extract: Callable[[dict], StateDict], word: str = "network") -> Callable[[dict], dict[str, Branch]]:
    return lambda c: {"online": Branch(extract, word)}


def two(online: tuple[Callable[[dict], StateDict], str], momentum: tuple[Callable[[dict], StateDict], str]):
    """Branches ``online`` and ``momentum`` (the latter only when the file holds it)."""
    def branches(c: dict) -> dict[str, Branch]:
        found = {"online": Branch(*online)}
        if momentum[0](c):
            found["momentum"] = Branch(*momentum)
        return found
    return branches


# ----------------------------------------------------------------------------- sslkit
def _sslkit_state(c: dict) -> StateDict | None:
    return tensor_dict(c.get("state_dict"))


def sslkit_backbone(c: dict) -> dict:
    """The backbone an sslkit checkpoint records: ``hyper_parameters['backbone']`` as a
    ``BackboneConfig``'s fields, or 0.2's flat ``backbone``/``small_images``/... keys."""
    from sslkit.legacy import fold

    hparams = fold(dict(c.get("hyper_parameters") or {}), {}, note=lambda old, new: None)
    backbone = hparams.get("backbone")
    return {"name": backbone} if isinstance(backbone, str) else dict(backbone or {})


def _sslkit_detect(c: dict) -> bool:
    return "backbone" in (c.get("hyper_parameters") or {}) and has(_sslkit_state(c), "backbone.model.")


def _sslkit_momentum(c: dict) -> StateDict:
    return strip(_sslkit_state(c), "momentum_backbone.model.")


def _sslkit_stem(c: dict) -> int | None:
    backbone = sslkit_backbone(c)
    return int(backbone.get("small_stem_padding", 1)) if backbone.get("small_images") else None


# ----------------------------------------------------------------------------- DINO
def _dino_part(c: dict, part: str) -> StateDict:
    state = tensor_dict(c.get(part))
    return strip(state, "module.backbone.") or strip(state, "backbone.")


def _dino_arch(c: dict) -> str | None:
    args = c.get("args")
    arch = getattr(args, "arch", None) if isinstance(args, argparse.Namespace) else None
    if not arch:
        return None
    if arch.startswith("vit_"):  # DINO's ViT follows timm's key names; vit_tiny/small/base have timm's heads
        import timm

        name = f"{arch}_patch{getattr(args, 'patch_size', 16)}_224"
        return name if timm.is_model(name) else f"{arch}_patch16_224"  # the patch size then comes from the weights
    return torchvision_arch(arch)


# ----------------------------------------------------------------------------- MoCo v3
def _mocov3_arch(c: dict) -> str | None:
    """``arch`` as moco-v3 ``main_moco.py`` records it: a torchvision ResNet, or one of its
    ``vits.py`` ViTs, registered in timm as ``mocov3_<arch>`` (``vit_small`` has 12 heads)."""
    arch = c.get("arch")
    if not isinstance(arch, str) or not arch:
        return None
    if arch.startswith("vit_"):
        return f"mocov3_{arch}"
    return torchvision_arch(arch) if arch.startswith("resnet") else None


# ----------------------------------------------------------------------------- MAE
def _mae_arch(c: dict) -> str | None:
    """MAE ``main_pretrain.py``'s ``args.model`` (``mae_vit_base_patch16``) as the timm ViT of
    its encoder (same widths, depths and heads: ``vit_base_patch16_224``)."""
    args = c.get("args")
    model = getattr(args, "model", None) if isinstance(args, argparse.Namespace) else None
    match = re.fullmatch(r"mae_(vit_[a-z]+_patch\d+)(_dec\w+)?", model or "")
    return f"{match[1]}_224" if match else None


# ----------------------------------------------------------------------------- timm
def _timm_detect(c: dict) -> bool:
    return tensor_dict(c.get("state_dict")) is not None and (
        tensor_dict(c.get("state_dict_ema")) is not None or isinstance(c.get("args"), argparse.Namespace))


def _timm_part(c: dict, key: str) -> StateDict:
    state = tensor_dict(c.get(key)) or {}
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def _timm_arch(c: dict) -> str | None:
    args = c.get("args")
    name = getattr(args, "model", None) if isinstance(args, argparse.Namespace) else None
    return name or (c.get("arch") if isinstance(c.get("arch"), str) else None)


# ----------------------------------------------------------------------------- BYOL ports
LUCIDRAINS = ("learner.", "")  # a Lightning module holding `learner = BYOL(net)`, or the learner itself


def _lucidrains_prefix(c: dict) -> str | None:
    state = main_state_dict(c)
    return next((p for p in LUCIDRAINS if has(state, f"{p}online_encoder.net.")), None)


def _lucidrains_online(c: dict) -> StateDict:
    state, prefix = main_state_dict(c), _lucidrains_prefix(c)
    return strip(state, f"{prefix}net.") or strip(state, f"{prefix}online_encoder.net.")


def _lucidrains_target(c: dict) -> StateDict:
    prefix = _lucidrains_prefix(c)
    return strip(main_state_dict(c), f"{prefix}target_encoder.net.") if prefix is not None else {}


def _yaox12_prefix(c: dict) -> str | None:
    state = tensor_dict(c.get("model"))
    return next((p for p in ("module.", "") if has(state, f"{p}online_network.encoder.")), None)


# ----------------------------------------------------------------------------- solo-learn
def _solo_state(c: dict) -> StateDict | None:
    return tensor_dict(c.get("state_dict"))


def _solo_detect(c: dict) -> bool:
    state = _solo_state(c)
    return has(state, "classifier.") and (has(state, "backbone.conv1.") or has(state, "encoder.conv1."))


def _solo_name(c: dict) -> str:
    return "backbone" if has(_solo_state(c), "backbone.conv1.") else "encoder"  # "encoder" before Dec 2021


def _solo_stem(c: dict) -> int | None:
    conv1 = strip(_solo_state(c), f"{_solo_name(c)}.").get("conv1.weight")
    return 2 if conv1 is not None and tuple(conv1.shape[-2:]) == (3, 3) else None


# ----------------------------------------------------------------------------- lightly
def _lightly_benchmark_roles(c: dict) -> tuple[str, str | None, str, str]:
    """(online prefix, momentum prefix, default branch, words) of lightly's benchmark modules:
    DINO keeps its teacher in ``backbone`` and the student in ``student_backbone``."""
    state = main_state_dict(c)
    if has(state, "student_backbone."):
        return "student_backbone.", "backbone.", "momentum", "student/teacher"
    for momentum in ("teacher_backbone.", "key_backbone."):
        if has(state, momentum):
            return "backbone.", momentum, "online", f"backbone/{momentum[:-1]}"
    return "backbone.", None, "online", "backbone"


def _lightly_benchmark_branches(c: dict) -> dict[str, Branch]:
    online, momentum, _, words = _lightly_benchmark_roles(c)
    state = main_state_dict(c)
    found = {"online": Branch(lambda c: strip(state, online), words.split("/")[0])}
    if momentum:
        found["momentum"] = Branch(lambda c: strip(state, momentum), words.split("/")[1])
    return found


def _vissl_trunk(c: dict) -> StateDict | None:
    try:
        return tensor_dict(c["classy_state_dict"]["base_model"]["model"]["trunk"])
    except (KeyError, TypeError):
        return None


def _plain_detect(c: dict) -> bool:
    state = main_state_dict(c)
    return state is not None and any(k.startswith(("conv1.", "patch_embed.", "stem.", "features.")) for k in state)


FORMATS: list[Format] = [
    Format("sslkit", "an sslkit checkpoint of any method (backbone.model.*, hyper_parameters record the backbone)",
           "runs/<name>/version_N/checkpoints/last.ckpt", _sslkit_detect,
           two((lambda c: strip(_sslkit_state(c), "backbone.model."), "backbone"),
               (_sslkit_momentum, "momentum backbone")),
           default_branch=lambda c: c.get("sslkit_evaluated_branch", "online"),
           arch=lambda c: sslkit_backbone(c)["name"], small_stem_padding=_sslkit_stem),
    Format("moco", "official MoCo v1/v2 (state_dict, module.encoder_q.* / module.encoder_k.*, arch recorded)",
           "moco_v2_800ep_pretrain.pth.tar, checkpoint_0199.pth.tar", lambda c: has(main_state_dict(c), "module.encoder_q."),
           two((lambda c: strip(main_state_dict(c), "module.encoder_q."), "query encoder"),
               (lambda c: strip(main_state_dict(c), "module.encoder_k."), "key encoder")),
           arch=lambda c: torchvision_arch(c.get("arch"))),
    Format("mocov3", "official MoCo v3 (state_dict, module.base_encoder.* / module.momentum_encoder.*, arch "
                     "recorded: resnet50, vit_small, vit_base)", "r-50-1000ep.pth.tar, vit-s-300ep.pth.tar", lambda c: has(main_state_dict(c), "module.base_encoder."),
           two((lambda c: strip(main_state_dict(c), "module.base_encoder."), "base encoder"),
               (lambda c: strip(main_state_dict(c), "module.momentum_encoder."), "momentum encoder")),
           arch=_mocov3_arch),
    Format("swav", "official SwAV, release or training file (module.*, with projection_head and prototypes)",
           "swav_800ep_pretrain.pth.tar, checkpoint.pth.tar",
           lambda c: (main_state_dict(c) or {}).get("module.conv1.weight") is not None,
           single(lambda c: strip(main_state_dict(c), "module."))),
    Format("dino", "official DINO full checkpoint (student/teacher, module.backbone.*, args); the teacher is "
                   "what DINO evaluates", "dino_resnet50_full_checkpoint.pth, dino_deitsmall16_full_checkpoint.pth, "
                   "checkpoint.pth",
           lambda c: tensor_dict(c.get("teacher")) is not None and tensor_dict(c.get("student")) is not None,
           two((lambda c: _dino_part(c, "student"), "student"), (lambda c: _dino_part(c, "teacher"), "teacher")),
           default_branch=lambda c: "momentum", arch=_dino_arch),
    Format("timm", "timm train.py checkpoint (state_dict, state_dict_ema, args); the EMA weights are what timm "
                   "loads by default", "model_best.pth.tar, last.pth.tar",
           _timm_detect,
           two((lambda c: _timm_part(c, "state_dict"), "model"), (lambda c: _timm_part(c, "state_dict_ema"), "EMA")),
           default_branch=lambda c: "momentum" if tensor_dict(c.get("state_dict_ema")) else "online", arch=_timm_arch),
    Format("byol-lucidrains", "lucidrains byol-pytorch learner or its Lightning example (learner.net.*, "
                              "learner.target_encoder.net.*)", "epoch=N-step=M.ckpt",
           lambda c: _lucidrains_prefix(c) is not None,
           two((_lucidrains_online, "online network"), (_lucidrains_target, "target network"))),
    Format("byol-sthalles", "sthalles PyTorch-BYOL (online_network_state_dict, encoder.<i>.*)", "model.pth",
           lambda c: tensor_dict(c.get("online_network_state_dict")) is not None,
           two((lambda c: from_sequential(c["online_network_state_dict"], "encoder."), "online network"),
               (lambda c: from_sequential(tensor_dict(c.get("target_network_state_dict")) or {}, "encoder."),
                "target network"))),
    Format("byol-yaox12", "yaox12 BYOL-PyTorch (model: module.online_network.encoder.<i>.*)", "resnet50_300.pth.tar",
           lambda c: _yaox12_prefix(c) is not None,
           two((lambda c: from_sequential(c["model"], f"{_yaox12_prefix(c)}online_network.encoder."), "online network"),
               (lambda c: from_sequential(c["model"], f"{_yaox12_prefix(c)}target_network.encoder."),
                "target network"))),
    Format("solo-learn", "solo-learn checkpoint (state_dict: backbone.*, or encoder.* before Dec 2021; CIFAR "
                         "stem with padding 2)", "byol-cifar10-<id>-ep=999.ckpt", _solo_detect,
           two((lambda c: strip(_solo_state(c), f"{_solo_name(c)}."), "backbone"),
               (lambda c: strip(_solo_state(c), f"momentum_{_solo_name(c)}."), "momentum backbone")),
           small_stem_padding=_solo_stem),
    Format("lightly-benchmark", "lightly's ImageNet benchmark modules (backbone.* under torchvision names, "
                                "online_classifier.*)", "epoch=99-step=N.ckpt",
           lambda c: has(main_state_dict(c), "online_classifier.") and has(main_state_dict(c), "backbone.conv1."),
           _lightly_benchmark_branches, default_branch=lambda c: _lightly_benchmark_roles(c)[2]),
    Format("lightly", "lightly examples and tutorial: backbone = nn.Sequential(*resnet.children()[:-1]) "
                      "(backbone.<i>.*, backbone_momentum.<i>.*, or {'resnet18_parameters': ...})", "model.pth",
           lambda c: has(main_state_dict(c), "backbone.0.") or tensor_dict(c.get("resnet18_parameters")) is not None,
           two((lambda c: from_sequential(c["resnet18_parameters"]) if "resnet18_parameters" in c
                else from_sequential(main_state_dict(c), "backbone."), "backbone"),
               (lambda c: from_sequential(main_state_dict(c) or {}, "backbone_momentum."), "backbone_momentum"))),
    Format("vissl", "VISSL checkpoint (classy_state_dict.base_model.model.trunk, _feature_blocks.*)",
           "model_final_checkpoint_phase199.torch", lambda c: _vissl_trunk(c) is not None,
           single(lambda c: strip(_vissl_trunk(c), "_feature_blocks."), "trunk")),
    Format("plain", "a timm or torchvision state_dict (conv1.*, layer1.*, ..., or a ViT's cls_token, patch_embed.*, "
                    "blocks.*), bare or under state_dict / model (DINO's and MAE's ViT pretrain files); .safetensors too",
           "resnet50-19c8e357.pth, dino_deitsmall16_pretrain.pth, mae_pretrain_vit_base.pth, model.safetensors",
           _plain_detect, single(lambda c: dict(main_state_dict(c))), arch=_mae_arch, fallback=True),
]
FORMATS_BY_NAME = {f.name: f for f in FORMATS}
BRANCH_WORDS = {"online": "online", "student": "online", "query": "online", "model": "online", "base": "online",
                "backbone": "online", "momentum": "momentum", "teacher": "momentum", "key": "momentum",
                "target": "momentum", "ema": "momentum"}


def detect_format(checkpoint: dict, source: str) -> Format:
    """The one format whose key layout ``checkpoint`` has (a specific one before ``plain``);
    an error lists the candidates when none or several match."""
    matches = [f for f in FORMATS if f.detect(checkpoint)]
    specific = [f for f in matches if not f.fallback]
    matches = specific or matches
    if len(matches) == 1:
        return matches[0]
    known = "\n".join(f"  {f.name}: {f.description}" for f in FORMATS)
    if not matches:
        state = main_state_dict(checkpoint) or {}
        sample = list(state)[:5] or list(checkpoint)[:5]
        raise CheckpointError(f"cannot tell the format of '{source}' from its keys (first: {sample}); known formats:\n{known}")
    names = ", ".join(f.name for f in matches)
    raise CheckpointError(f"'{source}' fits several formats ({names}); pass ckpt_format= one of them (--ckpt_format on the command line)")
