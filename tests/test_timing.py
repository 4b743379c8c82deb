"""Phases timed apart (prefill, first byte, decode) and decode-only per-byte figures everywhere."""

from __future__ import annotations

import math
import time

import pandas as pd
import pytest

from bltbench.decoding.clock import PhaseClock
from bltbench.model.ids import encode_prompt
from conftest import decode, run_cli

PROMPT = encode_prompt(b"A prompt long enough that its prefill is a real share of the work. " * 3)
METHODS = ["blt", "blt-s-4", "blt-d-4", "blt-dv-4"]


@pytest.mark.parametrize("method", METHODS)
def test_phases_add_up_to_the_whole_generation(micro, method):
    from bltbench.decoding.methods import generate, parse_method
    from bltbench.decoding.sampling import Sampler, SamplingConfig

    spec, sampler = parse_method(method), Sampler(SamplingConfig())
    calls = []  # (seconds since t0, role) of every component call, as the meter sees them
    t0 = time.perf_counter()
    g = generate(spec, micro, PROMPT, 24, sampler, observer=lambda call: calls.append((time.perf_counter() - t0, call.role)))
    outside = time.perf_counter() - t0
    p = g.phases
    assert 0 < p.prefill_s < p.ttft_s <= p.total_s
    # The clock starts after t0 and before the first call, so each mark sits where the oracle says: the
    # prefill ends after the last prefill call and before the first generation call.
    last_prefill = max(t for t, role in calls if role == "prefill")
    first_generation = min(t for t, role in calls if role != "prefill")
    assert last_prefill - calls[0][0] <= p.prefill_s <= first_generation
    assert first_generation - calls[0][0] <= p.ttft_s <= outside
    # The clock starts after argument checks and context set-up and stops before the call returns;
    # stated tolerance: what it leaves out is under 10% of the call plus 20 ms.
    assert p.total_s <= outside and outside - p.total_s < 0.1 * outside + 0.02


def test_recompute_has_no_separate_prefill(micro):
    p = decode(micro, "blt", PROMPT, 6, recompute=True).phases
    assert p.prefill_s == 0 and 0 < p.ttft_s <= p.total_s and p.decode_s == p.total_s


def test_nothing_generated_has_no_first_byte(micro):
    p = decode(micro, "blt", PROMPT, 0).phases
    assert p.ttft_s is None and p.prefill_s > 0 and p.total_s >= p.prefill_s


def test_the_first_mark_of_a_name_counts_and_unknown_marks_are_refused():
    clock = PhaseClock()
    clock.mark("first")
    time.sleep(0.01)
    clock.mark("first")
    phases = clock.phases()
    assert phases.ttft_s < 0.01 <= phases.total_s
    with pytest.raises(ValueError, match="unknown phase mark"):
        clock.mark("middle")


def test_records_quote_decode_only_speed(micro):
    from bltbench.decoding.sampling import SamplingConfig
    from bltbench.decoding.methods import parse_method
    from bltbench.instrumentation.measure import measure

    m = measure(parse_method("blt"), micro, PROMPT, 16, SamplingConfig(suppress_eos=True))
    r = m.to_json()
    assert r["bytes_generated"] == 16
    assert r["decode_s"] == pytest.approx(r["wall_s"] - r["prefill_s"], abs=0.02 + 0.1 * r["wall_s"])
    assert r["bytes_per_s"] == pytest.approx(16 / r["decode_s"])
    assert r["ms_per_byte"] == pytest.approx(1e3 * r["decode_s"] / 16)
    assert r["prefill_s"] < r["ttft_s"] < r["prefill_s"] + r["decode_s"]


def _samples(rows: list[tuple[str, int, float, float, float]]) -> pd.DataFrame:
    """Hand-made per-sample rows: (method, bytes, wall_s, prefill_s, ttft_s)."""
    return pd.DataFrame([
        {"method": m, "task": "t", "sample_id": str(i), "bytes": n, "gb": 1.0, "gb_ext": 1.0, "gb_kv": 1.0,
         "wall_s": wall, "prefill_s": prefill, "ttft_s": ttft, "decode_s": wall - prefill,
         "nfe_entropy": n, "nfe_encoder": n, "nfe_global": n, "nfe_decoder": n, "verify_rounds": math.nan, "accepted_per_verify": math.nan,
         "committed_bytes": math.nan, "kind": "generation"}
        for i, (m, n, wall, prefill, ttft) in enumerate(rows)])


def test_report_costs_are_decode_only_medians_with_their_spread(tmp_path):
    from bltbench.reporting.rundata import RunData
    from bltbench.reporting.tables import method_costs

    # Prefills of 1 s would dominate a whole-call figure; decode is 10, 20 and 60 ms per byte.
    samples = _samples([("blt", 10, 1.1, 1.0, 1.01), ("blt", 10, 1.2, 1.0, 1.02), ("blt", 10, 1.6, 1.0, 1.06),
                        ("blt-s-4", 10, 0.0, 0.0, 0.0)])  # an untimed record counts in no speed
    run = RunData("r", tmp_path, {}, samples, None, ["blt", "blt-s-4"], ["t"])
    costs = method_costs(run).set_index("method")
    assert costs.loc["blt", "ms_per_byte"] == pytest.approx(20.0)
    assert costs.loc["blt", "ms_per_byte_iqr"] == pytest.approx(25.0)  # quartiles 15 and 40
    assert costs.loc["blt", "bytes_per_s"] == pytest.approx(50.0)
    assert costs.loc["blt", "ttft_ms"] == pytest.approx(1020.0)
    assert math.isnan(costs.loc["blt-s-4", "ms_per_byte"])


