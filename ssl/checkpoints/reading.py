"""Reading a checkpoint file without running anything in it.

``torch.load(weights_only=True)`` unpickles tensors and plain containers only. Some files
people have also hold harmless configuration objects: ``argparse.Namespace`` (DINO's and
timm's ``args``, which timm's own loader allows) and sslkit's configuration dataclasses in
the ``hyper_parameters`` of sslkit checkpoints. Exactly those are allowed, nothing else;
``.safetensors`` files are read with the safetensors library.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from .formats import CheckpointError

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def safe_types() -> list[type]:
    """The one registry of non-tensor types a checkpoint may hold: ``argparse.Namespace`` and
    every sslkit configuration dataclass that can end up in ``hyper_parameters``."""
    from sslkit.eval.knn import KNNConfig
    from sslkit.eval.online import OnlineClassifierConfig
    from sslkit.methods.optim import OptimConfig
    from sslkit.methods.speed import SpeedConfig
    from sslkit.nn.backbones import BackboneConfig
    from sslkit.nn.hardness import MoCHi

    return [argparse.Namespace, BackboneConfig, KNNConfig, OnlineClassifierConfig, OptimConfig, SpeedConfig, MoCHi]


def allow_safe_types() -> None:
    """Let ``torch.load(weights_only=True)`` (Lightning's resume and ``load_from_checkpoint``
    included) read the registry's types, and nothing else."""
    torch.serialization.add_safe_globals(safe_types())


def read_checkpoint(path: str | Path) -> dict:
    """The dict stored at ``path``; a clear ``CheckpointError`` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"'{path}' is empty (0 bytes): the file was not written completely; copy it again")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"cannot read '{path}' as safetensors: {_plain(err)}") from err
    with open(path, "rb") as f:
        head = f.read(64)
    if _looks_like_text(head):
        raise CheckpointError(f"'{path}' is a text file ({head[:40].decode('utf-8', 'replace')!r}...), not a "
                              f"PyTorch checkpoint; pass the .pth/.ckpt/.tar file the weights were saved to")
    allow_safe_types()  # not torch's safe_globals(): leaving it removes the types for every later load
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(_unreadable(path, err)) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"'{path}' holds a {type(checkpoint).__name__}, not a dict of weights; "
                              f"save the model's state_dict() instead")
    return checkpoint


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    if head.startswith((b"PK\x03\x04", b"\x80")):  # torch's zip format, or a pickle
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def _plain(err: BaseException) -> str:
    """The first line of ``err`` that is a reason, not torch's advice about ``weights_only``."""
    lines = [line.strip() for line in ANSI.sub("", str(err)).splitlines() if line.strip()]
    reasons = [line for line in lines if "weights_only" not in line and "Weights only" not in line
               and "trust the source" not in line.lower()]
    return reasons[0] if reasons else type(err).__name__


def _pickled_globals(path: Path) -> list[str]:
    """The classes and functions a plain pickle file refers to, read from its opcodes
    (``pickletools.genops`` parses without executing anything)."""
    import pickletools

    names, strings = [], []
    with open(path, "rb") as f:
        try:
            for op, arg, _ in pickletools.genops(f):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:  # noqa: BLE001 - not a pickle, or one that ends early
            pass
    return names


def _unreadable(path: Path, err: BaseException) -> str:
    """Why torch could not read ``path``, without torch's advice to unpickle anything."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: read the pickle's opcodes instead
        unsafe = _pickled_globals(path)
    unsafe += re.findall(r"Unsupported global: GLOBAL ([\w.]+)", ANSI.sub("", str(err)))
    allowed = {f"{t.__module__}.{t.__qualname__}" for t in safe_types()} | {"collections.OrderedDict"}
    unsafe = list(dict.fromkeys(name for name in unsafe if name not in allowed and not name.startswith("torch.")))
    if unsafe:
        return (f"'{path}' holds Python objects sslkit does not unpickle ({', '.join(unsafe[:5])}): only tensors and "
                f"plain containers are read, so nothing in a file can run. Save the weights alone "
                f"(torch.save(model.state_dict(), path)) and load that file")
    return (f"cannot read checkpoint '{path}': it is truncated or not a PyTorch file ({_plain(err)}); "
            f"copy it again or check the path")
