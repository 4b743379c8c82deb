"""Setting the entropy threshold so patches average a target length on held-out text."""

from __future__ import annotations

import torch

from bltbench.errors import BltbenchError
from bltbench.model.config import PatchingConfig
from bltbench.model.entropy import EntropyModel, entropy_nats
from bltbench.model.ids import BOS, OFFSET
from bltbench.model.patching import patch_lengths


@torch.no_grad()
def document_entropies(entropy_model: EntropyModel, docs: list[bytes], window: int = 512) -> list[list[float]]:
    out = []
    for doc in docs:
        for i in range(0, len(doc), window - 1):
            ids = torch.tensor([[BOS] + [b + OFFSET for b in doc[i : i + window - 1]]])
            out.append(entropy_nats(entropy_model(ids))[0].tolist())
    return out


def mean_patch_length(config: PatchingConfig, entropies: list[list[float]]) -> float:
    """Mean length of the patches over the bytes (the BOS patch left out)."""
    n_bytes = n_patches = 0
    for h in entropies:
        lengths = patch_lengths(config, h, len(h))[1:]
        n_bytes += sum(lengths)
        n_patches += len(lengths)
    return n_bytes / max(1, n_patches)


def calibrate_threshold(
    entropies: list[list[float]], target: float, max_patch: int | None, monotonic: bool = False, iterations: int = 40
) -> tuple[float, float]:
    """(threshold, achieved mean length) by bisection: the mean patch length never falls as the
    threshold rises (a higher threshold only removes boundaries)."""
    if target < 1:
        raise BltbenchError(f"the target mean patch length must be >= 1, got {target}")
    if max_patch is not None and target > max_patch:
        raise BltbenchError(f"target mean {target} exceeds the max patch length {max_patch}")
    flat = [x for h in entropies for x in h]
    if not flat:
        raise BltbenchError("no text to calibrate on")
    lo, hi = min(flat) - 1.0, max(flat) + 1.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        config = PatchingConfig(threshold=mid, max_patch_length=max_patch, monotonic=monotonic)
        if mean_patch_length(config, entropies) < target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda t: abs(mean_patch_length(
        PatchingConfig(threshold=t, max_patch_length=max_patch, monotonic=monotonic), entropies) - target))
    achieved = mean_patch_length(PatchingConfig(threshold=best, max_patch_length=max_patch, monotonic=monotonic), entropies)
    return best, achieved
