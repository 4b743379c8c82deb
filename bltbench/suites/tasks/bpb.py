"""Bits per byte on held-out text, under each method's causal path.

A sample is one line (a sentence or a short document), scored from BOS in windows of the scorer's
size, every byte once: the same convention as training's held-out bits per byte, so `bpb-flores-eng`
over the first 100 lines reproduces the bundled model card's regression figure. The task figure is
total bits over total bytes (not a mean of per-line ratios).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from bltbench.suites.data import DataSource
from bltbench.suites.scorer import Scorer, Usage
from bltbench.suites.tasks.base import Sample, Scored, ScoringTask

# Text the bundled model never trained on: FLORES-101 devtest, and the WMT news sets its corpus held
# out entirely (newstest2020 de-en, newstest2014 fr-en; see bltbench/models/tiny/MODEL_CARD.md).
SOURCES = {
    "flores-eng": ("flores", "devtest", "eng"),
    "flores-fra": ("flores", "devtest", "fra"),
    "flores-deu": ("flores", "devtest", "deu"),
    "news2020-en": ("local", "corpus/wmt-de-en/newstest2020.en"),
    "news2020-de": ("local", "corpus/wmt-de-en/newstest2020.de"),
    "news2014-en": ("local", "corpus/wmt-fr-en/newstest2014.en"),
    "news2014-fr": ("local", "corpus/wmt-fr-en/newstest2014.fr"),
}


def source_lines(data: DataSource, source: str) -> list[str]:
    kind, *where = SOURCES[source]
    return data.flores(*where) if kind == "flores" else data.lines(where[0])


class BitsPerByte(ScoringTask):
    metric = "bpb"

    def __init__(self, name: str, sources: tuple[str, ...]) -> None:
        """With several sources, `limit` applies to each, and sample ids name the source."""
        self.name, self.sources = name, sources

    def samples(self, data: DataSource, limit: int | None = None) -> list[Sample]:
        out = []
        for source in self.sources:
            lines = [(i, line) for i, line in enumerate(source_lines(data, source)) if line.strip()]
            for i, line in lines[:limit] if limit else lines:
                sid = f"{self.name}/{source}/{i}" if len(self.sources) > 1 else f"{self.name}/{i}"
                out.append(Sample(sid, "", line, {"source": source}))
        return out

    def evaluate(self, scorer: Scorer, samples: list[Sample]) -> Iterator[Scored]:
        for s in samples:
            usage = Usage()
            text = s.reference.encode()
            bits = -scorer.rolling([text], usage)[0] / math.log(2)
            yield Scored(s, {"bpb": bits / len(text), "bits": bits, "text_bytes": float(len(text))},
                         {"source": s.meta["source"]}, usage)

    def aggregate(self, samples: list[Sample], scores: list[dict]) -> dict[str, Any]:
        def ratio(picked: list[dict]) -> float:
            n = sum(s["text_bytes"] for s in picked)
            return sum(s["bits"] for s in picked) / n if n else float("nan")

        out: dict[str, Any] = {"bpb": ratio(scores), "text_bytes": int(sum(s["text_bytes"] for s in scores))}
        if len(self.sources) > 1:
            out["bpb_by_source"] = {src: ratio([sc for s, sc in zip(samples, scores) if s.meta["source"] == src])
                                    for src in self.sources if any(s.meta["source"] == src for s in samples)}
        return out
