"""Running several methods on the same prompts and tabulating what each costs and keeps."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bltbench.decoding.methods import MethodSpec, parse_method
from bltbench.decoding.sampling import SamplingConfig
from bltbench.errors import BltbenchError
from bltbench.instrumentation.bench import FEW_SHOT_PROMPT, SHORT_PROMPT
from bltbench.instrumentation.costs import method_costs, reduction, relative
from bltbench.instrumentation.measure import Measurement, measure, median_of_repeats
from bltbench.instrumentation.timing import interleaved
from bltbench.model.bundle import ModelBundle
from bltbench.model.ids import encode_prompt

DEFAULT_PROMPTS = (
    SHORT_PROMPT,
    FEW_SHOT_PROMPT,
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Le musée a annoncé mardi que l'exposition serait prolongée jusqu'à la fin de l'été, ",
)


@dataclass
class CompareRow:
    method: str
    prompts: int
    bytes: int
    nfe_per_byte: dict[str, float]
    gb_per_byte: float  # paper proxy
    gb_per_byte_ext: float
    gb_per_byte_kv: float
    reduction: float | None  # 1 - GB / GB(blt), paper proxy
    exact_match: float | None  # share of prompts whose output equals blt greedy
    bytes_per_s: float  # decode bytes/s (prefill apart), median over prompts
    ms_per_byte: float  # decode ms per byte, median over prompts
    ms_per_byte_iqr: float  # its spread over prompts (NaN under two prompts)
    ttft_ms: float | None  # time to the first byte, median over prompts
    bytes_per_decoder_pass: float
    accepted_per_verify: float | None
    predicted_ms_per_byte: float = float("nan")  # the roofline's decode ms per byte (NaN: no device profile)
    roofline_fraction: float = float("nan")  # predicted over measured decode time (1.0: at the roofline)
    measured_speedup: float | None = None  # blt's decode time per byte over this method's
    roofline_speedup: float | None = None  # the same from the roofline's predictions
    proxy_speedup: float | None = None  # the same from the paper proxy's GB per byte
    projected: dict[str, dict[str, float | None]] = field(default_factory=dict)


def read_prompts(path: Path) -> list[str]:
    """One prompt per line, or JSONL with a "prompt" field (for prompts spanning lines)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BltbenchError(f"cannot read prompts file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BltbenchError(f"prompts file {path} is not valid UTF-8") from None
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                prompt = json.loads(line)["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise BltbenchError(f"{path}:{number}: expected a JSON object with a 'prompt' string") from None
            if not isinstance(prompt, str) or not prompt:
                raise BltbenchError(f"{path}:{number}: the prompt must be a non-empty string")
            prompts.append(prompt)
        else:
            prompts.append(line)
    if not prompts:
        raise BltbenchError(f"prompts file {path} holds no prompts")
    return prompts


def parse_methods(text: str, diffusion=None) -> list[MethodSpec]:
    specs = [parse_method(name, diffusion=diffusion) for name in text.split(",") if name.strip()]
    if not specs:
        raise BltbenchError("--methods names no method")
    return specs


def compare(
    bundle: ModelBundle,
    specs: list[MethodSpec],
    prompts: list[str],
    max_bytes: int,
    sampling: SamplingConfig,
    device: str = "cpu",
    projections: tuple[str, ...] = (),
    progress: Callable[[str], None] | None = None,
    steps: str = "eager",
    repeats: int = 1,
    roofline=None,
) -> list[CompareRow]:
    """Every method on every prompt. Reductions are against `blt` on BLT weights (the paper's baseline);
    exact matches are against greedy decoding of the method's own causal path (BLT for blt / blt-s,
    BLT-D's next-byte path for blt-d / blt-dv), each run if not asked for. Timing: every method
    warms up first; then `repeats` rounds, each running every method on a prompt before the next
    prompt (A B C A B C), and each sample's time is the median of its repeats."""
    runs: dict[str, list[Measurement]] = {}
    baseline = MethodSpec("blt") if bundle.blt is not None else MethodSpec("blt", weights="blt-d")
    references = {w: MethodSpec("blt", weights=None if w == "blt" else w) for w in {s.runs_on for s in specs}}
    order = list(specs)
    for extra in [baseline, *references.values()]:
        if all(extra.label != s.label for s in order):
            order.append(extra)
    by_label = {spec.label: spec for spec in order}
    encoded = [encode_prompt(prompt.encode()) for prompt in prompts]
    done = iter(range(1, repeats * len(prompts) * len(order) + 1))

    def run(unit: tuple[int, str]) -> Measurement:
        i, label = unit
        if progress:
            progress(f"{label}: prompt {i + 1}/{len(prompts)} (run {next(done)} of {repeats * len(prompts) * len(order)})")
        return measure(by_label[label], bundle, encoded[i], max_bytes, sampling, device, projections, steps=steps,
                       roofline=roofline)

    units = [(i, spec.label) for i in range(len(prompts)) for spec in order]
    timed = interleaved(units, repeats, run)
    for spec in order:
        runs[spec.label] = [median_of_repeats(timed[(i, spec.label)]) for i in range(len(prompts))]
    costs = {label: method_costs([m.to_json() for m in ms], projections=projections) for label, ms in runs.items()}
    base = costs[baseline.label]
    rows = []
    for spec in specs:
        ms, c = runs[spec.label], costs[spec.label]
        exact = None
        if sampling.greedy:
            ref = runs[references[spec.runs_on].label]
            exact = sum(m.generation.output_ids == r.generation.output_ids for m, r in zip(ms, ref)) / len(ms)
        vs_base = relative(c, base)
        projected = {name: {"gb_per_byte": c["projected_gb_per_byte"][name],
                            "reduction": reduction(c["projected_gb_per_byte"][name], base["projected_gb_per_byte"][name])}
                     for name in projections}
        rows.append(CompareRow(
            method=spec.label, prompts=len(ms), bytes=c["bytes"], nfe_per_byte=c["nfe_per_byte"],
            gb_per_byte=c["gb_per_byte"], gb_per_byte_ext=c["gb_per_byte_ext"], gb_per_byte_kv=c["gb_per_byte_kv"],
            reduction=vs_base["reduction"], exact_match=exact, bytes_per_s=c["bytes_per_s"],
            ms_per_byte=c["ms_per_byte"], ms_per_byte_iqr=c["ms_per_byte_iqr"],
            ttft_ms=None if math.isnan(c["ttft_ms"]) else c["ttft_ms"],
            bytes_per_decoder_pass=c["bytes_per_decoder_pass"], accepted_per_verify=c["accepted_per_verify"],
            predicted_ms_per_byte=c["predicted_ms_per_byte"], roofline_fraction=c["roofline_fraction"],
            measured_speedup=vs_base["measured_speedup"], roofline_speedup=vs_base["roofline_speedup"],
            proxy_speedup=vs_base["proxy_speedup"], projected=projected,
        ))
    return rows


def rows_as_records(rows: list[CompareRow]) -> list[dict]:
    """Flat records (one per method) for CSV and JSON."""
    records = []
    for row in rows:
        record = asdict(row)
        for c, v in record.pop("nfe_per_byte").items():
            record[f"nfe_per_byte_{c}"] = v
        for name, values in record.pop("projected").items():
            for key, v in values.items():
                record[f"{name}_{key}"] = v
        records.append(record)
    return records


