"""BLT-D block diffusion and BLT-DV diffusion-draft verification (DESIGN.md sections 6 and 7).

BLT-D: after the clean prefix, B MASK cells read the last latent; each decoder pass predicts every
masked cell and a sampler commits a set of them, until the block is full. Then the block is committed:
the entropy model, encoder and global run once over it, fused into the decoder call that opens the next
block (that call also writes the block's clean keys/values). Patch boundaries inside a block do not
interrupt it.

BLT-DV: one diffusion pass drafts a whole block; one causal verification pass accepts the longest
agreeing prefix plus the verifier's next byte, as in BLT-S. Greedy output equals BLT-D's own
autoregressive greedy output.

Host transfers: BLT-D, one per decoder pass (the cells after the commit set, chosen on the device).
A finished block's entropies decide its patches before the global model runs: when the pass that fills
the block is known in advance (one cell was left) they are computed in it and travel with its cells;
when a pass commits several last cells at once they follow in a transfer of their own;
BLT-DV, two per round (the drafts' entropies; then the acceptance, the bonus byte and the bonus's
entropy, run ahead on the device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bltbench.decoding.core import DecodeContext, DecodeRequest, Output, register, to_host
from bltbench.decoding.result import Generation
from bltbench.decoding.sampling import Sampler
from bltbench.decoding.speculative import accept, settle
from bltbench.errors import BltbenchError
from bltbench.model.ids import EOS, MASK
from bltbench.model.incremental import to_device
from bltbench.model.patching import lengths_from_starts

SAMPLERS = ("confidence", "entropy", "eb")
BLOCK_SIZES = (4, 8, 16)


@dataclass(frozen=True)
class DiffusionConfig:
    """`confidence`: commit every masked cell whose top probability exceeds alpha, else the most
    confident one. `entropy`: sort masked cells by entropy (nats), commit the largest prefix whose summed
    entropy is <= gamma, at least one. `eb`: the EB-Sampler rule (arXiv 2505.24857), the largest prefix
    with sum(H) - max(H) <= gamma."""

    block: int = 8
    sampler: str = "confidence"
    alpha: float = 0.7
    gamma: float = 1.5

    def validate(self, trained_blocks: tuple[int, ...] = BLOCK_SIZES) -> None:
        if self.block not in BLOCK_SIZES:
            raise BltbenchError(f"block size {self.block} is not supported (choose from {', '.join(map(str, BLOCK_SIZES))})")
        if self.block not in trained_blocks:
            raise BltbenchError(
                f"block size {self.block} is larger than this model's BLT-D weights allow "
                f"(trained for {', '.join(map(str, trained_blocks))})"
            )
        if self.sampler not in SAMPLERS:
            raise BltbenchError(f"unknown sampler {self.sampler!r} (choose from {', '.join(SAMPLERS)})")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise BltbenchError(f"alpha must be a finite number >= 0, got {self.alpha}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise BltbenchError(f"gamma must be a finite number >= 0, got {self.gamma}")


def cell_distributions(logits: torch.Tensor, sampler: Sampler) -> torch.Tensor:
    """Per-cell distributions [B, V] that confidences and entropies are read from: after the special-id
    ban, temperature and top-p; under greedy decoding, the plain softmax (argmax picks the value)."""
    if sampler.config.greedy:
        return torch.softmax(sampler.allowed(logits), dim=-1)
    return sampler.probs(logits)


def choose_cells(probs: torch.Tensor, masked: torch.Tensor, config: DiffusionConfig) -> torch.Tensor:
    """Which masked cells (rows of probs [B, V], `masked` [B] bool) to commit in this pass, as a bool
    mask [B] chosen on the device; never empty while a cell is masked."""
    if config.sampler == "confidence":
        confidence = probs.max(dim=-1).values.masked_fill(~masked, -1.0)
        chosen = masked & (confidence > config.alpha)
        fallback = torch.zeros_like(masked).scatter(0, confidence.argmax(0, keepdim=True), True)
        return torch.where(chosen.any(), chosen, fallback)
    entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum(-1)
    entropy = entropy.masked_fill(~masked, float("inf"))
    order = torch.argsort(entropy, stable=True)
    sorted_h = entropy[order]
    cumulative = torch.cumsum(sorted_h, 0)
    if config.sampler == "entropy":
        fits = cumulative <= config.gamma
    else:  # eb: sum(H) - max(H) over the prefix; sorted ascending, so the max is the last element
        fits = cumulative - sorted_h <= config.gamma
    count = fits.long().cumprod(0).sum().clamp_min(1)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(order.shape[0], device=order.device))
    return masked & (rank < count)


def commit_pass(cells: torch.Tensor, logits: torch.Tensor, sampler: Sampler, config: DiffusionConfig) -> torch.Tensor:
    """Cells [B] after one decoder pass: the chosen masked cells take their predicted bytes."""
    probs = cell_distributions(logits, sampler)
    values = probs.argmax(-1) if sampler.config.greedy else sampler.draw(probs)
    return torch.where(choose_cells(probs, cells == MASK, config), values, cells)


def block_entropies(state, cells: torch.Tensor) -> torch.Tensor | None:
    """The entropies of a block the current pass fills, computed before its transfer so they travel
    with its cells (discarded if the output ends at an EOS in it)."""
    at = state.length
    state.write(cells, at)
    return state.entropies_ahead(to_device([at], cells.device), 0, cells.shape[0], at, "step")


def _settled_eos(cells: list[int]) -> bool:
    """A committed EOS with every cell before it committed: the block's text is final there."""
    return EOS in cells and MASK not in cells[: cells.index(EOS)]


