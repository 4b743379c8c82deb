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

from bltbench.decoding.methods import MethodSpec
from bltbench.instrumentation.costs import method_costs, pooled_bytes_per_verify
from bltbench.instrumentation.environment import load_average
from bltbench.instrumentation.timing import fixed_threads
from bltbench.runner.executors import SerialExecutor, WorkerArgs
from bltbench.runner.store import RunStore, claim_run_folder, record_key
from bltbench.runner.suite import Suite
from bltbench.runner.units import WorkItem, WorkUnit, make_units, sample_cost
from bltbench.runner.worker import settings_of
from bltbench.suites.data import DataSource
from bltbench.suites.tasks.base import Sample, ScoringTask
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
    executor=None,
) -> SweepResult:
    """Every method over every task's samples; `compile` (or the suite's `compile: true`) runs
    one-position steps compiled; the suite's `timing:` sets repeats and torch's thread count (restored
    after the run). `executor` runs the work units (default: serially, in this process)."""
    lock = claim_run_folder(folder, resume)  # before data and the model load: a bad --out costs nothing
    executor = executor or SerialExecutor()
    try:
        with fixed_threads(suite.timing.threads):
            result = _sweep(suite, folder, limit, resume, device, data_dir, on_sample, on_plan, compile,
                            device_profile, lock, executor)
    except BaseException:
        lock.release(abandon=True)
        raise
    finally:
        executor.close()
    lock.release()
    return result


def _sweep(suite, folder, limit, resume, device, data_dir, on_sample, on_plan, compile, device_profile,
           lock, executor) -> SweepResult:
    data_dir = data_dir or suite.data_dir
    data = DataSource(data_dir)
    # Workers start first (a Ray executor's in parallel, while the samples are read here); the run
    # folder is written only once they are ready, so a model that cannot load leaves nothing behind.
    executor.start(WorkerArgs(suite, device, str(Path(data_dir).resolve()) if data_dir else None, compile,
                              device_profile))
    plan: list[tuple[object, object, list[Sample]]] = []
    for entry in suite.tasks:
        task = get_task(entry.name)
        cap = min(x for x in (entry.limit, limit) if x is not None) if (entry.limit or limit) else None
        plan.append((entry, task, task.samples(data, cap)))
    executor.wait_ready()
    store = RunStore(folder, suite.source, resume, lock)  # released by run_suite
    if on_plan:
        on_plan(len(suite.methods) * sum(len(s) for _, _, s in plan))
    counts = {"written": 0, "skipped": 0}

    def done(label: str, task_name: str, what: str = "") -> None:
        if on_sample:
            on_sample(f"{label} {task_name}{what}")

    def write(record: dict) -> None:
        store.append(record)
        counts["written"] += 1
        done(record["method"], record["task"])

    for entry, task, samples in plan:
        for sample in samples:
            for spec in suite.methods:
                if store.has((spec.label, task.name, sample.id)):
                    counts["skipped"] += 1
                    done(spec.label, task.name, ": skipped (done)")
    groups = _weight_groups(suite)
    scored = _scored_by_weights(store.records())
    units = []
    for index, (entry, task, samples) in enumerate(plan):
        if isinstance(task, ScoringTask):
            units += _scoring_units(index, task, samples, groups, scored, store, write, executor.shards_per_task)
        else:
            units += _generation_units(index, entry, task, samples, suite, store, executor.shards_per_task)

    def remaining(unit: WorkUnit) -> WorkUnit | None:
        return unit.remaining(lambda label, sample_id: store.has((label, plan[unit.entry][1].name, sample_id)))

    for record in executor.run(units, remaining):
        if store.has(record_key(record)):
            continue  # streamed twice by a worker that died after sending it
        write(record)
        if record.get("kind") == "scoring":  # the other methods on these weights share it
            weights = record["settings"]["weights"]
            scored[(weights, record["task"], record["sample_id"])] = record
            for spec in groups[weights]:
                if not store.has((spec.label, record["task"], record["sample_id"])):
                    write(_reused(record, spec))
    env = executor.environment()
    env["load_end"] = load_average()
    store.write_environment(env)
    summary = summarize(suite, store.records(), {t.name: (t, s) for _, t, s in plan})
    store.write_summary(summary)
    return SweepResult(folder, counts["written"], counts["skipped"], summary)


def _weight_groups(suite: Suite) -> dict[str, list[MethodSpec]]:
    """The suite's methods by the weights they score with, in suite order: the first one lacking a
    scoring record scores the sample, the others reuse its record."""
    groups: dict[str, list[MethodSpec]] = {}
    for spec in suite.methods:
        groups.setdefault(spec.runs_on, []).append(spec)
    return groups


def _generation_units(index, entry, task, samples, suite, store, shards) -> list[WorkUnit]:
    budget = entry.max_bytes or task.max_bytes
    atoms, costs = [], []
    for sample in samples:
        labels = tuple(s.label for s in suite.methods if not store.has((s.label, task.name, sample.id)))
        if labels:
            atoms.append([WorkItem(sample, labels)])
            costs.append(sample_cost(sample, budget) * len(labels))
    return make_units("generation", index, atoms, costs, shards)


def _scoring_units(index, task, samples, groups, scored, store, write, shards) -> list[WorkUnit]:
    """Units scoring what no method on the same weights has scored yet; samples scored already are
    copied to the methods that lack them here and now."""
    by_label: dict[str, list[Sample]] = {}
    for sample in samples:
        for weights, specs in groups.items():
            lacking = [s for s in specs if not store.has((s.label, task.name, sample.id))]
            if not lacking:
                continue
            prior = scored.get((weights, task.name, sample.id))
            if prior is None:
                by_label.setdefault(lacking[0].label, []).append(sample)
                continue
            for spec in lacking:
                write(_reused(prior, spec))
    units = []
    for label, todo in by_label.items():
        atoms = [[WorkItem(s, (label,)) for s in atom] for atom in task.atoms(todo)]
        costs = [sum(sample_cost(item.sample) for item in atom) for atom in atoms]
        units += make_units("scoring", index, atoms, costs, shards)
    return units


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
    return {**prior, "method": spec.label, "settings": settings_of(spec), "reused_from": prior["method"], "time": time.time()}


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
