"""The numbers behind the report: per-method costs, per-task quality, projections to larger presets.

Per-byte figures are byte-weighted over all of a method's samples (total cost / total bytes), the way
`summary.json` weights them within a task. Projections price the run's NFE counts with a preset's
parameter counts through the paper's proxy (`bandwidth.paper_gb`, the formula `compare --project`
uses): its inputs are the decoder and global call counts, which every record stores. The extended and
KV figures need each call's positions and cache length, which records do not keep, so projections
here are the paper proxy only (a suite's own `project:` list stores the extended ones per record).
"""

from __future__ import annotations

import math
from functools import lru_cache

import pandas as pd

from bltbench.instrumentation.bandwidth import paper_gb
from bltbench.instrumentation.costs import method_costs as aggregate
from bltbench.instrumentation.costs import pooled_bytes_per_verify, reduction, relative
from bltbench.instrumentation.meter import COMPONENTS
from bltbench.instrumentation.params import ComponentParams, profile
from bltbench.reporting.rundata import NON_METRIC_FIELDS, RunData

BASELINE = "blt"


@lru_cache(maxsize=None)
def _profile(name: str) -> ComponentParams:
    return profile(name)


def projected_gb(nfe_decoder: int, nfe_global: int, preset: str) -> float:
    """Paper-proxy GB for a trace with these decoder and global call counts, priced as `preset`."""
    p = _profile(preset)
    return paper_gb(nfe_decoder, nfe_global, p.decoder, p.encoder + p.global_)


def with_projections(run: RunData) -> pd.DataFrame:
    """The per-sample table plus a `proj_gb_<preset>` column for every preset the report shows."""
    df = run.samples.copy()
    for name in run.projections:
        df[f"proj_gb_{name}"] = [projected_gb(d, g, name) for d, g in zip(df["nfe_decoder"], df["nfe_global"])]
    return df


def _per_byte(total: float, n_bytes: int) -> float:
    return total / n_bytes if n_bytes else math.nan


def _as_record(row) -> dict:
    """A sample row back in the record form the one cost aggregation reads (NaN: not recorded)."""
    def value(name: str):
        v = row.get(name, math.nan)
        return None if isinstance(v, float) and math.isnan(v) else v

    return {"bytes_generated": int(row["bytes"]), "bandwidth_gb": row["gb"], "bandwidth_gb_ext": row["gb_ext"],
            "bandwidth_gb_kv": row["gb_kv"], "nfe": {c: int(row[f"nfe_{c}"]) for c in COMPONENTS},
            "decode_s": value("decode_s"), "ttft_s": value("ttft_s"), "predicted_decode_s": value("predicted_decode_s"),
            "verify_rounds": value("verify_rounds"), "committed_bytes": value("committed_bytes"),
            "device": row.get("device")}


def method_costs(run: RunData) -> pd.DataFrame:
    """One row per method, over all its tasks: bandwidth (GB/byte), NFEs per byte by component, bytes per
    decoder pass and per verification, decode time measured and roofline-predicted, the speedups over
    blt that the clock, the roofline and the paper proxy give, exact match and projections."""
    df = with_projections(run)
    rows = []
    for method in run.methods:
        m = df[df["method"] == method]
        costs = aggregate([_as_record(r) for _, r in m.iterrows()])
        n = costs["bytes"]
        row = {
            "method": method,
            "samples": len(m),
            "bytes": n,
            **{k: costs[k] for k in ("gb_per_byte", "gb_per_byte_ext", "gb_per_byte_kv")},
            **{f"nfe_{c}": v for c, v in costs["nfe_per_byte"].items()},
            "bytes_per_decoder_pass": costs["bytes_per_decoder_pass"] if n else math.nan,
            "bytes_per_verify": _bytes_per_verify(m),  # NaN when the method never verifies
            **{k: costs[k] for k in ("ms_per_byte", "ms_per_byte_iqr", "bytes_per_s", "ttft_ms",
                                     "predicted_ms_per_byte", "roofline_fraction")},
            "exact_match": _exact_match(run, method),
            **{f"proj_{p}": _per_byte(m[f"proj_gb_{p}"].sum(), n) for p in run.projections},
        }
        row["nfe_total"] = sum(row[f"nfe_{c}"] for c in COMPONENTS)
        row["timing_by_device"] = costs["timing_by_device"]
        rows.append((row, costs))
    base = next((costs for row, costs in rows if row["method"] == BASELINE), None)
    out = pd.DataFrame([row for row, _ in rows])
    for key in ("reduction", "measured_speedup", "roofline_speedup", "proxy_speedup"):
        out[key] = [math.nan if base is None or (v := relative(costs, base)[key]) is None else v for _, costs in rows]
    for p in run.projections:
        ref = float(out.loc[out["method"] == BASELINE, f"proj_{p}"].iloc[0]) if base is not None else math.nan
        out[f"reduction_{p}"] = [math.nan if (v := reduction(x, ref)) is None else v for x in out[f"proj_{p}"]]
    return out


