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
import shutil
from pathlib import Path

import yaml

from bltbench.atomic import write_text_atomic
from bltbench.errors import BltbenchError
from bltbench.runner.suite import NOT_RESUME_IDENTITY

RECORDS = "records.jsonl"
SUITE = "suite.yaml"
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
ENVIRONMENT = "environment.json"


def record_key(record: dict) -> tuple[str, str, str]:
    return record["method"], record["task"], record["sample_id"]


LOCK = ".lock"


def check_run_folder(folder: Path, resume: bool) -> None:
    """Refuse, before anything is loaded or written, a folder a run cannot go to: a file, a folder that
    holds something other than a run, a run without --resume, nothing to resume."""
    if folder.exists() and not folder.is_dir():
        raise BltbenchError(f"--out {folder} is a file; a run goes to a folder")
    existing = (folder / RECORDS).exists() or (folder / SUITE).exists()
    if existing and not resume:
        raise BltbenchError(f"run folder {folder} already holds a run; pass --resume to continue it, or another --out")
    if resume and not existing:
        raise BltbenchError(f"nothing to resume in {folder}")
    if not existing and folder.exists() and any(p.name != LOCK for p in folder.iterdir()):
        raise BltbenchError(f"--out {folder} is a folder that holds no bltbench run; give a new or empty folder")


def claim_run_folder(folder: Path, resume: bool) -> "RunLock":
    """Check the folder a run goes to and lock it, before anything is loaded: a bad --out, or a folder
    another sweep is writing, costs nothing. A folder made here and left holding only the lock is
    removed again by `RunLock.release(abandon=True)`."""
    check_run_folder(folder, resume)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(folder)
    except BltbenchError:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    lock.created = created
    return lock


class RunLock:
    """An advisory lock on a run folder while a sweep writes it (released when the process ends, however
    it ends); a second sweep on the folder is refused with the holder's pid."""

    def __init__(self, folder: Path) -> None:
        import fcntl

        self.path = folder / LOCK
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise BltbenchError(f"run folder {folder} is being written by another bltbench run (pid {holder}); "
                                "wait for it to finish") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    created = False  # the folder was made for this run

    def release(self, abandon: bool = False) -> None:
        """Drop the lock; with `abandon` (the run failed before writing anything), also remove a folder
        made for it that holds nothing but the lock."""
        if self.fd == -1:
            return
        os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing drops the lock
        self.fd = -1
        folder = self.path.parent
        if abandon and self.created and [p.name for p in folder.iterdir()] == [LOCK]:
            shutil.rmtree(folder, ignore_errors=True)


def _identity(source) -> object:
    """What a resumed run must share with the one it continues: the suite, less where its units ran."""
    return {k: v for k, v in source.items() if k not in NOT_RESUME_IDENTITY} if isinstance(source, dict) else source


class RunStore:
    def __init__(self, folder: Path, suite_source: dict, resume: bool, lock: RunLock | None = None) -> None:
        """The run in `folder`, locked (by `lock`, taken earlier by the caller, or here)."""
        self.folder = folder
        self.records_path = folder / RECORDS
        self.lock = lock or claim_run_folder(folder, resume)
        try:
            self._open(suite_source, resume)
        except BaseException:
            self.lock.release()
            raise

    def close(self) -> None:
        self.lock.release()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self, suite_source: dict, resume: bool) -> None:
        folder = self.folder
        if resume:
            try:
                previous = yaml.safe_load((folder / SUITE).read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                raise BltbenchError(f"{folder / SUITE} is missing or unreadable; cannot resume") from None
            if _identity(previous) != _identity(suite_source):
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
