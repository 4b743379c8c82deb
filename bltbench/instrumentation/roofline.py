"""The roofline cost model: each recorded call priced in seconds on a measured device (DESIGN.md 12).

A call reads bytes (its component's dense weights at the run's dtype, the embedding rows it gathers,
the KV cache it attends to) and does FLOPs (2 per weight per row, plus attention over the cache). Per
weight matrix the model takes the larger of its memory time (the weights streamed once, as measured
at one row) and its compute time at the call's row count (measured at 1..64 rows); embedding rows
and KV reads go at the attention's measured cache-reading rate; then the component's fixed per-call
cost. The paper's proxy counts calls at 16 bits; this counts what a call really moves and does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bltbench.instrumentation.bandwidth import embedding_params, kv_params
from bltbench.instrumentation.device_profile import DeviceProfile, call_kind
from bltbench.instrumentation.params import ComponentParams, Matrix, component_matrices, component_params
from bltbench.model.config import BLTConfig
from bltbench.model.incremental import Call


@dataclass(frozen=True)
class CallCost:
    memory_s: float  # weights streamed once plus embedding and KV reads
    compute_s: float  # the weight products at this call's row count
    bound_s: float  # per matrix the larger of the two, summed, plus embedding and KV reads
    fixed_s: float  # the component's per-call cost
    bytes: float
    flops: float

    @property
    def seconds(self) -> float:
        return self.bound_s + self.fixed_s

    def __add__(self, other: "CallCost") -> "CallCost":
        return CallCost(*(a + b for a, b in zip(self._values(), other._values())))

    def _values(self) -> tuple[float, ...]:
        return (self.memory_s, self.compute_s, self.bound_s, self.fixed_s, self.bytes, self.flops)


ZERO = CallCost(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


class Roofline:
    """Prices calls of one model (its config) at one dtype on a profiled device."""

    def __init__(self, config: BLTConfig, profile: DeviceProfile, dtype: torch.dtype) -> None:
        self.profile = profile
        self.matrices: dict[str, list[Matrix]] = component_matrices(config)
        self.params: ComponentParams = component_params(config)
        self.element = dtype.itemsize
        self._weights: dict[tuple[str, int], tuple[float, ...]] = {}

    def _weight_products(self, component: str, positions: int) -> tuple[float, ...]:
        """(memory s, compute s, bound s, FLOPs, bytes) of a component's weight products at this many
        positions: the same for every call of that shape, so worked out once."""
        key = (component, positions)
        if key not in self._weights:
            memory = compute = bound = flops = weight_bytes = 0.0
            for m in self.matrices[component]:
                rows = positions * m.rows_per
                mem, comp = self.profile.matrix_seconds(m.out, m.inp, rows)
                memory += m.count * mem
                compute += m.count * comp
                bound += m.count * max(mem, comp)
                flops += 2.0 * m.params * rows
                weight_bytes += m.params * self.element
            self._weights[key] = (memory, compute, bound, flops, weight_bytes)
        return self._weights[key]

    def call(self, call: Call) -> CallCost:
        memory, compute, bound, flops, weight_bytes = self._weight_products(call.component, call.positions)
        other = (embedding_params(call, self.params) + kv_params(call, self.params)) * self.element
        other_s = other / (self.profile.kv_gb_s * 1e9)
        keys = call.cache_length + call.positions
        flops += 4.0 * self.params.layers[call.component] * call.positions * keys * self.params.kv_width[call.component]
        calls = self.profile.call_s
        fixed = calls.get(call_kind(call.component, call.positions), calls.get(call.component, 0.0))
        return CallCost(memory + other_s, compute, bound + other_s, fixed, weight_bytes + other, flops)

    def price(self, calls: list[Call]) -> CallCost:
        total = ZERO
        for c in calls:
            total = total + self.call(c)
        return total
