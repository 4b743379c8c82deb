"""Decode benchmark: cached vs full-recompute BLT decoding, measured side by side in one process."""

from __future__ import annotations

from dataclasses import dataclass

from bltbench.decoding.methods import MethodSpec, generate
from bltbench.decoding.sampling import Sampler, SamplingConfig
from bltbench.instrumentation.timing import timed
from bltbench.model.bundle import ModelBundle
from bltbench.model.ids import encode_prompt

# A realistic prompt: two news sentences, as a FLORES-style context would start.
DEFAULT_PROMPT = (
    "On Monday, scientists from the Stanford University School of Medicine announced the invention of a "
    "new diagnostic tool that can sort cells by type. "
)


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
    prompt: bytes = DEFAULT_PROMPT.encode(),
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
