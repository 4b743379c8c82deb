"""Plain BLT decoding, one byte per decoder pass: cached, and the official-style full recompute.

Cached, per byte: an encoder and a decoder step over the pending byte (and a global step when that
byte closes a patch), a device-side pick, then the entropy step over the picked byte, so the byte and
the entropy that decides the next patch boundary reach the host together: one transfer per byte.
"""

from __future__ import annotations

import torch

from bltbench.decoding.core import DecodeContext, DecodeRequest, Output, register, to_host
from bltbench.decoding.result import Generation
from bltbench.model.incremental import Call
from bltbench.model.patching import lengths_from_starts, patch_starts


@register("blt")
@torch.inference_mode()
def decode_blt(ctx: DecodeContext, request: DecodeRequest, spec=None) -> Generation:
    state = ctx.session(request)
    out = Output(request)
    pending = len(request.prompt_ids) - 1  # position of the committed byte not yet run
    while not out.done:
        byte = request.sampler.pick(state.extend(1, "step"))
        if out.room == 1:  # the last byte the budget allows: nothing will read its entropy
            out.commit(to_host(byte)[0])
            break
        state.write(byte, pending + 1)
        entropy = state.entropies(pending + 1, 1, "step")
        host = to_host(byte) if entropy is None else to_host(byte, entropy)
        out.commit(host[0])
        state.push_entropies(host[1] if entropy is not None else None, 1)
        pending += 1
    return out.generation(out.committed_patches(state))


@torch.inference_mode()
def recompute_logits(ctx: DecodeContext, ids: list[int], role: str = "step") -> torch.Tensor:
    """Logits [L, V] of a full pass: patch the whole prefix, run every component on all of it."""
    x = torch.tensor([ids], dtype=torch.long, device=ctx.device)
    starts = patch_starts(ctx.patching, ctx.entropies(ids), len(ids))
    if ctx.observer is not None:
        if ctx.entropy_model is not None and ctx.patching.mode == "entropy":
            ctx.observer(Call("entropy", role, len(ids), 0))
        patches = sum(starts[: len(ids)])
        for component, positions in (("encoder", len(ids)), ("global", patches), ("decoder", len(ids))):
            ctx.observer(Call(component, role, positions, 0,
                              latents=min(ctx.model.config.cross_attn_window_decoder or 1, patches)))
    return ctx.model(x, torch.tensor([starts], device=x.device))[0].float()


@register("blt-recompute")
@torch.inference_mode()
def decode_recompute(ctx: DecodeContext, request: DecodeRequest, spec=None) -> Generation:
    """What the official generator does: re-patch and rerun the whole model for every byte."""
    out = Output(request)
    while not out.done:
        out.commit([request.sampler.sample(recompute_logits(ctx, request.prompt_ids + out.ids)[-1])])

    def patches() -> list[int]:  # computed when asked, outside the timed region
        ids = request.prompt_ids + out.ids
        return lengths_from_starts(patch_starts(ctx.patching, ctx.entropies(ids), len(ids))[: len(ids)])

    return out.generation(patches)
