"""What a task is: a generation task (samples with prompts, a byte budget, stop strings, and scoring of
completions) or a scoring task (samples scored by the method's likelihoods)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bltbench.suites.data import DataSource
from bltbench.suites.scorer import Scorer, Usage, cut_at


@dataclass(frozen=True)
class Sample:
    id: str
    prompt: str
    reference: Any = None  # what scoring needs: a reference sentence, a problem dict
    meta: dict = field(default_factory=dict)


class GenerationTask:
    """Subclasses set `name`, `metric`, `max_bytes` and `stop`, and implement the three methods."""

    name: str = ""
    metric: str = ""
    max_bytes: int = 256
    stop: tuple[str, ...] = ()

    def samples(self, data: DataSource, limit: int | None = None) -> list[Sample]:
        raise NotImplementedError

    def postprocess(self, output: str) -> str:
        """The completion proper: the output cut at the first stop string."""
        return cut_at(output, self.stop)

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        raise NotImplementedError

    def aggregate(self, samples: list[Sample], completions: list[str], scores: list[dict]) -> dict[str, Any]:
        """Task-level metrics; by default the mean of each per-sample score."""
        return mean_scores(scores)


@dataclass
class Scored:
    """One scored sample: its scores, what the task wants kept (choices, log-likelihoods, ...), and
    what scoring it cost."""

    sample: Sample
    score: dict[str, float]
    detail: dict
    usage: Usage


class ScoringTask:
    """A task that reads a method's likelihoods instead of its generations (multiple choice, bits per
    byte). Subclasses set `name` and `metric`, and implement `samples` and `evaluate`."""

    name: str = ""
    metric: str = ""

    def samples(self, data: DataSource, limit: int | None = None) -> list[Sample]:
        raise NotImplementedError

    def load(self, data: DataSource) -> None:
        """Read what `evaluate` needs besides the samples (a worker that was handed samples calls this)."""

    def atoms(self, samples: list[Sample]) -> list[list[Sample]]:
        """`samples` cut into the groups `evaluate` scores together, in its order: a sweep split across
        workers keeps each group whole, so no score depends on where the sweep was cut. By default
        every sample alone."""
        return [[s] for s in samples]

    def evaluate(self, scorer: Scorer, samples: list[Sample]) -> Iterator[Scored]:
        """Scores `samples` (any subset of `samples()`, e.g. what a resumed run still lacks), yielding
        each as soon as it is done."""
        raise NotImplementedError

    def aggregate(self, samples: list[Sample], scores: list[dict]) -> dict[str, Any]:
        """Task-level metrics; by default the mean of each per-sample score."""
        return mean_scores(scores)


def mean_scores(scores: list[dict]) -> dict[str, float]:
    """The mean of each per-sample score."""
    keys = scores[0].keys() if scores else []
    return {k: sum(s[k] for s in scores) / len(scores) for k in keys}
