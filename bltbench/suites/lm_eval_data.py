"""Datasets for the local lm-eval task configs (`custom_dataset:` in lm_eval_tasks/*.yaml).

lm-eval calls these with the task's metadata (the task manager adds `data_dir`) and its
`dataset_kwargs`; each returns an in-memory DatasetDict in the Hugging Face schema lm-eval's own
configs expect, read through `DataSource`: never the hub when the data directory has the files, and
offline a missing file is one error naming BLTBENCH_DATA / --data-dir.
"""

from __future__ import annotations

from typing import Any

import datasets

from bltbench.suites.data import DataSource


def _dict(**splits: list[dict]) -> datasets.DatasetDict:
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})


def arc(subset: str, data_dir: str | None = None, **_: Any) -> datasets.DatasetDict:
    return _dict(test=DataSource(data_dir).arc(subset, "Test"))


def piqa(data_dir: str | None = None, **_: Any) -> datasets.DatasetDict:
    return _dict(validation=DataSource(data_dir).piqa())


def hellaswag(data_dir: str | None = None, **_: Any) -> datasets.DatasetDict:
    """With lm-eval's own HellaSwag preprocessing (query, choices, gold) applied once, here."""
    from lm_eval.tasks.hellaswag.utils import process_docs

    rows = datasets.Dataset.from_list(DataSource(data_dir).hellaswag())
    was_enabled = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        processed = process_docs(rows)
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    return datasets.DatasetDict({"validation": processed})


def mmlu(subject: str, data_dir: str | None = None, **_: Any) -> datasets.DatasetDict:
    source = DataSource(data_dir)
    return _dict(test=source.mmlu(subject, "test"), dev=source.mmlu(subject, "dev"))
