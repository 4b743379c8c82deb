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


@dataclass
class MeterOverheadRow:
    method: str
    off_s: float  # best-of-repeats seconds with the meter switched off (the least noisy estimate)
    on_s: float
    calls: int  # meter records per decode
    per_call_s: float  # cost of one record, timed in a tight loop

    @property
    def overhead(self) -> float:
        return self.on_s / self.off_s - 1

    @property
    def estimated_overhead(self) -> float:
        """Records x cost per record over the decode time: immune to machine noise."""
        return self.calls * self.per_call_s / self.off_s


def meter_call_cost(n: int = 200_000) -> float:
    """Seconds per meter record, as `IncrementalBLT._observe` makes them."""
    import time

    from bltbench.instrumentation.meter import Meter
    from bltbench.model.incremental import Call

    meter = Meter()
    t0 = time.perf_counter()
    for i in range(n):
        meter(Call("decoder", "step", 1, min(i, 511)))
    return (time.perf_counter() - t0) / n


def meter_overhead(
    bundle: ModelBundle, methods: list[str], new_bytes: int, repeats: int = 5, prompt: bytes = SHORT_PROMPT.encode()
) -> list[MeterOverheadRow]:
    """Decode time with the meter on vs off, alternating runs so both see the same machine state."""
    from bltbench.decoding.methods import parse_method
    from bltbench.instrumentation.measure import measure

    config = SamplingConfig(temperature=0.0, suppress_eos=True)
    ids = encode_prompt(prompt)
    per_call = meter_call_cost()
    rows = []
    for name in methods:
        spec = parse_method(name)
        on, off, calls = [], [], 0
        for _ in range(repeats):
            off.append(measure(spec, bundle, ids, new_bytes, config, meter_enabled=False).wall_s)
            metered = measure(spec, bundle, ids, new_bytes, config, meter_enabled=True)
            on.append(metered.wall_s)
            calls = sum(metered.nfe.values()) + sum(metered.prefill_nfe.values())
        rows.append(MeterOverheadRow(spec.label, min(off), min(on), calls, per_call))
    return rows
