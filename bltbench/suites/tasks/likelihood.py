"""Multiple-choice likelihood tasks (ARC-Easy, ARC-Challenge, PIQA, HellaSwag, MMLU) through lm-eval.

The prompts, choices, targets and metrics are lm-eval's (acc; acc_norm, lm-eval's length-normalised
accuracy over characters; acc_bytes, the same over UTF-8 bytes), from the local configs in
`lm_eval_tasks/`, 0-shot. A sample is one document; a group (MMLU) takes `limit` documents from each
subject. Documents are handed to lm-eval's evaluator in chunks, so a killed sweep loses at most one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bltbench.suites.data import DataSource
from bltbench.suites.lm_eval_local import evaluate_docs, load_tasks
from bltbench.suites.scorer import Scorer
from bltbench.suites.tasks.base import Sample, Scored, ScoringTask

METRICS = ("acc", "acc_norm", "acc_bytes")


class LikelihoodTask(ScoringTask):
    metric = "acc"
    chunk = 16  # documents per evaluator call

    def __init__(self, name: str, config: str, prefix: str = "") -> None:
        """`config`: the local lm-eval task or group; `prefix` is cut from subtask names in ids."""
        self.name, self.config, self.prefix = name, config, prefix
        self._tasks: dict[str, Any] | None = None

    def tasks(self, data: DataSource | None = None) -> dict[str, Any]:
        if self._tasks is None:
            self._tasks = load_tasks(self.config, data or DataSource())
        return self._tasks

    def _short(self, subtask: str) -> str:
        return subtask[len(self.prefix):] if self.prefix and subtask.startswith(self.prefix) else subtask

    def samples(self, data: DataSource, limit: int | None = None) -> list[Sample]:
        tasks = self.tasks(data)
        grouped = len(tasks) > 1
        out = []
        for subtask in sorted(tasks):
            n = len(tasks[subtask].eval_docs)
            for i in range(min(n, limit) if limit else n):
                sid = f"{self.name}/{self._short(subtask)}/{i}" if grouped else f"{self.name}/{i}"
                out.append(Sample(sid, "", meta={"subtask": subtask, "doc_id": i}))
        return out

    def load(self, data: DataSource) -> None:
        self.tasks(data)

    def atoms(self, samples: list[Sample]) -> list[list[Sample]]:
        """Chunks of `chunk` documents of one subtask: one evaluator call each."""
        by_subtask: dict[str, list[Sample]] = {}
        for s in samples:
            by_subtask.setdefault(s.meta["subtask"], []).append(s)
        return [group[first : first + self.chunk] for group in by_subtask.values()
                for first in range(0, len(group), self.chunk)]

    def evaluate(self, scorer: Scorer, samples: list[Sample]) -> Iterator[Scored]:
        from bltbench.suites.lm_eval_model import BltbenchLM

        lm = BltbenchLM(scorer)
        tasks = self.tasks()
        for chunk in self.atoms(samples):
            subtask = chunk[0].meta["subtask"]
            rows = evaluate_docs(lm, subtask, tasks[subtask], [s.meta["doc_id"] for s in chunk])
            usage = lm.take_usage()
            for s, row in zip(chunk, rows):
                yield Scored(s, {m: float(row[m]) for m in METRICS}, self._detail(subtask, row),
                             usage[(subtask, row["chunk_index"])])

    @staticmethod
    def _detail(subtask: str, row: dict) -> dict:
        """What lm-eval saw and answered for one document: the per-sample record's body."""
        lls = [float(r[0]) for r in row["filtered_resps"]]
        args = row["arguments"]
        return {
            "lm_eval_task": subtask,
            "doc_id": row["doc_id"],
            "context": args[0][0],
            "choices": [a[1] for a in args],
            "loglikelihoods": lls,
            "is_greedy": [bool(r[1]) for r in row["filtered_resps"]],
            "target": row["target"],
            "chosen": max(range(len(lls)), key=lls.__getitem__),
        }

    def aggregate(self, samples: list[Sample], scores: list[dict]) -> dict[str, Any]:
        out = super().aggregate(samples, scores)
        subtasks = sorted({s.meta["subtask"] for s in samples})
        if len(subtasks) > 1:  # MMLU: the overall figures weigh subjects by size (lm-eval's convention)
            by = {t: [sc["acc"] for s, sc in zip(samples, scores) if s.meta["subtask"] == t] for t in subtasks}
            out["acc_by_subtask"] = {self._short(t): sum(v) / len(v) for t, v in by.items()}
        return out
