"""A run's folder: the suite it ran, per-sample records (append-only JSONL) and the summary.

Each record is one line written with a single write and fsync, so a killed sweep leaves at worst a torn
last line, which reopening cuts off; a resumed sweep skips every (method, task, sample) already there,
so nothing is lost or written twice. Summaries are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import yaml

from bltbench.atomic import write_text_atomic
from bltbench.errors import BltbenchError

RECORDS = "records.jsonl"
SUITE = "suite.yaml"
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
ENVIRONMENT = "environment.json"


def record_key(record: dict) -> tuple[str, str, str]:
    return record["method"], record["task"], record["sample_id"]


class RunStore:
    def __init__(self, folder: Path, suite_source: dict, resume: bool) -> None:
        self.folder = folder
        self.records_path = folder / RECORDS
        existing = self.records_path.exists() or (folder / SUITE).exists()
        if existing and not resume:
            raise BltbenchError(f"run folder {folder} already holds a run; pass --resume to continue it, or another --out")
        if resume and not existing:
            raise BltbenchError(f"nothing to resume in {folder}")
        if resume:
            try:
                previous = yaml.safe_load((folder / SUITE).read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                raise BltbenchError(f"{folder / SUITE} is missing or unreadable; cannot resume") from None
            if previous != suite_source:
                raise BltbenchError(f"the suite differs from the one {folder} was started with; cannot resume")
        else:
            write_text_atomic(folder / SUITE, yaml.safe_dump(suite_source, sort_keys=False, allow_unicode=True))
        self._repair()
        self._records = self._read()
        self._keys = {record_key(r) for r in self._records}

    def _repair(self) -> None:
        """Cut a torn last line (a write interrupted by a kill)."""
        if not self.records_path.exists():
            return
        data = self.records_path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(self.records_path, "r+b") as f:
                f.truncate(end)

    def _read(self) -> list[dict]:
        if not self.records_path.exists():
            return []
        out = []
        for number, line in enumerate(self.records_path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise BltbenchError(f"{self.records_path}:{number} is not a JSON record; the run folder is damaged") from None
        return out

    def has(self, key: tuple[str, str, str]) -> bool:
        return key in self._keys

    def append(self, record: dict) -> None:
        key = record_key(record)
        if key in self._keys:
            raise ValueError(f"record {key} already written")
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.records_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._records.append(record)
        self._keys.add(key)

    def records(self) -> list[dict]:
        return list(self._records)

    def write_environment(self, env: dict) -> None:
        """What the run was timed on (one entry per sweep session: a resumed run adds its own)."""
        path = self.folder / ENVIRONMENT
        sessions = []
        if path.exists():
            try:
                sessions = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                sessions = []
        sessions = (sessions if isinstance(sessions, list) else []) + [env]
        write_text_atomic(path, json.dumps(sessions, indent=2) + "\n")

    def write_summary(self, rows: list[dict]) -> None:
        write_text_atomic(self.folder / SUMMARY_JSON, json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        if rows:
            fields = sorted({k for r in rows for k, v in r.items() if not isinstance(v, (dict, list))},
                            key=lambda k: (k not in ("method", "task"), k))
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            write_text_atomic(self.folder / SUMMARY_CSV, buffer.getvalue())
