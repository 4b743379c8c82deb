"""One instrumented generation: the output, its NFE trace, its price and its wall-clock."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bltbench.decoding.methods import MethodSpec, generate
from bltbench.decoding.result import Generation
from bltbench.decoding.sampling import Sampler, SamplingConfig
from bltbench.instrumentation.bandwidth import Bandwidth, price
from bltbench.instrumentation.meter import Meter
from bltbench.instrumentation.params import ComponentParams, component_params, profile
from bltbench.instrumentation.timing import timed
from bltbench.model.bundle import ModelBundle
from bltbench.model.ids import OFFSET

_warmed: set[tuple] = set()


@dataclass
class Measurement:
    method: str
    generation: Generation
    nfe: dict[str, int]
    prefill_nfe: dict[str, int]
    bandwidth: Bandwidth  # generation only, priced with the model's own parameter counts
    projected: dict[str, Bandwidth] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def bytes_generated(self) -> int:
        return len(self.generation.output_ids)

    def per_byte(self, value: float) -> float:
        return value / self.bytes_generated if self.bytes_generated else float("nan")

    def to_json(self) -> dict:
        g = self.generation
        record = {
            "method": self.method,
            "output": g.text,
            "output_hex": g.output_bytes.hex(),
            "bytes_generated": self.bytes_generated,
            "stopped_at_eos": g.stopped_at_eos,
            "stopped_at_string": g.stopped_at_string,
            "patches": g.patch_lengths,
            "nfe": self.nfe,
            "nfe_per_byte": {k: self.per_byte(v) for k, v in self.nfe.items()},
            "prefill": self.prefill_nfe,
            "bandwidth_gb": self.bandwidth.paper_gb,
            "bandwidth_gb_ext": self.bandwidth.extended_gb,
            "bandwidth_gb_kv": self.bandwidth.kv_gb,
            "bytes_read_per_byte": self.per_byte(self.bandwidth.extended_gb * 1e9),
            "bytes_per_decoder_pass": self.bytes_generated / self.nfe["decoder"] if self.nfe["decoder"] else None,
            "wall_s": self.wall_s,
            "bytes_per_s": self.bytes_generated / self.wall_s if self.wall_s > 0 else None,
        }
        for key in ("accepted_per_verify", "acceptance_rate", "verify_rounds", "committed_bytes"):
            if key in g.extras:
                record[key] = g.extras[key]
        for name, bw in self.projected.items():
            record.setdefault("projected", {})[name] = {
                "bandwidth_gb": bw.paper_gb,
                "bandwidth_gb_ext": bw.extended_gb,
                "bandwidth_gb_kv": bw.kv_gb,
            }
        return record


def own_params(bundle: ModelBundle) -> ComponentParams:
    return component_params(bundle.config, bundle.source)


WARM_UP_BYTES = 4


def warm_up(spec: MethodSpec, bundle: ModelBundle, device: str, steps: str = "eager",
            prompt_ids: list[int] | None = None, max_bytes: int = 0) -> None:
    """One short untimed run per (model, method, step mode) and process: first calls pay allocation
    and kernel-selection costs that are not decoding. Compiled steps compile once per cache size, so
    they warm up on a request of the timed one's length (its prompt, grown to prompt + budget)."""
    prompt = [1, 72, 105]
    if steps == "compiled" and prompt_ids is not None:
        length = max(len(prompt_ids), len(prompt_ids) + max_bytes - WARM_UP_BYTES)
        prompt = (list(prompt_ids) + [OFFSET + 32] * length)[:length]
    key = (bundle.source, spec.label, steps, len(prompt) if steps == "compiled" else None)
    if key not in _warmed:
        generate(spec, bundle, prompt, WARM_UP_BYTES, Sampler(SamplingConfig(), device), steps=steps)
        _warmed.add(key)


def measure(
    spec: MethodSpec,
    bundle: ModelBundle,
    prompt_ids: list[int],
    max_bytes: int,
    sampling: SamplingConfig,
    device: str = "cpu",
    projections: tuple[str, ...] = (),
    meter_enabled: bool = True,
    stop: tuple[str, ...] = (),
    steps: str = "eager",
) -> Measurement:
    warm_up(spec, bundle, device, steps, prompt_ids, max_bytes)
    meter = Meter()
    observer = meter if meter_enabled else None  # switched off: no observer at all
    sampler = Sampler(sampling, device)
    result, wall = timed(lambda: generate(spec, bundle, prompt_ids, max_bytes, sampler, observer, stop, steps), device)
    calls = meter.generation()
    return Measurement(
        method=spec.label,
        generation=result,
        nfe=Meter.nfe(calls),
        prefill_nfe=Meter.nfe(meter.prefill()),
        bandwidth=price(calls, own_params(bundle)),
        projected={name: price(calls, profile(name)) for name in projections},
        wall_s=wall,
    )


def median_bytes_per_s(measurements: list[Measurement]) -> float:
    """Median over prompts of each prompt's bytes/s."""
    speeds = [m.bytes_generated / m.wall_s for m in measurements if m.wall_s > 0 and m.bytes_generated]
    return statistics.median(speeds) if speeds else float("nan")
