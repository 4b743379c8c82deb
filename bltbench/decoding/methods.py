"""The decoding methods a run can name, and the one entry point that dispatches to them.

Names: `blt`, and `blt-s` with its draft length k (`--k`, or written `blt-s-K` as `compare` does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bltbench.decoding.blt import generate_cached, generate_recompute
from bltbench.decoding.result import Generation
from bltbench.decoding.sampling import Sampler
from bltbench.decoding.speculative import generate_speculative
from bltbench.errors import BltbenchError
from bltbench.model.bundle import ModelBundle
from bltbench.model.incremental import CallObserver

METHODS = ("blt", "blt-s")
MAX_DRAFT = 64


@dataclass(frozen=True)
class MethodSpec:
    name: str
    recompute: bool = False
    k: int | None = None

    @property
    def label(self) -> str:
        if self.name == "blt-s":
            return f"blt-s-{self.k}"
        return "blt-recompute" if self.recompute else self.name

    @property
    def lossless(self) -> bool:
        """Greedy output must equal BLT greedy byte for byte."""
        return self.name in ("blt", "blt-s")

    def validate(self) -> None:
        if self.name not in METHODS:
            raise BltbenchError(f"unknown method {self.name!r} (choose from {', '.join(METHODS)}; e.g. blt-s-8)")
        if self.recompute and self.name != "blt":
            raise BltbenchError("--recompute applies to --method blt only")
        if self.name == "blt-s" and (self.k is None or not 1 <= self.k <= MAX_DRAFT):
            raise BltbenchError(f"blt-s needs a draft length k in 1..{MAX_DRAFT}, got {self.k}")


def parse_method(text: str, k: int | None = None, recompute: bool = False) -> MethodSpec:
    """`blt`, `blt-s` (k from the argument, default 8) or `blt-s-K`."""
    text = text.strip()
    match = re.fullmatch(r"blt-s-(\d+)", text)
    if match:
        spec = MethodSpec("blt-s", recompute, int(match.group(1)))
    elif text == "blt-s":
        spec = MethodSpec("blt-s", recompute, 8 if k is None else k)
    else:
        spec = MethodSpec(text, recompute, None)
    spec.validate()
    return spec


def generate(
    spec: MethodSpec,
    bundle: ModelBundle,
    prompt_ids: list[int],
    max_bytes: int,
    sampler: Sampler,
    observer: CallObserver | None = None,
) -> Generation:
    spec.validate()
    if max_bytes < 0:
        raise BltbenchError(f"the byte budget must be >= 0, got {max_bytes}")
    model, entropy = bundle.require_blt(), bundle.require_entropy()
    args = (model, entropy, bundle.config.patching, prompt_ids, max_bytes, sampler)
    if spec.name == "blt-s":
        return generate_speculative(*args, k=spec.k, observer=observer)
    if spec.recompute:
        return generate_recompute(*args, observer)
    return generate_cached(*args, observer)
