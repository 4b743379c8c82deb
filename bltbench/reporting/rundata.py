"""Reading a finished (or interrupted) run folder into what the report draws.

A report is built from the run's own files only: `suite.yaml`, `records.jsonl` and, when the sweep got
as far as writing it, `summary.json`. Nothing is re-run and no model is loaded, so a report can be made
on any machine from a copied results folder.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from bltbench.errors import BltbenchError
from bltbench.instrumentation.costs import device_of
from bltbench.instrumentation.meter import COMPONENTS
from bltbench.runner.store import ENVIRONMENT, RECORDS, SUITE, SUMMARY_JSON

RESULTS_ROOT = Path("results")

# Summary-row fields that describe cost or bookkeeping; every other numeric field is a quality metric.
NON_METRIC_FIELDS = {
    "method", "task", "samples", "complete", "bytes", "gb_per_byte", "gb_per_byte_ext", "gb_per_byte_kv",
    "bytes_per_decoder_pass", "bytes_per_s", "nfe_per_byte", "projected_gb_per_byte", "accepted_per_verify",
    "exact_match", "reduction", "kind", "bytes_scored", "sequences", "text_bytes", "ms_per_byte", "ms_per_byte_iqr",
    "ttft_ms", "predicted_ms_per_byte", "roofline_fraction",
}
METRIC_NAMES = {"bleu": "BLEU", "chrf": "chrF", "spbleu": "spBLEU", "ttr": "TTR", "pass@1": "pass@1", "bpb": "bits/byte"}
LOWER_IS_BETTER = {"bpb"}


def metric_label(name: str) -> str:
    return METRIC_NAMES.get(name, name)


@dataclass
class RunData:
    """One run as tables: `samples` has a row per generation record (costs flattened); records of
    scoring tasks (likelihood, bits per byte) generate nothing, so they count in no per-byte cost and
    reach the report through their summary rows' metrics. `summary` has the sweep's rows per
    (method, task) when the sweep wrote them."""

    run_id: str
    folder: Path
    suite: dict
    samples: pd.DataFrame
    summary: list[dict] | None
    methods: list[str]  # in the order the sweep ran them
    tasks: list[str]  # every task, scoring tasks included
    records_per_task: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    environment: list[dict] = field(default_factory=list)  # one entry per sweep session (environment.json)
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)  # every record's per-sample scores, scoring tasks too

    @property
    def model(self) -> str:
        return str(self.suite.get("model", "?"))

    @property
    def suite_name(self) -> str:
        return str(self.suite.get("name", "?"))

    @property
    def projections(self) -> list[str]:
        """Presets to price the run at: blt-1b and blt-7b always, plus any the suite asked for."""
        names = ["blt-1b", "blt-7b"]
        for name in self.suite.get("project") or []:
            if str(name) not in names:
                names.append(str(name))
        return names

    def dates(self) -> tuple[str, str] | None:
        """First and last record times (UTC), from the records' own timestamps."""
        stamps = [t for t in self.samples["time"] if isinstance(t, (int, float)) and not math.isnan(t)]
        if not stamps:
            return None
        fmt = "%Y-%m-%d %H:%M:%S UTC"
        return time.strftime(fmt, time.gmtime(min(stamps))), time.strftime(fmt, time.gmtime(max(stamps)))


def resolve_run(run: str | Path) -> Path:
    """A run folder given as a path, or as a run id under results/."""
    path = Path(run)
    if path.is_dir():
        return path
    under = RESULTS_ROOT / path
    if not path.is_absolute() and under.is_dir():
        return under
    also = "" if path.is_absolute() else f" (nor {under})"
    raise BltbenchError(f"unknown run {str(run)!r}: no such folder{also}")


