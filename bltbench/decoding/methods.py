"""The decoding methods a run can name, and the one entry point that dispatches to them."""

from __future__ import annotations

from dataclasses import dataclass

from bltbench.decoding.blt import generate_cached, generate_recompute
from bltbench.decoding.result import Generation
from bltbench.decoding.sampling import Sampler
from bltbench.errors import BltbenchError
from bltbench.model.bundle import ModelBundle
from bltbench.model.incremental import CallObserver

METHODS = ("blt",)


@dataclass
class MethodSpec:
    name: str
    recompute: bool = False

    def validate(self) -> None:
        if self.name not in METHODS:
            raise BltbenchError(f"unknown method {self.name!r} (choose from {', '.join(METHODS)})")


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
    patching = bundle.config.patching
    if spec.recompute:
        return generate_recompute(model, entropy, patching, prompt_ids, max_bytes, sampler)
    return generate_cached(model, entropy, patching, prompt_ids, max_bytes, sampler, observer)
