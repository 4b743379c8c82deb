"""The BLT-D training objective (DESIGN.md section 6), and the plain next-byte loss it contains.

Blocks of B bytes start at patch starts (all but the BOS patch), at most `max_blocks` per sequence.
Each block draws t ~ U(t_min, 1) (per block by default; `t_per="sequence"` draws one per sequence, as
the paper likely does) and each of its bytes becomes MASK independently with probability t.

    loss = L_clean + mask_weight * L_mask
    L_clean = mean next-byte cross-entropy over the clean sequence
    L_mask  = sum over masked cells of CE / t, divided by the number of block cells ("cells", an
              unbiased per-cell ELBO estimate), or by the number of masked cells ("masked").

t_min keeps 1/t bounded (t near 0 masks almost nothing but would weigh it without limit).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bltbench.errors import BltbenchError
from bltbench.model.diffusion import BlockDiffusionBLT
from bltbench.model.ids import MASK, PAD
from bltbench.model.scoring import batch_patch_starts  # noqa: F401  (re-exported: the trainer imports it here)


@dataclass
class DiffusionObjective:
    block_sizes: tuple[int, ...] = (4, 8, 16)  # one size is drawn per batch
    t_per: str = "block"  # "block" or "sequence"
    t_min: float = 0.05
    mask_weight: float = 1.0
    normalize: str = "cells"  # "cells" or "masked"
    max_blocks: int = 32

    def validate(self) -> None:
        if self.t_per not in ("block", "sequence"):
            raise BltbenchError(f"t_per must be 'block' or 'sequence', got {self.t_per!r}")
        if self.normalize not in ("cells", "masked"):
            raise BltbenchError(f"normalize must be 'cells' or 'masked', got {self.normalize!r}")
        if not 0 < self.t_min <= 1:
            raise BltbenchError(f"t_min must be in (0, 1], got {self.t_min}")
        if not self.block_sizes or min(self.block_sizes) < 1 or self.max_blocks < 1:
            raise BltbenchError("block sizes and max_blocks must be positive")


def next_byte_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of position p predicting byte p + 1 (PAD targets ignored), in nats."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), ignore_index=PAD)


@dataclass
class BlockBatch:
    starts: torch.Tensor  # [N, nB] block start positions, -1 = none
    targets: torch.Tensor  # [N, nB, B] true bytes (PAD past the end)
    cells: torch.Tensor  # [N, nB, B] decoder inputs: targets with some set to MASK
    masked: torch.Tensor  # [N, nB, B] bool
    valid: torch.Tensor  # [N, nB, B] bool: the cell lies inside the sequence
    t: torch.Tensor  # [N, nB] masking rate per block


def sample_blocks(
    ids: torch.Tensor, starts: torch.Tensor, size: int, objective: DiffusionObjective, generator: torch.Generator
) -> BlockBatch:
    n, length = ids.shape
    device = ids.device
    chosen = []
    for row in starts[:, 1:length].tolist():  # positions 1 .. L-1; position 0 is the BOS patch
        candidates = [p + 1 for p, flag in enumerate(row) if flag]
        if len(candidates) > objective.max_blocks:
            pick = torch.randperm(len(candidates), generator=generator)[: objective.max_blocks].sort().values
            candidates = [candidates[i] for i in pick.tolist()]
        chosen.append(candidates)
    n_blocks = max(1, max(len(c) for c in chosen))
    block_starts = torch.full((n, n_blocks), -1, dtype=torch.long)
    for i, c in enumerate(chosen):
        block_starts[i, : len(c)] = torch.tensor(c, dtype=torch.long)
    block_starts = block_starts.to(device)
    pos = block_starts.unsqueeze(-1) + torch.arange(size, device=device)
    valid = (block_starts.unsqueeze(-1) >= 0) & (pos < length)
    targets = torch.where(valid, torch.gather(ids, 1, pos.clamp(0, length - 1).reshape(n, -1)).reshape(pos.shape), PAD)
    shape = (n, 1) if objective.t_per == "sequence" else (n, n_blocks)
    t = objective.t_min + (1 - objective.t_min) * torch.rand(shape, generator=generator)
    t = t.expand(n, n_blocks).to(device)
    masked = (torch.rand(pos.shape, generator=generator).to(device) < t.unsqueeze(-1)) & valid
    cells = torch.where(masked, torch.full_like(targets, MASK), targets)
    return BlockBatch(block_starts, targets, cells, masked, valid, t)


def diffusion_loss(
    model: BlockDiffusionBLT,
    ids: torch.Tensor,
    starts: torch.Tensor,
    objective: DiffusionObjective,
    generator: torch.Generator,
    block_size: int | None = None,
    rows: slice | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss to minimise, {"clean": L_clean, "mask": L_mask, "masked_ce": mean CE of masked cells}).

    With `rows` (one data-parallel rank's share of the global batch `ids`), blocks and masks are still
    drawn for the whole batch, so every rank's generator and noise are the single process's, and the
    masked terms are normalised by the whole batch's counts and scaled by its share: the mean of the
    ranks' losses (what data-parallel gradients average) is then the single-process loss."""
    if block_size is None:
        block_size = objective.block_sizes[int(torch.randint(len(objective.block_sizes), (1,), generator=generator))]
    every = blocks = sample_blocks(ids, starts, block_size, objective, generator)
    share = 1.0
    if rows is not None:
        share = ids.shape[0] / len(range(*rows.indices(ids.shape[0])))
        blocks = BlockBatch(*(getattr(every, f.name)[rows] for f in dataclasses.fields(BlockBatch)))
        ids, starts = ids[rows], starts[rows]
    clean_logits, block_logits = model(ids, starts, blocks.starts, blocks.cells)
    l_clean = next_byte_loss(clean_logits, ids)
    ce = F.cross_entropy(
        block_logits.reshape(-1, block_logits.shape[-1]).float(), blocks.targets.reshape(-1), reduction="none"
    ).reshape(blocks.targets.shape)
    masked = blocks.masked.float()
    weighted = (ce * masked / blocks.t.unsqueeze(-1)).sum()
    denominator = every.valid.sum() if objective.normalize == "cells" else every.masked.sum()
    l_mask = share * weighted / denominator.clamp(min=1)
    masked_ce = share * (ce * masked).sum() / every.masked.sum().clamp(min=1)
    loss = l_clean + objective.mask_weight * l_mask
    parts = {"clean": l_clean.item(), "mask": l_mask.item(), "masked_ce": masked_ce.item()}
    return loss, parts
