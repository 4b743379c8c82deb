"""Wall-clock timing: perf_counter on CPU, synchronised around the work on CUDA."""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
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


K = TypeVar("K")


def interleaved(units: list[K], repeats: int, run: Callable[[K], T]) -> dict[K, list[T]]:
    """`repeats` rounds over every unit in order (A B C, A B C, ...): drift on a busy machine then hits
    every unit alike instead of whichever ran last. Returns each unit's results in round order."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    results: dict[K, list[T]] = {unit: [] for unit in units}
    for _ in range(repeats):
        for unit in units:
            results[unit].append(run(unit))
    return results


@contextmanager
def fixed_threads(threads: int | None):
    """torch's intra-op thread count fixed for a block (None: left as it is), restored after it: CPU
    thread pools fighting for cores distort timings many times over."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def median_and_iqr(values) -> tuple[float, float]:
    """The median and interquartile range (inclusive quartiles, as pandas' linear ones) every timing
    table quotes; NaN for what fewer values cannot give (no values: both; one value: the IQR)."""
    values = sorted(float(v) for v in values)
    if not values:
        return float("nan"), float("nan")
    if len(values) == 1:
        return values[0], float("nan")
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return median, q3 - q1
