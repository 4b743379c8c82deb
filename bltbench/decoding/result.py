"""What a decoding method returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bltbench.decoding.clock import Phases
from bltbench.model.ids import ids_to_bytes


@dataclass
class Generation:
    prompt_ids: list[int]
    output_ids: list[int]  # generated ids, EOS excluded
    stopped_at_eos: bool
    patches: list[int] | Callable[[], list[int]]  # a list, or how to compute it outside the timed region
    extras: dict = field(default_factory=dict)
    stopped_at_string: bool = False  # a stop string ended the output (it is cut off, not included)
    phases: Phases | None = None  # when the prefill, the first round and the generation ended

    @property
    def patch_lengths(self) -> list[int]:
        """Patch lengths over BOS + prompt + output; the first patch is the BOS alone."""
        if callable(self.patches):
            self.patches = self.patches()
        return self.patches

    @property
    def output_bytes(self) -> bytes:
        return ids_to_bytes(self.output_ids)

    @property
    def text(self) -> str:
        return self.output_bytes.decode("utf-8", errors="replace")
