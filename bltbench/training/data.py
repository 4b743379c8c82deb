"""Byte streams for training: documents as ids (bytes + EOS), windows that start with BOS."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from bltbench.model.ids import BOS, EOS, OFFSET


def split_documents(docs: list[bytes], heldout_fraction: float) -> tuple[list[bytes], list[bytes]]:
    """A stable split by content hash, so the held-out set does not depend on file order."""
    train, heldout = [], []
    for doc in docs:
        h = int(hashlib.sha256(doc).hexdigest()[:8], 16) / 0xFFFFFFFF
        (heldout if h < heldout_fraction else train).append(doc)
    return train, heldout


class ByteStream:
    def __init__(self, docs: list[bytes]) -> None:
        pieces = []
        for doc in docs:
            pieces.append(np.frombuffer(doc, dtype=np.uint8).astype(np.int64) + OFFSET)
            pieces.append(np.array([EOS], dtype=np.int64))
        self.ids = torch.from_numpy(np.concatenate(pieces)) if pieces else torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.ids.numel())

    def _windows_at(self, offsets: torch.Tensor, seq_len: int) -> torch.Tensor:
        """Windows [N, seq_len]: BOS, then seq_len - 1 ids from each offset (one gather for all rows,
        so a step's operator count does not grow with the batch)."""
        index = offsets.unsqueeze(1) + torch.arange(seq_len - 1)
        bos = torch.full((offsets.shape[0], 1), BOS, dtype=self.ids.dtype)
        return torch.cat([bos, self.ids[index]], dim=1)

    def sample(self, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        """[batch, seq_len] windows at random offsets (each starts with BOS)."""
        high = len(self) - (seq_len - 1)
        if high <= 0:
            raise ValueError(f"the stream ({len(self)} ids) is shorter than a window ({seq_len})")
        return self._windows_at(torch.randint(0, high, (batch_size,), generator=generator), seq_len)

    def windows(self, seq_len: int, limit: int) -> torch.Tensor:
        """The first `limit` consecutive non-overlapping windows: a fixed evaluation set."""
        step = seq_len - 1
        count = min(limit, max(1, (len(self) - 1) // step))
        return self._windows_at(torch.arange(count) * step, min(seq_len, len(self) + 1))  # a short stream: one short window
