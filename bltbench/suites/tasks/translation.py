"""FLORES-101 translation, k-shot from the dev pool, scored on devtest with sacrebleu (13a BLEU, chrF;
spBLEU with the flores101 tokenizer whenever its SentencePiece model is available)."""

from __future__ import annotations

from typing import Any

import sacrebleu

from bltbench.suites.data import DataSource
from bltbench.suites.tasks.base import GenerationTask, Sample

NAMES = {"eng": "English", "fra": "French", "deu": "German"}


class FloresTranslation(GenerationTask):
    metric = "bleu"
    max_bytes = 256
    stop = ("\n",)

    def __init__(self, source: str, target: str, shots: int = 4) -> None:
        self.source, self.target, self.shots = source, target, shots
        self.name = f"flores-{source[:2]}-{target[:2]}"

    def prompt(self, shots: list[tuple[str, str]], sentence: str) -> str:
        s, t = NAMES[self.source], NAMES[self.target]
        return "".join(f"{s}: {a}\n{t}: {b}\n\n" for a, b in shots) + f"{s}: {sentence}\n{t}:"

    def samples(self, data: DataSource, limit: int | None = None) -> list[Sample]:
        dev_src, dev_tgt = data.flores("dev", self.source), data.flores("dev", self.target)
        shots = list(zip(dev_src, dev_tgt))[: self.shots]  # the first k dev pairs, the same for every sample
        src, tgt = data.flores("devtest", self.source), data.flores("devtest", self.target)
        rows = list(zip(src, tgt))[:limit] if limit else list(zip(src, tgt))
        return [Sample(f"{self.name}/{i}", self.prompt(shots, s), t) for i, (s, t) in enumerate(rows)]

    def postprocess(self, output: str) -> str:
        return super().postprocess(output).strip()

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        return {
            "bleu": sacrebleu.sentence_bleu(completion, [sample.reference]).score,
            "chrf": sacrebleu.sentence_chrf(completion, [sample.reference]).score,
        }

    def aggregate(self, samples: list[Sample], completions: list[str], scores: list[dict]) -> dict[str, Any]:
        refs = [[s.reference for s in samples]]
        bleu = sacrebleu.metrics.BLEU(tokenize="13a")
        chrf = sacrebleu.metrics.CHRF()
        out: dict[str, Any] = {
            "bleu": bleu.corpus_score(completions, refs).score,
            "chrf": chrf.corpus_score(completions, refs).score,
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
        }
        try:  # spBLEU: the flores101 tokenizer downloads its SentencePiece model on first use
            sp = sacrebleu.metrics.BLEU(tokenize="flores101")
            out["spbleu"] = sp.corpus_score(completions, refs).score
            out["spbleu_signature"] = str(sp.get_signature())
        except Exception:  # offline or the tokenizer is unavailable: report what we can
            out["spbleu"] = None
        return out
