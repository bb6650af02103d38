"""Checkpoint layouts researchers actually have, recognised by their keys.

Each format turns a loaded checkpoint into a flat state_dict of the backbone under
torchvision/timm names (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...), plus an
architecture hint when the file records one. Classifier and head keys survive this step;
the loader drops them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


def _strip(state: StateDict, prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _has(state: StateDict | None, prefix: str) -> bool:
    return state is not None and any(k.startswith(prefix) for k in state)


def _torchvision_arch(name: str | None) -> str | None:
    return None if not name else (name if name.startswith("torchvision.") else f"torchvision.{name}")


RESNET_CHILDREN = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    detect: Callable[[dict], bool]
    extract: Callable[[dict], StateDict]
    arch: Callable[[dict], str | None] = lambda checkpoint: None
    small_images: Callable[[dict], bool | None] = lambda checkpoint: None


def _sslkit_detect(c: dict) -> bool:
    return "backbone" in (c.get("hyper_parameters") or {}) and _has(tensor_dict(c.get("state_dict")), "backbone.model.")


def _moco_detect(c: dict) -> bool:
    return _has(main_state_dict(c), "module.encoder_q.")


def _mocov3_detect(c: dict) -> bool:
    return _has(main_state_dict(c), "module.base_encoder.")


def _swav_detect(c: dict) -> bool:
    state = main_state_dict(c)
    return state is not None and "module.conv1.weight" in state


BYOL_PREFIXES = ("online_encoder.net.", "online_network.encoder.", "module.online_network.encoder.", "online_backbone.")


def _byol_prefix(c: dict) -> str | None:
    state = main_state_dict(c)
    return next((p for p in BYOL_PREFIXES if _has(state, p)), None)


def _solo_detect(c: dict) -> bool:
    state = tensor_dict(c.get("state_dict"))
    return _has(state, "backbone.") and not _has(state, "backbone.model.") and not _has(state, "backbone.0.")


def _solo_arch(c: dict) -> str | None:
    backbone = (c.get("hyper_parameters") or {}).get("backbone")
    return _torchvision_arch(backbone.get("name")) if isinstance(backbone, dict) else None


def _solo_small(c: dict) -> bool | None:
    backbone = (c.get("hyper_parameters") or {}).get("backbone")
    if isinstance(backbone, dict) and isinstance(backbone.get("kwargs"), dict):
        return backbone["kwargs"].get("cifar")
    return None


def _lightly_detect(c: dict) -> bool:
    state = main_state_dict(c)
    return _has(state, "backbone.0.") and _has(state, "backbone.4.")


def _lightly_extract(c: dict) -> StateDict:
    out = {}
    for key, value in _strip(main_state_dict(c), "backbone.").items():
        index, _, rest = key.partition(".")
        if index.isdigit() and int(index) < len(RESNET_CHILDREN):
            out[f"{RESNET_CHILDREN[int(index)]}.{rest}"] = value
    return out


def _vissl_trunk(c: dict) -> StateDict | None:
    try:
        return tensor_dict(c["classy_state_dict"]["base_model"]["model"]["trunk"])
    except (KeyError, TypeError):
        return None


def _plain_detect(c: dict) -> bool:
    state = main_state_dict(c)
    return state is not None and any(k.startswith(("conv1.", "patch_embed.", "stem.", "features.")) for k in state)


FORMATS: list[Format] = [
    Format("sslkit", "sslkit checkpoint of any method (backbone.model.*, hyper_parameters.backbone)",
           _sslkit_detect, lambda c: _strip(c["state_dict"], "backbone.model."),
           lambda c: c["hyper_parameters"]["backbone"], lambda c: c["hyper_parameters"].get("small_images")),
    Format("moco", "official MoCo v1/v2 release (state_dict, module.encoder_q.*)",
           _moco_detect, lambda c: _strip(main_state_dict(c), "module.encoder_q."),
           lambda c: _torchvision_arch(c.get("arch"))),
    Format("mocov3", "official MoCo v3 release (state_dict, module.base_encoder.*)",
           _mocov3_detect, lambda c: _strip(main_state_dict(c), "module.base_encoder."),
           lambda c: _torchvision_arch(c.get("arch")) if str(c.get("arch", "")).startswith("resnet") else None),
    Format("swav", "official SwAV release (module.*, with projection_head and prototypes)",
           _swav_detect, lambda c: _strip(main_state_dict(c), "module.")),
    Format("byol", f"BYOL PyTorch ports (keys under {', '.join(BYOL_PREFIXES)})",
           lambda c: _byol_prefix(c) is not None, lambda c: _strip(main_state_dict(c), _byol_prefix(c))),
    Format("solo-learn", "solo-learn checkpoint (state_dict, backbone.*)",
           _solo_detect, lambda c: _strip(c["state_dict"], "backbone."), _solo_arch, _solo_small),
    Format("lightly", "lightly model with backbone = nn.Sequential(*resnet.children()[:-1]) (backbone.<i>.*)",
           _lightly_detect, _lightly_extract),
    Format("vissl", "VISSL checkpoint (classy_state_dict.base_model.model.trunk, _feature_blocks.*)",
           lambda c: _vissl_trunk(c) is not None, lambda c: _strip(_vissl_trunk(c), "_feature_blocks.")),
    Format("plain", "plain timm or torchvision state_dict (conv1.*, layer1.*, ...; optionally under state_dict/model)",
           _plain_detect, lambda c: dict(main_state_dict(c))),
]
FORMATS_BY_NAME = {f.name: f for f in FORMATS}


def detect_format(checkpoint: dict, source: str) -> Format:
    """The one format whose key layout ``checkpoint`` has; an error lists the candidates
    when none or several match."""
    matches = [f for f in FORMATS if f.detect(checkpoint)]
    if len(matches) == 1:
        return matches[0]
    known = "\n".join(f"  {f.name}: {f.description}" for f in FORMATS)
    if not matches:
        state = main_state_dict(checkpoint) or {}
        sample = list(state)[:5] or list(checkpoint)[:5]
        raise CheckpointError(f"cannot tell the format of '{source}' from its keys (first: {sample}); known formats:\n{known}")
    names = ", ".join(f.name for f in matches)
    raise CheckpointError(f"'{source}' fits several formats ({names}); pass format= one of them")
