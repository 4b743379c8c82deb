"""A suite run serially and on Ray, side by side: whole `bltbench run` commands timed, each in a fresh
process as a user runs them (Ray's start-up and every worker's model load and warm-up included), the
executors alternated when repeated, and the runs' records compared apart from timing and placement."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bltbench.errors import BltbenchError
from bltbench.instrumentation.timing import interleaved
from bltbench.runner.store import RECORDS, record_key
from bltbench.runner.worker import PLACEMENT, TIMING


@dataclass
class SweepBenchRow:
    executor: str
    seconds: float  # median over repeats
    records: int


def comparable(folder: Path) -> dict[tuple, str]:
    """A run's records by (method, task, sample), less what depends on when and where they ran, each as
    canonical JSON (so a NaN equals a NaN)."""
    rows = [json.loads(line) for line in (folder / RECORDS).read_text(encoding="utf-8").splitlines()]
    return {record_key(r): json.dumps({k: v for k, v in r.items() if k not in TIMING and k not in PLACEMENT},
                                      sort_keys=True) for r in rows}


def sweep_benchmark(suite_path: Path, workers: int, threads: int = 1, repeats: int = 1, data_dir: str | None = None,
                    progress: Callable[[str], None] | None = None) -> tuple[list[SweepBenchRow], bool]:
    """Seconds per whole sweep, serial and on a local Ray with `workers` workers, each process at `threads`
    torch threads (a thread count changes float sums, so the records compare only at one count),
    alternated over `repeats` rounds (`timing.interleaved`); and whether every round's records agree."""
    fixed = ["--threads", str(threads)]
    variants = {"serial": ["--executor", "serial", *fixed],
                f"ray x{workers}": ["--executor", "ray", "--workers", str(workers), *fixed]}
    with tempfile.TemporaryDirectory() as tmp:
        def run(name: str) -> tuple[float, dict]:
            folder = Path(tempfile.mkdtemp(dir=tmp)) / "run"
            if progress:
                progress(name)
            command = [sys.executable, "-m", "bltbench", "run", str(suite_path), "--out", str(folder), *variants[name]]
            if data_dir:
                command += ["--data-dir", data_dir]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if done.returncode:
                said = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
                raise BltbenchError(f"the {name} run failed: {(said or done.stderr.splitlines()[-1:] or ['?'])[0]}")
            return seconds, comparable(folder)

        timed = interleaved(list(variants), repeats, run)
    runs = [records for results in timed.values() for _, records in results]
    rows = [SweepBenchRow(name, statistics.median(s for s, _ in results), len(runs[0])) for name, results in timed.items()]
    return rows, all(r == runs[0] for r in runs)