def test_sweep_summary_speed_is_decode_only():
    from bltbench.instrumentation.costs import decode_seconds as _timed_s

    generation = {"kind": "generation", "wall_s": 2.0, "prefill_s": 1.5, "decode_s": 0.5, "bytes_generated": 10}
    old = {"kind": "generation", "wall_s": 2.0, "bytes_generated": 10}  # written before phases were timed
    scoring = {"kind": "scoring", "wall_s": 3.0, "bytes_scored": 30}
    assert _timed_s(generation) == 0.5 and _timed_s(old) == 0.0 and _timed_s(scoring) == 3.0


def test_interleaving_runs_every_unit_once_per_round_in_order():
    from bltbench.instrumentation.timing import interleaved

    calls = []
    results = interleaved(["A", "B", "C"], 3, lambda u: calls.append(u) or len(calls))
    assert "".join(calls) == "ABCABCABC"
    assert results == {"A": [1, 4, 7], "B": [2, 5, 8], "C": [3, 6, 9]}
    with pytest.raises(ValueError):
        interleaved(["A"], 0, lambda u: u)


def test_compare_interleaves_methods_and_takes_the_median_of_repeats(micro, monkeypatch):
    import bltbench.instrumentation.compare as compare_module
    from bltbench.decoding.clock import Phases
    from bltbench.decoding.sampling import SamplingConfig
    from bltbench.instrumentation.compare import compare, parse_methods
    from dataclasses import replace

    order, real = [], compare_module.measure
    decode_times = iter([0.1, 0.9, 0.2, 0.8, 0.6, 0.3, 0.5, 0.4, 0.7, 0.2, 0.3, 0.1])

    def fake(spec, bundle, ids, *args, **kwargs):
        m = real(spec, bundle, ids, *args, **kwargs)
        order.append((len(ids), spec.label))
        decode = next(decode_times)
        return replace(m, generation=replace(m.generation, phases=Phases(0.5, 0.51, 0.5 + decode)))

    monkeypatch.setattr(compare_module, "measure", fake)
    rows = compare(micro, parse_methods("blt,blt-s-4"), ["one prompt", "another, longer prompt"], 8,
                   SamplingConfig(suppress_eos=True), repeats=3)
    short, long = len(encode_prompt(b"one prompt")), len(encode_prompt(b"another, longer prompt"))
    assert order == [(short, "blt"), (short, "blt-s-4"), (long, "blt"), (long, "blt-s-4")] * 3
    by = {r.method: r for r in rows}
    # blt: prompt 1 repeats 0.1, 0.6, 0.7 -> 0.6; prompt 2 repeats 0.2, 0.5, 0.3 -> 0.3 (8 bytes each)
    assert by["blt"].ms_per_byte == pytest.approx(1e3 * (0.6 + 0.3) / 2 / 8)
    assert by["blt"].ms_per_byte_iqr == pytest.approx(1e3 * (0.6 - 0.3) / 8 / 2)
    assert by["blt"].ttft_ms == pytest.approx(510.0)
    # blt-s-4: prompt 1: 0.9, 0.3, 0.2 -> 0.3; prompt 2: 0.8, 0.4, 0.1 -> 0.4
    assert by["blt-s-4"].ms_per_byte == pytest.approx(1e3 * 0.35 / 8)


def test_bench_decode_interleaves_modes_per_length(micro, monkeypatch):
    import bltbench.instrumentation.bench as bench

    order, real = [], bench.generate

    def recording(spec, bundle, ids, n, *args, steps="eager", **kwargs):
        if n > 4:  # warm-ups run 4 bytes
            order.append(("recompute" if spec.recompute else steps, n))
        return real(spec, bundle, ids, n, *args, steps=steps, **kwargs)

    monkeypatch.setattr(bench, "generate", recording)
    rows = bench.decode_benchmark(micro, [6, 8], b"a prompt", modes=("eager", "recompute"), repeats=2)
    assert order == [("eager", 6), ("recompute", 6)] * 2 + [("eager", 8), ("recompute", 8)] * 2
    assert [r.new_bytes for r in rows] == [6, 8] and all(r.same_output for r in rows)


@pytest.mark.parametrize("command", [
    ["compare", "--model", "random:tiny", "--threads", "0"],
    ["compare", "--model", "random:tiny", "--repeats", "0"],
    ["run", "--threads", "0"],
    ["run", "--repeats", "0"],
    ["bench", "roofline", "--preset", "tiny", "--repeats", "0"],
    ["bench", "device", "--threads", "0"],
    ["bench", "device", "--repeats", "0"],
    ["check", "x", "--baseline", "y", "--tolerance", "nan"],
])
def test_bad_timing_options_are_one_error_line(capsys, command):
    code, out, err = run_cli(capsys, *command)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
