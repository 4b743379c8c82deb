"""Wall-clock timing: perf_counter on CPU, synchronised around the work on CUDA."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def timed(fn: Callable[[], T], device: str | torch.device = "cpu") -> tuple[T, float]:
    """Run fn once and return (its result, seconds). On CUDA, pending kernels are waited for on
    both sides so the time covers the work itself."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize(device)
        return result, start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0
