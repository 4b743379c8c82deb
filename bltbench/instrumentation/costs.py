"""One cost aggregation: a method's records (generate --json, compare, sweep records) to its per-byte
figures, the way every table quotes them (DESIGN.md sections 8 and 12).

Bandwidth and NFEs are pooled (total over total bytes). Timings are per sample, then the median over
samples with its IQR: decode time only (the prefill apart), time to the first byte, the roofline's
predicted decode time and the measured share of it. Against a baseline's figures, `relative` gives
the three speedups a reader compares: measured, roofline-predicted and paper-proxy-predicted.
"""

from __future__ import annotations

import math
import statistics

from bltbench.instrumentation.meter import COMPONENTS
from bltbench.instrumentation.timing import median_and_iqr


def _median(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def decode_seconds(record: dict) -> float:
    """The seconds a record's per-byte speed divides by: decode time for a generation (the prefill
    apart), the scoring passes' time for a scoring record; 0 when it was not timed."""
    if record.get("kind") == "scoring":
        return record.get("wall_s") or 0.0
    return record.get("decode_s") or 0.0


def pooled_bytes_per_verify(records: list[dict]) -> float | None:
    """Bytes committed per verification over every round of every sample (not a mean of per-sample
    ratios, which would weigh a sample that ends at its first EOS like a long one)."""
    rounds = [r for r in records if r.get("verify_rounds")]
    total = sum(r["verify_rounds"] for r in rounds)
    return sum(r["committed_bytes"] for r in rounds) / total if total else None


def device_of(record: dict) -> str | None:
    """The device a record was timed on, as records name it ("cpu (Intel Xeon ...)", "cuda:0 (NVIDIA H200)");
    None for records written before placement was (they never make a run span devices)."""
    device, name = record.get("device"), record.get("device_name")
    return f"{device} ({name})" if device and name else (device or name or None)


TIMINGS = ("ms_per_byte", "ms_per_byte_iqr", "bytes_per_s", "ttft_ms", "predicted_ms_per_byte", "roofline_fraction")


def method_costs(records: list[dict], bytes_field: str = "bytes_generated", projections: tuple[str, ...] = ()) -> dict:
    """Per-byte costs and timings of one method over its records. Timings from different devices are
    never pooled into one median: when the records span several, the pooled timing fields are NaN and
    `timing_by_device` holds each device's."""
    n = sum(r[bytes_field] for r in records)
    per = (lambda x: x / n) if n else (lambda x: math.nan)
    by_device: dict[str, list[dict]] = {}
    for r in records:
        by_device.setdefault(device_of(r) or "unrecorded", []).append(r)
    if len(set(by_device) - {"unrecorded"}) <= 1:  # one device (old records beside it ran there too)
        by_device = {"one": records}
    timings = _timings(records, bytes_field) if len(by_device) <= 1 else dict.fromkeys(TIMINGS, math.nan)
    return {
        "bytes": n,
        "gb_per_byte": per(sum(r["bandwidth_gb"] for r in records)),
        "gb_per_byte_ext": per(sum(r["bandwidth_gb_ext"] for r in records)),
        "gb_per_byte_kv": per(sum(r["bandwidth_gb_kv"] for r in records)),
        "nfe_per_byte": {c: per(sum(r["nfe"][c] for r in records)) for c in COMPONENTS},
        "bytes_per_decoder_pass": n / max(1, sum(r["nfe"]["decoder"] for r in records)),
        "accepted_per_verify": pooled_bytes_per_verify(records),
        **timings,
        "timing_by_device": {d: _timings(rs, bytes_field) for d, rs in sorted(by_device.items())}
        if len(by_device) > 1 else None,
        "projected_gb_per_byte": {p: per(sum(r["projected"][p]["bandwidth_gb"] for r in records)) for p in projections},
    }


def _timings(records: list[dict], bytes_field: str) -> dict:
    """Medians over samples of decode time per byte (with its IQR), bytes/s, time to the first byte,
    the roofline's predicted time per byte and the measured share of it."""
    timed = [(r[bytes_field], decode_seconds(r), r) for r in records if r[bytes_field] and decode_seconds(r) > 0]
    ms, iqr = median_and_iqr(1e3 * t / b for b, t, _ in timed)
    predicted = [(b, r) for b, _, r in timed if r.get("predicted_decode_s")]
    return {
        "ms_per_byte": ms,
        "ms_per_byte_iqr": iqr,
        "bytes_per_s": _median(b / t for b, t, _ in timed),
        "ttft_ms": _median(1e3 * r["ttft_s"] for *_, r in timed if r.get("ttft_s") is not None),
        "predicted_ms_per_byte": _median(1e3 * r["predicted_decode_s"] / b for b, r in predicted),
        "roofline_fraction": _median(r["predicted_decode_s"] / decode_seconds(r) for _, r in predicted),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def reduction(gb_per_byte: float, base_gb_per_byte: float) -> float | None:
    """1 - GB / GB(baseline): the bandwidth the paper proxy says a method saves."""
    proxy = _ratio(base_gb_per_byte, gb_per_byte)
    return None if proxy is None else 1 - 1 / proxy


def relative(costs: dict, base: dict) -> dict:
    """Against the baseline's costs: the paper proxy's bandwidth reduction and the speedups the clock,
    the roofline and the paper proxy give (baseline time or GB over this method's)."""
    return {
        "reduction": reduction(costs["gb_per_byte"], base["gb_per_byte"]),
        "measured_speedup": _ratio(base["ms_per_byte"], costs["ms_per_byte"]),
        "roofline_speedup": _ratio(base["predicted_ms_per_byte"], costs["predicted_ms_per_byte"]),
        "proxy_speedup": _ratio(base["gb_per_byte"], costs["gb_per_byte"]),
    }
