"""Hash n-gram embeddings (DESIGN.md section 2).

The n-gram ending at position j (left-padded with BOE) hashes to sum_i window[i] * p^i, oldest id
first, in wrapping signed 64-bit arithmetic, then a non-negative modulo by the bucket count.
All sizes are hashed in one vectorised pass over windows of the largest n.
"""

from __future__ import annotations

import torch
from torch import nn

from bltbench.model.ids import BOE

# The official code's primes, one per hash function (it has eleven; a twelfth function does not exist there).
HASH_PRIMES = (1000000007, 5915587277, 1500450271, 3267000013, 5754853343, 4093082899, 9576890767, 3628273133,
               2860486313, 5463458053, 3367900313)


def _wrap64(x: int) -> int:
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


def power_matrix(specs: list[tuple[int, int]], width: int) -> torch.Tensor:
    """[width, n_tables] int64: column (n, p) holds p^0..p^(n-1) on the last n rows, zeros above."""
    m = torch.zeros(width, len(specs), dtype=torch.int64)
    for col, (n, prime) in enumerate(specs):
        for i in range(n):
            m[width - n + i, col] = _wrap64(pow(prime, i, 1 << 64))
    return m


def ngram_buckets(ids: torch.Tensor, powers: torch.Tensor, buckets: int, history: torch.Tensor | None = None) -> torch.Tensor:
    """Bucket ids [B, T, n_tables] of the n-grams ending at each position of `ids` [B, T].

    `history` [B, >= width-1] holds the ids just before `ids`; without it the sequence starts at
    `ids[:, 0]` and windows are padded with BOE.
    """
    ctx = powers.shape[0] - 1
    if history is None:
        pad = torch.full((ids.shape[0], ctx), BOE, dtype=torch.int64, device=ids.device)
    else:
        pad = history[:, history.shape[1] - ctx :]
    windows = torch.cat([pad, ids], dim=1).unfold(1, ctx + 1, 1)  # [B, T, width], oldest first
    hashes = (windows.unsqueeze(-1) * powers).sum(-2)  # int64 products and sums wrap
    return torch.remainder(hashes, buckets)


class HashEmbeddings(nn.ModuleList):
    """One embedding table per (hash function, n-gram size), in the official ModuleList order."""

    def __init__(self, sizes: tuple[int, ...], buckets: int, n_functions: int, dim: int) -> None:
        specs = [(n, HASH_PRIMES[f]) for f in range(n_functions) for n in sizes]
        super().__init__(nn.Embedding(buckets, dim) for _ in specs)
        self.specs = specs
        self.buckets = buckets
        self.register_buffer("powers", power_matrix(specs, max(sizes)), persistent=False)

    def reset_buffers(self) -> None:
        """Recompute the hash powers (after a module built on the meta device is materialised)."""
        self.powers = power_matrix(self.specs, max(n for n, _ in self.specs)).to(self.powers.device)

    def forward(self, ids: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        index = ngram_buckets(ids, self.powers, self.buckets, history)
        out = self[0](index[..., 0])
        for i in range(1, len(self)):
            out = out + self[i](index[..., i])
        return out
