"""Decode benchmark: cached vs full-recompute BLT decoding, measured side by side in one process."""

from __future__ import annotations

from dataclasses import dataclass

from bltbench.decoding.methods import MethodSpec, generate
from bltbench.decoding.sampling import Sampler, SamplingConfig
from bltbench.instrumentation.timing import timed
from bltbench.model.bundle import ModelBundle
from bltbench.model.ids import encode_prompt

# Two prompts of the shapes the paper's tasks use: a short news context (148 bytes), and a 4-shot
# French -> English translation prompt (886 bytes, sentences written for bltbench) like FLORES 4-shot.
SHORT_PROMPT = (
    "On Monday, scientists from the Stanford University School of Medicine announced the invention of a "
    "new diagnostic tool that can sort cells by type. "
)
_SHOTS = (
    ("Le conseil municipal a approuvé lundi le nouveau budget pour la rénovation des écoles de la ville.",
     "On Monday the city council approved the new budget for renovating the town's schools."),
    ("Les chercheurs ont découvert que les abeilles reconnaissent les visages humains après un court entraînement.",
     "Researchers found that bees recognise human faces after a short period of training."),
    ("Le train de nuit entre Paris et Vienne reprendra son service au printemps prochain.",
     "The night train between Paris and Vienna will resume service next spring."),
    ("Selon la météo, de fortes pluies sont attendues dans tout le nord du pays ce week-end.",
     "According to the forecast, heavy rain is expected across the north of the country this weekend."),
)
FEW_SHOT_PROMPT = "".join(f"French: {fr}\nEnglish: {en}\n\n" for fr, en in _SHOTS) + (
    "French: La bibliothèque restera ouverte tard pendant la période des examens.\nEnglish:"
)
PROMPTS = {"short": SHORT_PROMPT, "few-shot": FEW_SHOT_PROMPT}


@dataclass
class DecodeRow:
    new_bytes: int
    cached_bytes_per_s: float
    recompute_bytes_per_s: float | None
    same_output: bool | None

    @property
    def speedup(self) -> float | None:
        if self.recompute_bytes_per_s is None:
            return None
        return self.cached_bytes_per_s / self.recompute_bytes_per_s


def decode_benchmark(
    bundle: ModelBundle,
    lengths: list[int],
    prompt: bytes = SHORT_PROMPT.encode(),
    recompute_max: int | None = None,
    device: str = "cpu",
    progress=None,
) -> list[DecodeRow]:
    """Greedy decoding of exactly `n` bytes per length (EOS is suppressed so every run is full length).

    One warm-up run first; then each length is timed for both modes back to back, so machine state
    is shared. Recompute is skipped beyond `recompute_max` bytes.
    """
    ids = encode_prompt(prompt)

    def run(n: int, recompute: bool):
        sampler = Sampler(SamplingConfig(temperature=0.0, suppress_eos=True))
        return timed(lambda: generate(MethodSpec("blt", recompute), bundle, ids, n, sampler), device)

    run(16, False)
    run(4, True)
    rows = []
    for n in lengths:
        cached, t_cached = run(n, False)
        if progress:
            progress(f"cached {n}")
        rec_speed = same = None
        if recompute_max is None or n <= recompute_max:
            rec, t_rec = run(n, True)
            rec_speed = n / t_rec
            same = rec.output_ids == cached.output_ids
            if progress:
                progress(f"recompute {n}")
        rows.append(DecodeRow(n, n / t_cached, rec_speed, same))
    return rows
