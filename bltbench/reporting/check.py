"""The CI regression check on a run: bandwidth per byte must not rise beyond a tolerance, and a
lossless method's exact-match rate must stay 1.0."""

from __future__ import annotations

import json
from pathlib import Path

from bltbench.errors import BltbenchError


def _load(path: Path, what: str) -> list[dict]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BltbenchError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(rows, list):
        raise BltbenchError(f"{what} {path} is not a list of summary rows")
    return rows


def per_method(rows: list[dict]) -> dict[str, dict]:
    """Bandwidth per byte over all of a method's tasks (byte-weighted), and its worst exact match."""
    out: dict[str, dict] = {}
    for row in rows:
        m = out.setdefault(row["method"], {"gb": 0.0, "bytes": 0, "exact_match": None})
        m["gb"] += row["gb_per_byte"] * row["bytes"]
        m["bytes"] += row["bytes"]
        if row.get("exact_match") is not None:
            m["exact_match"] = row["exact_match"] if m["exact_match"] is None else min(m["exact_match"], row["exact_match"])
    return {k: {"gb_per_byte": v["gb"] / v["bytes"] if v["bytes"] else 0.0, "exact_match": v["exact_match"]}
            for k, v in out.items()}


def check(run: Path, baseline: Path, tolerance: float = 0.02) -> list[str]:
    """Problems found (empty: the run passes). `run` is a run folder or its summary.json."""
    summary = run / "summary.json" if run.is_dir() else run
    current = per_method(_load(summary, "run summary"))
    expected = per_method(_load(baseline, "baseline"))
    problems = []
    for method, base in expected.items():
        if method not in current:
            problems.append(f"{method}: in the baseline but not in the run")
            continue
        now = current[method]
        limit = base["gb_per_byte"] * (1 + tolerance)
        if now["gb_per_byte"] > limit:
            problems.append(f"{method}: bandwidth per byte rose to {now['gb_per_byte']:.6g} GB from "
                            f"{base['gb_per_byte']:.6g} GB (+{now['gb_per_byte'] / base['gb_per_byte'] - 1:.1%}, "
                            f"tolerance {tolerance:.0%})")
        if now["exact_match"] is not None and now["exact_match"] < 1.0:
            problems.append(f"{method}: exact match with its causal greedy path fell to {now['exact_match']:.1%}")
    return problems
