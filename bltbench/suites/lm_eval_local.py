"""A local-only lm-eval: the task configs shipped in `lm_eval_tasks/`, data from the data directory.

The task manager indexes only our folder (lm-eval's own hundreds of configs are never read), and the
configs load their rows through `DataSource`, so nothing waits on the network. Evaluation is lm-eval's
own (`lm_eval.evaluator.evaluate`: requests, filters, metrics), run on a chosen set of documents.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bltbench.errors import BltbenchError
from bltbench.suites.data import DataSource

TASK_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """lm-eval's info logging and per-call progress bars would drown a sweep's own progress."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def task_manager(data: DataSource):
    from lm_eval.tasks import TaskManager

    meta = {"data_dir": str(data.root) if data.root is not None else None}
    return TaskManager(include_path=str(TASK_DIR), include_defaults=False, metadata=meta)


def load_tasks(name: str, data: DataSource) -> dict[str, Any]:
    """The leaf lm-eval tasks of a local config (a task or a group), by task name. Data problems
    surface here as BltbenchError, before any run writes anything."""
    with quiet():
        manager = task_manager(data)
        if name not in manager.all_tasks:
            raise BltbenchError(f"no local lm-eval task config {name!r} in {TASK_DIR}")
        return dict(manager.load([name])["tasks"])


def split_of(task) -> str:
    """The split lm-eval scores (its `eval_docs`): test if the config has one, else validation."""
    return task.config.test_split if task.has_test_docs() else task.config.validation_split


@contextlib.contextmanager
def only_docs(task, doc_ids: list[int]) -> Iterator[None]:
    """Narrow the task's scored split to `doc_ids` (in that order) for the duration. lm-eval's own
    `samples=` selection walks the whole split on every call, which chunked evaluation of a
    10k-document set cannot afford."""
    import datasets

    split, full = split_of(task), task.dataset
    task.dataset = datasets.DatasetDict({**full, split: full[split].select(doc_ids)})
    try:
        yield
    finally:
        task.dataset = full


def evaluate_docs(lm, name: str, task, doc_ids: list[int]) -> list[dict]:
    """lm-eval's per-document results (logged samples: arguments, responses, metrics) for `doc_ids`
    of one task, in that order, with `doc_id` set to the document's index in the full split."""
    from lm_eval.evaluator import evaluate

    with quiet(), only_docs(task, doc_ids):
        result = evaluate(lm, {"tasks": {name: task}, "groups": {}, "group_map": {}},
                          log_samples=True, bootstrap_iters=0)
    rows = sorted(result["samples"][name], key=lambda r: r["doc_id"])
    for row in rows:
        row["chunk_index"] = row["doc_id"]
        row["doc_id"] = doc_ids[row["doc_id"]]
    return rows


def local_task_names() -> set[str]:
    """The task names of the shipped configs (`bltbench_arc_easy`, ...)."""
    import yaml

    names = set()
    for path in TASK_DIR.rglob("*.yaml"):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8").replace("!function", ""))
        except yaml.YAMLError:
            continue
        if isinstance(raw, dict) and isinstance(raw.get("task"), str):
            names.add(raw["task"])
        if isinstance(raw, dict) and isinstance(raw.get("group"), str):
            names.add(raw["group"])
    return names


def lm_eval_argv(args: list[str], note=lambda message: None) -> list[str]:
    """lm-eval CLI arguments with our task configs on the include path and stock task names that have a
    local config (`arc_easy` -> `bltbench_arc_easy`) mapped to it, each mapping noted."""
    local = local_task_names()
    out = list(args)
    for i, arg in enumerate(out):
        value_at = i + 1 if arg == "--tasks" else (i if arg.startswith("--tasks=") else None)
        if value_at is None or value_at >= len(out):
            continue
        prefix = "--tasks=" if arg.startswith("--tasks=") else ""
        names = out[value_at][len(prefix):].split(",")
        mapped = []
        for name in names:
            if name not in local and f"bltbench_{name}" in local:
                note(f"{name}: bltbench's local config bltbench_{name} (data from BLTBENCH_DATA, nothing downloaded)")
                name = f"bltbench_{name}"
            mapped.append(name)
        out[value_at] = prefix + ",".join(mapped)
    if not any(a == "--include_path" or a.startswith("--include_path=") for a in out):
        out += ["--include_path", str(TASK_DIR)]
    return out
