"""`bltbench run`: every method of a suite on every sample of its tasks, metered, scored and recorded.

Generation tasks run the method's decoding on each prompt; scoring tasks (likelihood, bits per byte)
read the method's causal path through a `Scorer` (methods that share weights share one scoring run:
the later ones' records are copies marked `reused_from`). Both write one record per (method, task,
sample) and one summary row per (method, task), and both resume by skipping the records already
written."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bltbench.decoding.methods import MethodSpec
from bltbench.instrumentation.bandwidth import price
from bltbench.instrumentation.costs import method_costs, pooled_bytes_per_verify
from bltbench.instrumentation.device_profile import profile_for
from bltbench.instrumentation.roofline import Roofline
from bltbench.instrumentation.environment import environment, load_average
from bltbench.instrumentation.measure import measure, median_of_repeats, own_params
from bltbench.instrumentation.meter import COMPONENTS, Meter
from bltbench.instrumentation.params import profile
from bltbench.instrumentation.timing import fixed_threads, interleaved
from bltbench.model.checkpoint import load_model
from bltbench.model.ids import encode_prompt
from bltbench.runner.store import RunStore, claim_run_folder
from bltbench.runner.suite import Suite
from bltbench.suites.data import DataSource
from bltbench.suites.scorer import Scorer
from bltbench.suites.tasks.base import Sample, Scored, ScoringTask
from bltbench.suites.tasks.registry import get_task


@dataclass
class SweepResult:
    folder: Path
    written: int
    skipped: int
    summary: list[dict]


def _reference(spec: MethodSpec, labels: set[str]) -> str | None:
    """The label of the causal-path greedy run a lossless method must match, if the suite has it."""
    weights = spec.runs_on
    label = MethodSpec("blt", weights=None if weights == "blt" else weights).label
    return label if label in labels and label != spec.label else None


def run_suite(
    suite: Suite,
    folder: Path,
    limit: int | None = None,
    resume: bool = False,
    device: str = "cpu",
    data_dir: str | None = None,
    on_sample: Callable[[str], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
    compile: bool = False,
    device_profile: str | None = None,
) -> SweepResult:
    """Every method over every task's samples; `compile` (or the suite's `compile: true`) runs
    one-position steps compiled; the suite's `timing:` sets repeats and torch's thread count (restored
    after the run)."""
    lock = claim_run_folder(folder, resume)  # before data and the model load: a bad --out costs nothing
    try:
        with fixed_threads(suite.timing.threads):
            result = _sweep(suite, folder, limit, resume, device, data_dir, on_sample, on_plan, compile,
                            device_profile, lock)
    except BaseException:
        lock.release(abandon=True)
        raise
    lock.release()
    return result


def _sweep(suite, folder, limit, resume, device, data_dir, on_sample, on_plan, compile, device_profile,
           lock) -> SweepResult:
    steps = "compiled" if compile or suite.compile else "eager"
    data = DataSource(data_dir or suite.data_dir)
    plan: list[tuple[object, object, list[Sample]]] = []
    for entry in suite.tasks:
        task = get_task(entry.name)
        cap = min(x for x in (entry.limit, limit) if x is not None) if (entry.limit or limit) else None
        plan.append((entry, task, task.samples(data, cap)))
    bundle = load_model(suite.model, device, suite.dtype, suite.hash_buckets, suite.weights)
    for spec in suite.methods:
        spec.validate(bundle)
    store = RunStore(folder, suite.source, resume, lock)  # released by run_suite
    if on_plan:
        on_plan(len(suite.methods) * sum(len(s) for _, _, s in plan))
    written = skipped = 0
    dtype = bundle.dtype
    env = environment(device, dtype)
    roofline = None
    if device_profile != "off":  # measured at this run's threads and dtype (cached per machine), or a file
        profile = profile_for(bundle, device, device_profile)
        roofline = Roofline(bundle.config, profile, dtype)
        env["device_profile"] = profile.to_json()
    labels = {spec.label: spec for spec in suite.methods}

    def done(label: str, task_name: str, what: str = "") -> None:
        if on_sample:
            on_sample(f"{label} {task_name}{what}")

    # Generation tasks, sample by sample: every method on one prompt, `repeats` rounds interleaved
    # (A B C A B C), so a busy machine slows every method alike; each record keeps the median timing.
    for entry, task, samples in plan:
        if isinstance(task, ScoringTask):
            continue
        budget = entry.max_bytes or task.max_bytes
        for sample in samples:
            pending = [label for label in labels if not store.has((label, task.name, sample.id))]
            for label in labels:
                if label not in pending:
                    skipped += 1
                    done(label, task.name, ": skipped (done)")
            if not pending:
                continue
            ids = encode_prompt(sample.prompt.encode())
            timed = interleaved(pending, suite.timing.repeats, lambda label: measure(
                labels[label], bundle, ids, budget, entry.sampling, device, suite.project, stop=task.stop, steps=steps,
                roofline=roofline))
            for label in pending:
                store.append(_generation_record(labels[label], task, sample, entry, budget,
                                                median_of_repeats(timed[label]), suite.timing.repeats))
                written += 1
                done(label, task.name)
    scored = _scored_by_weights(store.records())
    for spec in suite.methods:
        scorer = None
        for entry, task, samples in plan:
            if not isinstance(task, ScoringTask):
                continue
            todo = []
            for sample in samples:
                if store.has((spec.label, task.name, sample.id)):
                    skipped += 1
                    done(spec.label, task.name, ": skipped (done)")
                else:
                    todo.append(sample)
            weights = spec.runs_on
            fresh = []
            for sample in todo:
                prior = scored.get((weights, task.name, sample.id))
                if prior is None:
                    fresh.append(sample)
                    continue
                store.append(_reused(prior, spec))
                written += 1
                done(spec.label, task.name)
            if fresh:
                scorer = scorer or Scorer(bundle, spec, device=device, steps=steps)
                for result in task.evaluate(scorer, fresh):
                    record = _scoring_record(spec, task, result, bundle, suite.project)
                    store.append(record)
                    scored[(weights, task.name, result.sample.id)] = record
                    written += 1
                    done(spec.label, task.name)
    env["load_end"] = load_average()
    store.write_environment(env)
    summary = summarize(suite, store.records(), {t.name: (t, s) for _, t, s in plan})
    store.write_summary(summary)
    return SweepResult(folder, written, skipped, summary)


def _generation_record(spec: MethodSpec, task, sample: Sample, entry, budget: int, m, repeats: int) -> dict:
    completion = task.postprocess(m.generation.text)
    return {
        "method": spec.label,
        "task": task.name,
        "sample_id": sample.id,
        "settings": {**_settings(spec), "sampling": vars(entry.sampling), "max_bytes": budget},
        "completion": completion,
        "score": task.score(sample, completion),
        **{k: v for k, v in m.to_json().items() if k not in ("method", "output")},
        "timing_repeats": repeats,
        "threads": torch.get_num_threads(),
        "output": m.generation.text,
        "time": time.time(),
    }


def _settings(spec: MethodSpec) -> dict:
    return {"name": spec.name, "k": spec.k, "weights": spec.runs_on,
            "diffusion": vars(spec.diffusion) if spec.diffusion else None}


def _scored_by_weights(records: list[dict]) -> dict[tuple[str, str, str], dict]:
    """Scoring records by (weights, task, sample): a likelihood depends on the weights alone, so methods
    that share weights (blt and blt-s-K; every blt-d-* and blt-dv-*) share one scoring run."""
    out: dict[tuple[str, str, str], dict] = {}
    for r in records:
        if r.get("kind") == "scoring" and "reused_from" not in r:
            out.setdefault((r["settings"]["weights"], r["task"], r["sample_id"]), r)
    return out


def _reused(prior: dict, spec: MethodSpec) -> dict:
    """Another method's scoring record for the same weights, relabelled and marked as reused (its
    NFEs, bandwidth and time are what this method's identical passes would cost)."""
    return {**prior, "method": spec.label, "settings": _settings(spec), "reused_from": prior["method"], "time": time.time()}


