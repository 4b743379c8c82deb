"""BLT-D block diffusion and BLT-DV diffusion-draft verification (DESIGN.md sections 6 and 7).

BLT-D: after the clean prefix, B MASK cells read the last latent; each decoder pass predicts every
masked cell and a sampler commits a set of them, until the block is full. Then the block is committed:
the entropy model, encoder and global run once over it, fused into the decoder call that opens the next
block (that call also writes the block's clean keys/values). Patch boundaries inside a block do not
interrupt it.

BLT-DV: one diffusion pass drafts a whole block; one causal verification pass accepts the longest
agreeing prefix plus the verifier's next byte, as in BLT-S. Greedy output equals BLT-D's own
autoregressive greedy output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bltbench.decoding.blt import prefill
from bltbench.decoding.result import Generation
from bltbench.decoding.sampling import Sampler
from bltbench.decoding.speculative import VerifiedRounds, rounds_generation
from bltbench.decoding.stopping import NO_STOP, StopStrings
from bltbench.errors import BltbenchError
from bltbench.model.config import PatchingConfig
from bltbench.model.diffusion import BlockDiffusionBLT
from bltbench.model.entropy import EntropyModel
from bltbench.model.ids import EOS, MASK
from bltbench.model.incremental import CallObserver, IncrementalBLT
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
    """Per-cell distributions [M, V] that confidences and entropies are read from: after the special-id
    ban, temperature and top-p; under greedy decoding, the plain softmax (argmax picks the value)."""
    if sampler.config.greedy:
        masked = logits.float().clone()
        if sampler.config.banned:
            masked[:, sampler.config.banned] = float("-inf")
        return torch.softmax(masked, dim=-1)
    return sampler.probs(logits)


def choose_cells(probs: torch.Tensor, config: DiffusionConfig) -> list[int]:
    """Which of the M masked cells (rows of probs) to commit in this pass; never empty."""
    if config.sampler == "confidence":
        confidence = probs.max(dim=-1).values
        chosen = torch.nonzero(confidence > config.alpha).flatten().tolist()
        return chosen or [int(confidence.argmax())]
    logp = torch.log(probs.clamp_min(1e-30))
    entropy = -(probs * logp).sum(-1)
    order = torch.argsort(entropy, stable=True).tolist()
    sorted_h = entropy[order]
    cumulative = torch.cumsum(sorted_h, 0)
    if config.sampler == "entropy":
        fits = cumulative <= config.gamma
    else:  # eb: sum(H) - max(H) over the prefix; sorted ascending, so the max is the last element
        fits = cumulative - sorted_h <= config.gamma
    count = max(1, int(fits.long().cumprod(0).sum()))
    return order[:count]


def _values(probs: torch.Tensor, chosen: list[int], sampler: Sampler) -> list[int]:
    if sampler.config.greedy:
        return probs[chosen].argmax(-1).tolist()
    return torch.multinomial(probs[chosen], 1, generator=sampler.generator).flatten().tolist()


def _settled_eos(cells: list[int]) -> bool:
    """A committed EOS with every cell before it committed: the block's text is final there."""
    return EOS in cells and MASK not in cells[: cells.index(EOS)]


@torch.inference_mode()
def generate_block_diffusion(
    model: BlockDiffusionBLT,
    entropy_model: EntropyModel | None,
    patching: PatchingConfig,
    prompt_ids: list[int],
    max_bytes: int,
    sampler: Sampler,
    config: DiffusionConfig,
    observer: CallObserver | None = None,
    stop: StopStrings = NO_STOP,
) -> Generation:
    state = IncrementalBLT(model, entropy_model, patching, observer)
    prefill(state, prompt_ids)
    state.role = "step"
    out: list[int] = []
    eos = stopped = False
    clean = [prompt_ids[-1]]  # committed bytes not yet run through the model
    passes = 0
    while len(out) < max_bytes and not (eos or stopped):
        cells = [MASK] * min(config.block, max_bytes - len(out))
        _, logits = state.extend_with_block(clean, cells)
        passes += 1
        while True:
            masked = [i for i, c in enumerate(cells) if c == MASK]
            probs = cell_distributions(logits[masked], sampler)
            chosen = choose_cells(probs, config)
            for i, value in zip(chosen, _values(probs, chosen, sampler)):
                cells[masked[i]] = value
            if MASK not in cells or _settled_eos(cells):
                break
            logits = state.block_pass(cells)
            passes += 1
        if _settled_eos(cells):
            cells = cells[: cells.index(EOS)]
            eos = True
        before = len(out)
        out.extend(cells)
        stopped = stop.cut(out, before)
        clean = cells
    total = len(prompt_ids) + len(out)
    tail = (prompt_ids + out)[len(state) : total]

    def patches() -> list[int]:  # run when asked, after timing: the last block was never run
        with torch.inference_mode():
            return lengths_from_starts(state.preview_starts(tail)[:total])

    return Generation(list(prompt_ids), out, eos, patches, {"decoder_passes": passes}, stopped)


@torch.inference_mode()
def generate_diffusion_verified(
    model: BlockDiffusionBLT,
    entropy_model: EntropyModel | None,
    patching: PatchingConfig,
    prompt_ids: list[int],
    max_bytes: int,
    sampler: Sampler,
    config: DiffusionConfig,
    observer: CallObserver | None = None,
    stop: StopStrings = NO_STOP,
) -> Generation:
    state = IncrementalBLT(model, entropy_model, patching, observer)
    prefill(state, prompt_ids)
    greedy = sampler.config.greedy
    rounds = VerifiedRounds([], max_bytes, stop)
    pending = prompt_ids[-1]
    while not rounds.done:
        n_draft = min(config.block, max_bytes - len(rounds.out) - 1)
        state.role = "draft"
        if n_draft > 0:
            clean_logits, block_logits = state.extend_with_block([pending], [MASK] * n_draft)
            q = cell_distributions(block_logits, sampler)
            drafts = q.argmax(-1).tolist() if greedy else torch.multinomial(q, 1, generator=sampler.generator).flatten().tolist()
            if EOS in drafts:
                drafts = drafts[: drafts.index(EOS) + 1]
            base = len(state)
            state.role = "verify"
            verify_logits = torch.cat([clean_logits[-1:], state.extend(drafts)])
        else:  # the budget leaves room for one byte: a plain causal step
            base = len(state) + 1
            drafts, q = [], None
            verify_logits = state.extend([pending])[-1:]
        draft_probs = list(q[: len(drafts)]) if drafts and not greedy else []
        pending = rounds.settle(state, base, drafts, draft_probs, verify_logits, sampler)
    return rounds_generation(prompt_ids, rounds, state)
