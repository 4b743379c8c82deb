"""Bits per byte of a model's causal next-byte path."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.config import PatchingConfig
from bltbench.model.entropy import EntropyModel
from bltbench.model.ids import BOS, OFFSET, PAD
from bltbench.training.objective import batch_patch_starts


def _chunks(docs: list[bytes], window: int) -> list[list[int]]:
    """Each document as BOS-prefixed chunks of at most `window` ids (every byte scored once)."""
    out = []
    for doc in docs:
        for i in range(0, len(doc), window - 1):
            out.append([BOS] + [b + OFFSET for b in doc[i : i + window - 1]])
    return out


@torch.no_grad()
def bits_per_byte(
    model: ByteLatentTransformer | EntropyModel,
    entropy_model: EntropyModel | None,
    patching: PatchingConfig | None,
    docs: list[bytes],
    window: int = 512,
    batch_size: int = 16,
) -> tuple[float, int]:
    """(bits per byte, bytes scored). A BLT is patched by `entropy_model`; an entropy model scores alone.
    Documents are cut into BOS-prefixed windows and batched by length (padding never leaks: all paths
    are causal)."""
    device = next(model.parameters()).device
    chunks = sorted(_chunks(docs, window), key=len)
    total_nats, total_bytes = 0.0, 0
    for i in range(0, len(chunks), batch_size):
        group = chunks[i : i + batch_size]
        width = max(len(c) for c in group)
        ids = torch.tensor([c + [PAD] * (width - len(c)) for c in group], device=device)
        if isinstance(model, EntropyModel):
            logits = model(ids)
        else:
            logits = model(ids, batch_patch_starts(entropy_model, patching, ids))
        targets = ids[:, 1:]
        nats = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                               ignore_index=PAD, reduction="sum")
        total_nats += float(nats)
        total_bytes += int((targets != PAD).sum())
    return total_nats / math.log(2) / max(1, total_bytes), total_bytes