def _read_records(path: Path) -> list[dict]:
    """Every record; a last line torn by a kill (no newline, not JSON) is left out, as a resume would."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise BltbenchError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # torn last line
                continue
            raise BltbenchError(f"{path}:{number} is not a JSON record; the run folder is damaged") from None
        if not isinstance(record, dict) or not {"method", "task", "sample_id"} <= set(record):
            raise BltbenchError(f"{path}:{number} is not a bltbench record (method, task, sample_id missing)")
        records.append(record)
    keys = [(r["method"], r["task"], str(r["sample_id"])) for r in records]
    if len(set(keys)) != len(keys):
        twice = len(keys) - len(set(keys))
        raise BltbenchError(f"{path} holds {twice} duplicated (method, task, sample) row(s) of {len(keys)}: "
                            "two sweeps wrote this folder at once; re-run it into a fresh folder")
    return records


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _sample_row(r: dict) -> dict:
    nfe = r.get("nfe") or {}
    score = r.get("score") or {}
    row = {
        "method": r["method"],
        "task": r["task"],
        "sample_id": r["sample_id"],
        "bytes": int(r.get("bytes_generated") or 0),
        "gb": _number(r.get("bandwidth_gb")),
        "gb_ext": _number(r.get("bandwidth_gb_ext")),
        "gb_kv": _number(r.get("bandwidth_gb_kv")),
        "wall_s": _number(r.get("wall_s")),
        "prefill_s": _number(r.get("prefill_s")),
        "ttft_s": _number(r.get("ttft_s")),
        "decode_s": _number(r.get("decode_s")),  # NaN in records written before phases were timed
        "predicted_decode_s": _number(r.get("predicted_decode_s")),  # NaN: priced without a device profile
        "accepted_per_verify": _number(r.get("accepted_per_verify")),
        "verify_rounds": _number(r.get("verify_rounds")),
        "committed_bytes": _number(r.get("committed_bytes")),
        "temperature": _number(((r.get("settings") or {}).get("sampling") or {}).get("temperature")),
        "time": _number(r.get("time")),
        "kind": str(r.get("kind") or "generation"),
        "device": device_of(r) or "",  # "": timed before placement was recorded
        "output": r.get("output") if isinstance(r.get("output"), str) else "",
    }
    for c in COMPONENTS:
        row[f"nfe_{c}"] = int(nfe.get(c, 0))
    for key, value in score.items():
        row[f"score_{key}"] = _number(value)
    for name, priced in (r.get("projected") or {}).items():
        row[f"stored_gb_{name}"] = _number((priced or {}).get("bandwidth_gb"))
    return row


def _read_summary(folder: Path, notes: list[str]) -> list[dict] | None:
    path = folder / SUMMARY_JSON
    if not path.exists():
        notes.append("summary.json is missing (the sweep did not finish): task quality is the mean of "
                     "per-sample scores and exact match is not shown.")
        return None
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise BltbenchError(f"cannot read {path}: not a JSON summary") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "method" in r and "task" in r for r in rows):
        raise BltbenchError(f"{path} is not a list of summary rows")
    return rows


def load_run(run: str | Path) -> RunData:
    """Everything the report needs from a run folder; one-line errors for what is not a usable run."""
    folder = resolve_run(run)
    records = _read_records(folder / RECORDS)
    if not records:
        raise BltbenchError(f"run {folder} holds no records ({RECORDS} is missing or empty)")
    suite: dict = {}
    if (folder / SUITE).exists():
        try:
            suite = yaml.safe_load((folder / SUITE).read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            raise BltbenchError(f"cannot read {folder / SUITE}") from None
        if not isinstance(suite, dict):
            raise BltbenchError(f"{folder / SUITE} is not a suite mapping")
    notes: list[str] = []
    summary = _read_summary(folder, notes)
    every = pd.DataFrame([_sample_row(r) for r in records])
    methods = list(dict.fromkeys(every["method"]))
    tasks = list(dict.fromkeys(every["task"]))
    samples = every[every["kind"] != "scoring"].reset_index(drop=True)
    scoring = len(every) - len(samples)
    if scoring:
        notes.append(f"{scoring} record(s) of scoring tasks (likelihood, bits per byte) generate no bytes: "
                     "they appear in the quality table only.")
    empty = int((samples["bytes"] == 0).sum())
    if empty:
        notes.append(f"{empty} sample(s) generated no bytes (EOS at once); they count in no per-byte figure.")
    counts = {t: int(n) for t, n in every["task"].value_counts().items()}
    score_columns = ["method", "task", "sample_id"] + [c for c in every.columns if c.startswith("score_")]
    return RunData(folder.resolve().name, folder, suite, samples, summary, methods, tasks, counts, notes,
                   _read_environment(folder), every[score_columns])


def _read_environment(folder: Path) -> list[dict]:
    """What each sweep session was timed on; [] for runs without the file (or a damaged one)."""
    path = folder / ENVIRONMENT
    try:
        sessions = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []
