"""On-disk cache of extracted features, keyed by everything they depend on."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

FORMAT_VERSION = 1


def describe(obj) -> dict:
    """The plain-valued attributes of ``obj`` (a data module, say), for cache keys."""
    plain = (int, float, str, bool, type(None))
    out = {"class": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    for name, value in sorted(vars(obj).items()):
        if name.startswith("_") or name in ("batch_size", "num_workers", "pin_memory", "trainer"):
            continue
        if isinstance(value, plain):
            out[name] = value
        elif isinstance(value, (tuple, list)) and all(isinstance(v, plain) for v in value):
            out[name] = list(value)
        elif isinstance(value, dict) and all(isinstance(v, plain + (tuple, list)) for v in value.values()):
            out[name] = {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in value.items()}
        elif isinstance(value, os.PathLike):
            out[name] = str(value)
    return out


def cache_key(parts: dict) -> str:
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_features(
    cache_dir: str | Path | None,
    parts: dict,
    compute: Callable[[], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(features, labels, was_cached)``: loaded from ``cache_dir`` when a file for exactly
    these ``parts`` exists, else computed and written there (atomically, with the parts
    beside it in JSON). ``cache_dir=None`` disables caching."""
    if cache_dir is None:
        return (*compute(), False)
    cache_dir = Path(cache_dir)
    key = cache_key(parts)
    path = cache_dir / f"{key}.pt"
    if path.exists():
        data = torch.load(path, map_location="cpu", weights_only=True)
        return data["features"], data["labels"], True
    features, labels = compute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({"features": features, "labels": labels}, partial)
    os.replace(partial, path)
    (cache_dir / f"{key}.json").write_text(json.dumps(parts, indent=2, sort_keys=True, default=str))
    return features, labels, False
