"""Counting the operators a piece of work dispatches: on a small model, dispatch is the cost."""

from __future__ import annotations

from collections.abc import Callable


def count_ops(step: Callable[[], object]) -> int:
    """aten operators dispatched by one call of `step` (views included: each costs dispatch time)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
