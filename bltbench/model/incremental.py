"""Cached, position-by-position execution of a BLT (DESIGN.md section 4).

`IncrementalBLT` owns every cache (entropy model, encoder, global, decoder, and the decoder's
cross-attention keys of each latent) and the patch bookkeeping. `extend` runs new positions through
all components in one call each and returns their logits; `truncate` rolls everything back, which
speculative methods use after a rejected draft. A latent is computed once its patch is complete,
i.e. as soon as the entropy at its last byte says the next byte opens a new patch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.config import PatchingConfig
from bltbench.model.entropy import EntropyModel, entropy_nats
from bltbench.model.ids import BOE
from bltbench.model.layers import AttentionPlan
from bltbench.model.patching import starts_new_patch

ROLES = ("prefill", "step", "draft", "verify")


@dataclass(slots=True)
class Call:
    """One function evaluation of one component, as an observer sees it."""

    component: str  # entropy | encoder | global | decoder
    role: str  # prefill | step | draft | verify
    positions: int  # new positions processed (patches, for the global model)
    cache_length: int  # cached positions the call attends to (after the local window)


CallObserver = Callable[[Call], None]


class IncrementalBLT:
    def __init__(
        self,
        model: ByteLatentTransformer,
        entropy_model: EntropyModel | None,
        patching: PatchingConfig,
        observer: CallObserver | None = None,
    ) -> None:
        if patching.mode == "entropy" and entropy_model is None:
            raise ValueError("entropy patching needs an entropy model")
        self.model = model
        self.entropy_model = entropy_model if patching.mode == "entropy" else None
        self.patching = patching
        self.observer = observer
        self.role = "prefill"  # set by the decoding method; observers see it on every call
        c = model.config
        self.k = c.cross_attn_k
        self.hash_context = max(c.hash_sizes) - 1
        self.device = model.local_decoder.output.weight.device
        self.dtype = model.local_decoder.output.weight.dtype
        self.ids: list[int] = []
        self.draft_ids: list[int] = []  # drafted positions beyond the committed ones (BLT-S)
        self.entropies: list[float] = []
        self.starts: list[bool] = []  # one flag per position, plus the next (ungenerated) one
        self.n_starts: list[int] = []  # running count of start flags, aligned with `starts`
        self.n_latents = 0
        self.patch_begin: list[int] = []  # start position of each patch
        self.enc_cache = model.local_encoder.new_cache()
        self.glob_cache = model.global_transformer.new_cache()
        self.dec_cache = model.local_decoder.new_cache()
        self.latent_cache = model.local_decoder.new_latent_cache()
        self.ent_cache = self.entropy_model.new_cache() if self.entropy_model is not None else None
        self.enc_states = torch.empty(1, 0, c.d_local, dtype=self.dtype, device=self.device)

    def __len__(self) -> int:
        return len(self.ids)

    def _observe(self, component: str, positions: int, start: int, window: int | None) -> None:
        if self.observer is not None:
            visible = start if window is None else min(start, window - 1)
            self.observer(Call(component, self.role, positions, visible))

    def patch_lengths(self) -> list[int]:
        """Lengths of the patches over the committed positions."""
        bounds = self.patch_begin + [len(self.ids)]
        return [b - a for a, b in zip(bounds, bounds[1:]) if b > a]

    # -- extending ---------------------------------------------------------------------------
    def extend(self, new_ids: Sequence[int]) -> torch.Tensor:
        """Append ids, run every component once over them, return their logits [T, V] (fp32)."""
        p0, h = self._commit(new_ids)
        t = h.shape[1]
        dec = [self.n_starts[p + 1] - 2 for p in range(p0, p0 + t)]
        a, b, mask = self._latent_window(dec)
        return self._decode(h, p0, a, b, mask)

    def _commit(self, new_ids: Sequence[int]) -> tuple[int, torch.Tensor]:
        """Entropy model, patching, encoder and global over new ids; returns (first position, states)."""
        if len(new_ids) == 0:
            raise ValueError("extend needs at least one id")
        if self.draft_ids:
            raise ValueError("discard the draft before extending")
        p0 = len(self.ids)
        ids = torch.tensor([list(new_ids)], dtype=torch.long, device=self.device)
        self._extend_entropy(ids)
        self.ids.extend(new_ids)
        self._extend_patches(p0)
        h = self._encode(ids, p0)
        self._complete_patches()
        return p0, h

    def _latent_window(self, wanted: list[int]) -> tuple[int, int, torch.Tensor | None]:
        """The slot range [a, b) rows read (latent ids never decrease along positions, so only the span
        wanted[0]..wanted[-1]), and a mask within it when rows read different latents."""
        first, last = wanted[0], wanted[-1]
        a, b = first * self.k, (last + 1) * self.k
        if first == last:
            return a, b, None
        slot_patch = torch.arange(first, last + 1, device=self.device).repeat_interleave(self.k)
        want = torch.tensor(wanted, device=self.device)
        return a, b, (want[:, None] == slot_patch[None, :])[None, None]

    # -- BLT-D blocks --------------------------------------------------------------------------
    def extend_with_block(self, new_ids: Sequence[int], cells: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """`extend(new_ids)` and, in the same decoder call, a block of cells right after them:
        bidirectional within the block, causal to the committed prefix, reading the last latent.
        Returns (clean logits [T, V], block logits [B, V]); the block leaves nothing in the caches."""
        p0, h = self._commit(new_ids)
        return self._decode_with_block(h, p0, cells)

    def block_pass(self, cells: Sequence[int]) -> torch.Tensor:
        """Decoder only: the block of cells right after the committed prefix; logits [B, V]."""
        return self._decode_with_block(None, len(self.ids), cells)[1]

    def _decode_with_block(self, h: torch.Tensor | None, p0: int, cells: Sequence[int]):
        if not hasattr(self.model, "block_embed"):
            raise ValueError("blocks need BLT-D weights")
        s, size = len(self.ids), len(cells)
        t = s - p0
        window = self.model.config.local_window
        block = self.model.block_embed(torch.tensor([list(cells)], dtype=torch.long, device=self.device))
        x = block if h is None else torch.cat([h, block], dim=1)
        k_start = 0 if window is None else max(0, p0 - window + 1)
        q = torch.arange(p0, s + size, device=self.device)[:, None]
        k = torch.arange(k_start, s + size, device=self.device)[None, :]
        seen = (k <= q) if window is None else (k <= q) & (q - k < window)
        in_block = q >= s
        mask = torch.where(in_block, (k >= s) | (seen & (k < s)), seen)[None, None]
        wanted = [self.n_starts[p + 1] - 2 for p in range(p0, s)] + [self.n_latents - 1] * size
        plan = AttentionPlan(self.model.local_decoder.rope.span(p0, t + size, self.device), k_start, mask)
        logits = self._decode(x, p0, *self._latent_window(wanted), plan)
        self.dec_cache.truncate(s)
        return logits[:t], logits[t:]

    def _encode(self, ids: torch.Tensor, p0: int) -> torch.Tensor:
        self._observe("encoder", ids.shape[1], p0, self.model.config.local_window)
        h = self.model.local_encoder(self.model.embed(ids, self._hash_history(p0)), p0, self.enc_cache)
        self._store_states(p0, h)
        return h

    def _decode(self, h: torch.Tensor, p0: int, a: int, b: int, mask: torch.Tensor | None,
                plan: AttentionPlan | None = None) -> torch.Tensor:
        """Decoder over positions from p0, cross-attending to latent slots [a, b) under `mask`."""
        self._observe("decoder", h.shape[1], p0, self.model.config.local_window)
        cache = self.latent_cache

        def cross_kv(i: int):
            return cache.keys[i][:, :, a:b], cache.values[i][:, :, a:b]

        return self.model.local_decoder(h, cross_kv, mask, p0, self.dec_cache, plan)[0].float()

    # -- drafting (BLT-S) ----------------------------------------------------------------------
    def draft(self, ids: Sequence[int]) -> torch.Tensor:
        """Encoder + decoder over positions after the committed ones (and earlier drafts), every
        decoder position reading the last known latent, patch boundaries ignored. Nothing is
        committed: `discard_draft` rolls the encoder and decoder caches back."""
        if self.n_latents == 0:
            raise ValueError("drafting needs a latent: extend with the prompt first")
        p0 = len(self.ids) + len(self.draft_ids)
        if p0 and self.enc_cache.length != p0:
            raise ValueError("draft positions must follow the committed ones")
        self.draft_ids.extend(ids)
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        h = self._encode(x, p0)
        j = self.n_latents - 1
        return self._decode(h, p0, j * self.k, (j + 1) * self.k, None)

    def discard_draft(self) -> None:
        self.draft_ids.clear()
        self.enc_cache.truncate(len(self.ids))
        self.dec_cache.truncate(len(self.ids))

    def _extend_entropy(self, ids: torch.Tensor) -> None:
        if self.entropy_model is None:
            self.entropies.extend([0.0] * ids.shape[1])
            return
        self._observe("entropy", ids.shape[1], self.ent_cache.length, self.entropy_model.config.window)
        logits = self.entropy_model(ids, self.ent_cache)
        self.entropies.extend(entropy_nats(logits[0]).tolist())

    def _open_patch_length(self, position: int) -> int:
        return position - self.patch_begin[-1] + 1

    def _extend_patches(self, p0: int) -> None:
        """Decide, for each new position i, whether byte i + 1 opens a new patch."""
        if p0 == 0:
            self.starts, self.n_starts, self.patch_begin = [True], [1], [0]
        for i in range(p0, len(self.ids)):
            new = starts_new_patch(self.patching, i, self.entropies, self._open_patch_length(i))
            self.starts.append(new)
            self.n_starts.append(self.n_starts[-1] + new)
            if new:
                self.patch_begin.append(i + 1)

    def _hash_history(self, p0: int) -> torch.Tensor:
        ctx = self.hash_context
        if self.draft_ids:  # the committed tail followed by the drafted ids
            offset = max(0, len(self.ids) - ctx)
            prev = (self.ids[offset:] + self.draft_ids)[max(0, p0 - ctx) - offset : p0 - offset]
        else:
            prev = self.ids[max(0, p0 - ctx) : p0]
        prev = [BOE] * (ctx - len(prev)) + prev
        return torch.tensor([prev], dtype=torch.long, device=self.device)

    def _store_states(self, p0: int, h: torch.Tensor) -> None:
        end = p0 + h.shape[1]
        if self.enc_states.shape[1] < end:
            grown = torch.empty(1, max(end, 2 * self.enc_states.shape[1], 64), h.shape[2], dtype=h.dtype, device=h.device)
            grown[:, :p0] = self.enc_states[:, :p0]
            self.enc_states = grown
        self.enc_states[:, p0:end] = h

    def _complete_patches(self) -> None:
        """Pool every patch that is now complete and run the global model over them in one call."""
        complete = len(self.patch_begin) - 1  # the last start opens a patch that is still growing
        if complete <= self.n_latents:
            return
        first, last = self.n_latents, complete
        a, b = self.patch_begin[first], self.patch_begin[last]
        lengths = [self.patch_begin[j + 1] - self.patch_begin[j] for j in range(first, last)]
        patch_ids = torch.repeat_interleave(
            torch.arange(last - first, device=self.device), torch.tensor(lengths, device=self.device)
        )[None]
        slots = self.model.local_encoder.pool(self.enc_states[:, a:b], patch_ids, last - first)
        self._observe("global", last - first, self.glob_cache.length, None)
        latents = self.model.global_transformer(slots, first, self.glob_cache)
        kv = self.model.local_decoder.latent_kv(latents)
        self.latent_cache.reserve((last) * self.k)
        for i, (k, v) in enumerate(kv):
            self.latent_cache.write(i, k, v, 0)
        self.latent_cache.length = last * self.k
        self.n_latents = last

    def preview_starts(self, tail: Sequence[int]) -> list[bool]:
        """Patch flags over the committed positions and `tail`, as if `tail` were committed; only the
        entropy model runs (unobserved), and nothing is kept. For reporting patches of bytes a method
        never ran through the model (BLT-D's last block)."""
        flags = list(self.starts)
        if not tail:
            return flags
        n = len(self.ids)
        entropies = list(self.entropies)
        if self.entropy_model is not None:
            logits = self.entropy_model(torch.tensor([list(tail)], dtype=torch.long, device=self.device), self.ent_cache)
            entropies += entropy_nats(logits[0]).tolist()
            self.ent_cache.truncate(n)
        else:
            entropies += [0.0] * len(tail)
        begin = self.patch_begin[-1]
        for i in range(n, n + len(tail)):
            new = starts_new_patch(self.patching, i, entropies, i - begin + 1)
            flags.append(new)
            if new:
                begin = i + 1
        return flags

    # -- rolling back ------------------------------------------------------------------------
    def truncate(self, length: int) -> None:
        """Forget every position from `length` on, as if they had never been appended."""
        if not 1 <= length <= len(self.ids):
            raise ValueError(f"cannot truncate {len(self.ids)} positions to {length}")
        del self.ids[length:], self.entropies[length:]
        del self.starts[length + 1 :], self.n_starts[length + 1 :]
        while self.patch_begin[-1] > length:
            self.patch_begin.pop()
        self.n_latents = min(self.n_latents, len(self.patch_begin) - 1)
        self.enc_cache.truncate(length)
        self.dec_cache.truncate(length)
        if self.ent_cache is not None:
            self.ent_cache.truncate(length)
        self.glob_cache.truncate(self.n_latents)
        self.latent_cache.truncate(self.n_latents * self.k)
