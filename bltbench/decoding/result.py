"""What a decoding method returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from bltbench.model.ids import ids_to_bytes


@dataclass
class Generation:
    prompt_ids: list[int]
    output_ids: list[int]  # generated ids, EOS excluded
    stopped_at_eos: bool
    patch_lengths: list[int]  # over BOS + prompt + output; the first patch is the BOS alone
    extras: dict = field(default_factory=dict)

    @property
    def output_bytes(self) -> bytes:
        return ids_to_bytes(self.output_ids)

    @property
    def text(self) -> str:
        return self.output_bytes.decode("utf-8", errors="replace")
