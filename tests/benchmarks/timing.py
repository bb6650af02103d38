"""The one timing loop every benchmark uses."""
from __future__ import annotations

import time

import torch


def timed(fn, repeats: int, device: torch.device) -> float:
    """Mean seconds per call of ``fn`` over ``repeats`` calls, after one warm-up call;
    CUDA work is synchronised at both ends."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats
