"""BLT-D: the BLT plus a learned MASK embedding and a block path in the local decoder (DESIGN.md 6).

A block of B cells starting at position s enters only the local decoder, as plain embeddings (a byte's
embedding, or MASK). In the decoder the block attends bidirectionally within itself, causally (and
within the local window) to the clean stream before s, and cross-attends to the latent of the patch
before s. A masked cell predicts its own byte. The clean stream is the BLT's own causal path, so the
same weights decode byte by byte and score likelihoods, and can start from BLT weights.
"""

from __future__ import annotations

import torch
from torch import nn

from bltbench.model.blt import ByteLatentTransformer, patch_ids_from_starts, patch_window
from bltbench.model.config import BLTConfig
from bltbench.model.ids import MASK, PAD
from bltbench.model.layers import AttentionPlan


class BlockDiffusionBLT(ByteLatentTransformer):
    def __init__(self, config: BLTConfig) -> None:
        super().__init__(config)
        self.mask_embedding = nn.Embedding(1, config.d_local)

    def block_embed(self, cells: torch.Tensor) -> torch.Tensor:
        """Decoder inputs of block cells: the byte's embedding, or the learned MASK row."""
        is_mask = cells == MASK
        emb = self.local_encoder.tok_embeddings(cells.masked_fill(is_mask, PAD))
        return torch.where(is_mask.unsqueeze(-1), self.mask_embedding.weight[0], emb)

    def forward(self, ids: torch.Tensor, starts: torch.Tensor, block_starts: torch.Tensor | None = None,
                cells: torch.Tensor | None = None):
        """Clean next-byte logits, as a BLT; with blocks, `forward_blocks` (so a data-parallel wrapper,
        which sees only calls of the module itself, carries the training forward too)."""
        if block_starts is None:
            return super().forward(ids, starts)
        return self.forward_blocks(ids, starts, block_starts, cells)

    def forward_blocks(
        self, ids: torch.Tensor, starts: torch.Tensor, block_starts: torch.Tensor, cells: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: clean next-byte logits [N, L, V] and block logits [N, nB, B, V].

        ids [N, L]; starts [N, L + 1] patch start flags; block_starts [N, nB] (-1 = no block); cells
        [N, nB, B] block inputs (bytes or MASK). Cells past the sequence end are ignored.
        """
        n, length = ids.shape
        n_blocks, size = cells.shape[1:]
        device = ids.device
        c = self.config
        patch_ids, dec_patch_ids = patch_ids_from_starts(starts)
        n_patches = int(patch_ids.max()) + 1
        docs, patch_docs = self.documents(ids, patch_ids, n_patches)
        h = self.local_encoder(self.embed(ids), docs=docs)
        latents = self.global_transformer(self.local_encoder.pool(h, patch_ids, n_patches), docs=patch_docs)
        kv = self.local_decoder.latent_kv(latents)

        offsets = torch.arange(size, device=device)
        cell_pos = block_starts.unsqueeze(-1) + offsets  # [N, nB, B]
        cell_valid = (block_starts.unsqueeze(-1) >= 0) & (cell_pos < length)
        cell_pos = torch.where(cell_valid, cell_pos, torch.zeros_like(cell_pos)).reshape(n, -1)
        cell_valid = cell_valid.reshape(n, -1)
        cell_block = torch.arange(n_blocks, device=device).repeat_interleave(size).expand(n, -1)
        cell_start = block_starts.clamp(min=0).repeat_interleave(size, dim=1)  # [N, nB*B]

        x = torch.cat([h, self.block_embed(cells).reshape(n, n_blocks * size, -1)], dim=1)
        positions = torch.cat([torch.arange(length, device=device).expand(n, -1), cell_pos], dim=1)
        mask = self._training_mask(length, cell_pos, cell_valid, cell_block, cell_start, docs)

        # Cross-attention: clean positions read the latent of (patch of byte p+1) - 1; a block at s reads
        # the latent of the patch before the one s starts.
        cell_latent = (torch.gather(patch_ids, 1, cell_start) - 1).clamp(min=0)  # ignored cells read latent 0
        want = torch.cat([dec_patch_ids, cell_latent], dim=1)
        slot_patch = torch.arange(n_patches, device=device).repeat_interleave(c.cross_attn_k)
        cross_mask = patch_window(want.unsqueeze(-1), slot_patch, c.cross_attn_window_decoder).unsqueeze(1)
        plan = AttentionPlan(self.local_decoder.rope.at(positions), 0, mask)
        logits = self.local_decoder(x, kv.__getitem__, cross_mask, plan=plan)
        return logits[:, :length], logits[:, length:].reshape(n, n_blocks, size, -1)

    def _training_mask(self, length, cell_pos, cell_valid, cell_block, cell_start, docs=None) -> torch.Tensor:
        """Clean bytes causal (windowed); a block's cells see the clean bytes before the block and each
        other; with `docs` ([N, L], documents split at EOS), only within the position's document."""
        n, m = cell_pos.shape
        device = cell_pos.device
        window = self.config.local_window
        clean = torch.arange(length, device=device)

        def within(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            diff = q - k
            return diff >= 0 if window is None else (diff >= 0) & (diff < window)

        clean_clean = within(clean[:, None], clean[None, :]).expand(n, -1, -1)
        clean_cell = torch.zeros(n, length, m, dtype=torch.bool, device=device)
        # a cell sees clean bytes strictly before its block's start, within the window of its own position
        cell_clean = within(cell_pos[:, :, None], clean[None, None, :]) & (clean[None, None, :] < cell_start[:, :, None])
        cell_clean &= cell_valid[:, :, None]
        same_block = cell_block[:, :, None] == cell_block[:, None, :]
        cell_cell = same_block & cell_valid[:, :, None] & cell_valid[:, None, :]
        if docs is not None:
            # the document the block continues (the bytes before it, all visible): a masked EOS inside the
            # block must not show through the mask, and decoding stops at an EOS anyway
            cell_doc = torch.gather(docs, 1, cell_start)
            clean_clean = clean_clean & (docs[:, :, None] == docs[:, None, :])
            cell_clean &= cell_doc[:, :, None] == docs[:, None, :]
            cell_cell &= cell_doc[:, :, None] == cell_doc[:, None, :]
        cell_cell |= torch.eye(m, dtype=torch.bool, device=device)  # ignored cells see themselves only
        top = torch.cat([clean_clean, clean_cell], dim=2)
        bottom = torch.cat([cell_clean, cell_cell], dim=2)
        return torch.cat([top, bottom], dim=1).unsqueeze(1)
