"""Plain BLT decoding, one byte per decoder pass: cached, and the official-style full recompute."""

from __future__ import annotations

import torch

from bltbench.decoding.result import Generation
from bltbench.decoding.sampling import Sampler
from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.config import PatchingConfig
from bltbench.model.entropy import EntropyModel, entropy_nats
from bltbench.model.ids import EOS
from bltbench.model.incremental import CallObserver, IncrementalBLT
from bltbench.model.patching import lengths_from_starts, patch_starts


@torch.inference_mode()
def generate_cached(
    model: ByteLatentTransformer,
    entropy_model: EntropyModel | None,
    patching: PatchingConfig,
    prompt_ids: list[int],
    max_bytes: int,
    sampler: Sampler,
    observer: CallObserver | None = None,
) -> Generation:
    """Per byte: one entropy, encoder and decoder step; per completed patch: one global step."""
    state = IncrementalBLT(model, entropy_model, patching, observer)
    logits = state.extend(prompt_ids)[-1]
    out: list[int] = []
    eos = False
    while len(out) < max_bytes:
        nxt = sampler.sample(logits)
        if nxt == EOS:
            eos = True
            break
        out.append(nxt)
        if len(out) < max_bytes:
            logits = state.extend([nxt])[-1]
    # The flag for a byte not yet run through the model is already known from the one before it.
    total = len(prompt_ids) + len(out)
    return Generation(list(prompt_ids), out, eos, lengths_from_starts(state.starts[:total]))


def entropies_of(entropy_model: EntropyModel | None, ids: torch.Tensor) -> list[float]:
    if entropy_model is None:
        return [0.0] * ids.shape[1]
    return entropy_nats(entropy_model(ids)[0]).tolist()


@torch.inference_mode()
def recompute_logits(
    model: ByteLatentTransformer, entropy_model: EntropyModel | None, patching: PatchingConfig, ids: list[int]
) -> torch.Tensor:
    """Logits [L, V] of a full pass: patch the whole prefix, run every component on all of it."""
    x = torch.tensor([ids], dtype=torch.long, device=model.local_decoder.output.weight.device)
    starts = patch_starts(patching, entropies_of(entropy_model, x), len(ids))
    return model(x, torch.tensor([starts], device=x.device))[0].float()


@torch.inference_mode()
def generate_recompute(
    model: ByteLatentTransformer,
    entropy_model: EntropyModel | None,
    patching: PatchingConfig,
    prompt_ids: list[int],
    max_bytes: int,
    sampler: Sampler,
) -> Generation:
    """What the official generator does: re-patch and rerun the whole model for every byte."""
    ids = list(prompt_ids)
    eos = False
    while len(ids) - len(prompt_ids) < max_bytes:
        nxt = sampler.sample(recompute_logits(model, entropy_model, patching, ids)[-1])
        if nxt == EOS:
            eos = True
            break
        ids.append(nxt)
    x = torch.tensor([ids], dtype=torch.long, device=model.local_decoder.output.weight.device)
    starts = patch_starts(patching, entropies_of(entropy_model, x), len(ids))
    return Generation(list(prompt_ids), ids[len(prompt_ids) :], eos, lengths_from_starts(starts[: len(ids)]))
