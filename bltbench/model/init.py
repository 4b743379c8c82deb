"""Deterministic random initialisation, so `random:PRESET:SEED` means the same weights everywhere."""

from __future__ import annotations

import torch
from torch import nn

from bltbench.model.layers import RMSNorm


@torch.no_grad()
def init_weights(module: nn.Module, seed: int) -> None:
    """Truncated normals (std = fan_in^-0.5, cut at 3 std) for linears and embeddings, unit norms.

    A private generator keeps the global RNG untouched and the result independent of call order.
    """
    gen = torch.Generator().manual_seed(seed)
    for _, sub in sorted(module.named_modules(), key=lambda kv: kv[0]):
        if isinstance(sub, nn.Linear):
            weight = sub.weight
            std = weight.shape[1] ** -0.5
        elif isinstance(sub, nn.Embedding):
            weight = sub.weight
            std = weight.shape[1] ** -0.5
        elif isinstance(sub, RMSNorm):
            sub.weight.fill_(1.0)
            continue
        else:
            continue
        values = torch.empty(weight.shape, dtype=torch.float32)
        nn.init.trunc_normal_(values, std=std, a=-3 * std, b=3 * std, generator=gen)
        weight.copy_(values)