@register("blt-d", weights="blt-d", lossless=False)
@torch.inference_mode()
def decode_block_diffusion(ctx: DecodeContext, request: DecodeRequest, spec) -> Generation:
    config: DiffusionConfig = spec.diffusion
    state = ctx.session(request, slack=config.block, span=config.block)
    out = Output(request)
    clean = 1  # committed positions not yet run: the prompt's last byte, then each finished block
    while not out.done:
        size = min(config.block, out.room)
        cells = torch.full((size,), MASK, dtype=torch.long, device=ctx.device)
        _, logits = state.extend_with_block(clean, cells, "step")
        masked, entropies = size, None
        while True:
            out.passes += 1
            cells = commit_pass(cells, logits, request.sampler, config)
            if masked == 1 and size < out.room:  # this pass fills the block, and a next block will read it
                entropies = block_entropies(state, cells)
            host = to_host(cells) if entropies is None else to_host(cells, entropies)
            block = [int(c) for c in host[0]]
            masked = block.count(MASK)
            if masked == 0 or _settled_eos(block):
                break
            logits = state.extend_with_block(0, cells, "step")[1]
        out.commit(block)
        if entropies is not None:
            state.place_ahead(None if out.done else state.length)
        if not out.done:  # the block is committed: its entropies place its patches
            if entropies is None:
                state.write(cells, state.length)
                state.place_patches(state.length + len(block), "step")
            else:
                state.settle_ahead(state.length, host[1], len(block))
            clean = len(block)
    ids = request.prompt_ids + out.ids
    known = state.patches.copy()  # the session's buffers may serve another request before this is read

    def patches() -> list[int]:  # computed when asked, outside the timed region: the last block never ran
        flags = known.preview(ctx.entropies(ids)[len(known) :])
        return lengths_from_starts(flags[: len(ids)])

    return out.generation(patches, {"decoder_passes": out.passes})


@register("blt-dv", weights="blt-d")
@torch.inference_mode()
def decode_diffusion_verified(ctx: DecodeContext, request: DecodeRequest, spec) -> Generation:
    config: DiffusionConfig = spec.diffusion
    sampler = request.sampler
    state = ctx.session(request, slack=config.block + 1)
    out = Output(request)
    while not out.done:
        base = state.length  # the pending byte's position (written, its entropy known)
        n = min(config.block, out.room - 1)
        if n == 0:  # the budget leaves room for one byte: a plain causal step
            out.commit(to_host(sampler.pick(state.extend(1, "step")))[0])
            break
        cells = torch.full((n,), MASK, dtype=torch.long, device=ctx.device)
        clean_logits, block_logits = state.extend_with_block(1, cells, "draft")
        q = cell_distributions(block_logits, sampler)
        drafts = q.argmax(-1) if request.greedy else sampler.draw(q)
        state.write(drafts, base + 1)
        state.place_patches(base + 1 + n, "verify")
        verify_logits = torch.cat([clean_logits[-1:], state.extend(n, "verify")])
        accepted, bonus = accept(drafts, None if request.greedy else q, verify_logits, sampler)
        start, latest = base + 1 + accepted, base + 1 + n  # the bonus's entropy, run ahead
        state.write_ahead(bonus, start, 0, latest)
        ahead = state.entropies_ahead(start, 0, 1, latest, "step")
        kept, values = settle(state, out, base, drafts, accepted, bonus, *([] if ahead is None else [ahead]))
        if out.done:
            state.place_ahead(None)
            break
        state.place_ahead(base + 1 + kept)
        state.settle_ahead(base + 1 + kept, values[0] if values else None, 1)
    return out.generation(out.committed_patches(state), out.verification_extras())
