"""Diversity: type-token ratio of sampled continuations, to set against what each method spends."""

from __future__ import annotations

from bltbench.suites.data import DataSource
from bltbench.suites.tasks.base import GenerationTask, Sample


def type_token_ratio(text: str) -> float:
    tokens = text.split()
    return len(set(tokens)) / len(tokens) if tokens else 0.0


class Diversity(GenerationTask):
    """Open-ended continuations of FLORES devtest English openings (first 6 words); run it with sampling
    (the suite's sampling settings, e.g. the entropy sampler with top-p)."""

    name = "diversity"
    metric = "ttr"
    max_bytes = 192

    def samples(self, data: DataSource, limit: int | None = None) -> list[Sample]:
        lines = data.flores("devtest", "eng")
        lines = lines[:limit] if limit else lines
        return [Sample(f"diversity/{i}", " ".join(line.split()[:6])) for i, line in enumerate(lines)]

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        return {"ttr": type_token_ratio(completion)}