def _scoring_record(spec: MethodSpec, task: ScoringTask, scored: Scored, bundle, projections: tuple[str, ...]) -> dict:
    """A scoring task's per-sample record: scores, what the task kept, and what the scoring passes
    cost (NFEs by component, sequences run, bytes scored, bandwidth of the weights they read)."""
    u = scored.usage
    bw = price(u.counted, own_params(bundle))
    return {
        "method": spec.label,
        "task": task.name,
        "sample_id": scored.sample.id,
        "kind": "scoring",
        "settings": _settings(spec),
        "score": scored.score,
        "detail": scored.detail,
        "nfe": Meter.nfe(u.counted),
        "positions": Meter.positions(u.counted),
        "sequences": u.sequences,
        "bytes_scored": u.bytes_scored,
        "bytes_generated": u.bytes_generated,
        "bandwidth_gb": bw.paper_gb,
        "bandwidth_gb_ext": bw.extended_gb,
        "bandwidth_gb_kv": bw.kv_gb,
        "projected": {name: {"bandwidth_gb": p.paper_gb, "bandwidth_gb_ext": p.extended_gb, "bandwidth_gb_kv": p.kv_gb}
                      for name, p in ((name, price(u.counted, profile(name))) for name in projections)},
        "wall_s": u.wall_s,
        "time": time.time(),
    }