def _exact_match(run: RunData, method: str) -> float:
    """Worst exact match over the method's tasks, from the summary (NaN: not a lossless greedy method,
    the reference path was not run, or no summary)."""
    values = [r["exact_match"] for r in run.summary or [] if r["method"] == method and r.get("exact_match") is not None]
    return min(values) if values else math.nan


def task_costs(run: RunData) -> pd.DataFrame:
    """Paper-proxy GB per byte for each (method, task), byte-weighted within the task."""
    g = run.samples.groupby(["method", "task"], sort=False)[["gb", "bytes"]].sum().reset_index()
    g["gb_per_byte"] = [_per_byte(gb, n) for gb, n in zip(g["gb"], g["bytes"])]
    return g[["method", "task", "gb_per_byte"]]


def quality(run: RunData) -> pd.DataFrame:
    """Long table (method, task, metric, value): the sweep's task-level metrics (corpus BLEU, pass@k, ...)
    from summary.json, or, without one, the mean of per-sample scores."""
    rows = []
    if run.summary is not None:
        for r in run.summary:
            for key, value in r.items():
                if key in NON_METRIC_FIELDS or key.endswith("_signature"):
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    rows.append({"method": r["method"], "task": r["task"], "metric": key, "value": float(value)})
    else:
        scores = [c for c in run.samples.columns if c.startswith("score_")]
        means = run.samples.groupby(["method", "task"], sort=False)[scores].mean().reset_index()
        for _, r in means.iterrows():
            for c in scores:
                if not math.isnan(r[c]):
                    rows.append({"method": r["method"], "task": r["task"], "metric": c[len("score_"):], "value": r[c]})
    return pd.DataFrame(rows, columns=["method", "task", "metric", "value"])


def signatures(run: RunData) -> dict[str, str]:
    """sacrebleu signatures recorded with the metrics (one per metric name)."""
    out: dict[str, str] = {}
    for r in run.summary or []:
        for key, value in r.items():
            if key.endswith("_signature") and isinstance(value, str):
                out.setdefault(key[: -len("_signature")], value)
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower or equal bandwidth (x) and higher or equal
    quality (y), strictly better in one. Sorted by bandwidth."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def _bytes_per_verify(m: pd.DataFrame) -> float:
    """Pooled over every verification round (records without round counts: the mean of their ratios)."""
    counted = m.dropna(subset=["verify_rounds", "committed_bytes"])
    pooled = pooled_bytes_per_verify(counted[["verify_rounds", "committed_bytes"]].to_dict("records"))
    return float(m["accepted_per_verify"].mean()) if pooled is None else pooled


BOOTSTRAP_RESAMPLES = 2000
CORPUS_METRICS = {"bleu", "chrf", "spbleu"}  # sacrebleu's corpus scores: not means of sentence scores


def bootstrap_interval(values, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of `values` (seeded: the same run gives the same
    interval)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    means = np.random.default_rng(seed).choice(x, (resamples, len(x))).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def quality_uncertainty(run: RunData, q: pd.DataFrame) -> dict[tuple[str, str, str], tuple[int, tuple | None]]:
    """Per (method, task, metric): the samples it rests on and, when the metric is the mean of the
    per-sample scores, a 95% bootstrap interval over samples (None for corpus-level metrics such as
    BLEU and chrF, which are not means of sentence scores)."""
    out = {}
    scores = run.scores
    for r in q.itertuples():
        column = f"score_{r.metric}"
        rows = scores[(scores["method"] == r.method) & (scores["task"] == r.task)] if len(scores) else scores
        n = len(rows)
        interval = None
        if r.metric not in CORPUS_METRICS and column in rows and n and rows[column].notna().all():
            values = rows[column].to_numpy(dtype=float)
            if math.isclose(float(values.mean()), float(r.value), rel_tol=1e-6, abs_tol=1e-9):
                interval = bootstrap_interval(values)
        out[(r.method, r.task, r.metric)] = (n, interval)
    return out