def summarize(suite: Suite, records: list[dict], tasks: dict) -> list[dict]:
    """One row per (method, task): task metrics, NFEs and bandwidth per byte (generated, or scored for
    scoring tasks), reductions against blt, exact match against the method's causal greedy path (when
    the suite ran it), speed."""
    by: dict[tuple[str, str], dict[str, dict]] = {}
    for r in records:
        by.setdefault((r["method"], r["task"]), {})[r["sample_id"]] = r
    labels = {s.label for s in suite.methods}
    rows = []
    for spec in suite.methods:
        for name, (task, samples) in tasks.items():
            got = by.get((spec.label, name), {})
            ordered = [(s, got[s.id]) for s in samples if s.id in got]
            if not ordered:
                continue
            if isinstance(task, ScoringTask):
                rows.append(_scoring_row(suite, spec, task, samples, ordered))
                continue
            recs = [r for _, r in ordered]
            n_bytes = sum(r["bytes_generated"] for r in recs)
            row = {
                "method": spec.label,
                "task": name,
                "kind": "generation",
                "samples": len(recs),
                "complete": len(recs) == len(samples),
                "bytes": n_bytes,
                **task.aggregate([s for s, _ in ordered], [r["completion"] for r in recs], [r["score"] for r in recs]),
                **_costs(suite, recs, "bytes_generated"),
            }
            row["accepted_per_verify"] = pooled_bytes_per_verify(recs)
            ref = _reference(spec, labels)
            greedy = all(r["settings"]["sampling"]["temperature"] == 0 for r in recs)
            if ref and greedy and spec.lossless:
                refs = by.get((ref, name), {})
                pairs = [(r, refs[r["sample_id"]]) for r in recs if r["sample_id"] in refs]
                row["exact_match"] = sum(a["output_hex"] == b["output_hex"] for a, b in pairs) / len(pairs) if pairs else None
            else:
                row["exact_match"] = None
            rows.append(row)
    base = {r["task"]: r for r in rows if r["method"] == "blt"}
    for row in rows:
        b = base.get(row["task"])
        row["reduction"] = 1 - row["gb_per_byte"] / b["gb_per_byte"] if b and b["gb_per_byte"] else None
    return rows


def _costs(suite: Suite, recs: list[dict], bytes_field: str) -> dict:
    """Bandwidth, NFEs and speed per byte over a (method, task)'s records, as every table quotes them
    (`costs.method_costs`); bytes are generated ones for generation tasks, scored ones for scoring tasks."""
    costs = method_costs(recs, bytes_field, suite.project)
    costs.pop("bytes")
    costs.pop("accepted_per_verify")
    return costs


def _scoring_row(suite: Suite, spec: MethodSpec, task: ScoringTask, samples: list[Sample], ordered: list) -> dict:
    """A scoring task's summary row. Costs are per scored byte; `bytes` (generated) is 0, so rows of
    this kind add nothing to the bandwidth regression check, which weighs rows by generated bytes."""
    recs = [r for _, r in ordered]
    n = sum(r["bytes_scored"] for r in recs)
    return {
        "method": spec.label,
        "task": task.name,
        "kind": "scoring",
        "samples": len(recs),
        "complete": len(recs) == len(samples),
        "bytes": 0,
        "bytes_scored": n,
        "sequences": sum(r["sequences"] for r in recs),
        **task.aggregate([s for s, _ in ordered], [r["score"] for r in recs]),
        **_costs(suite, recs, "bytes_scored"),
        "accepted_per_verify": None,
        "exact_match": None,
    }
