"""Cached, position-by-position execution of a BLT (DESIGN.md section 4).

`IncrementalBLT` owns every cache (entropy model, encoder, global, decoder, and the decoder's
cross-attention keys of each latent) and the patch bookkeeping. `extend` runs new positions through
all components in one call each and returns their logits; `truncate` rolls everything back, which
speculative methods use after a rejected draft. A latent is computed once its patch is complete,
i.e. as soon as the entropy at its last byte says the next byte opens a new patch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.config import PatchingConfig
from bltbench.model.entropy import EntropyModel, entropy_nats
from bltbench.model.ids import BOE
from bltbench.model.patching import starts_new_patch

# (component, positions processed, cache length before the call)
CallObserver = Callable[[str, int, int], None]


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
        c = model.config
        self.k = c.cross_attn_k
        self.hash_context = max(c.hash_sizes) - 1
        self.device = model.local_decoder.output.weight.device
        self.dtype = model.local_decoder.output.weight.dtype
        self.ids: list[int] = []
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

    def _observe(self, component: str, positions: int, cache_length: int) -> None:
        if self.observer is not None:
            self.observer(component, positions, cache_length)

    def patch_lengths(self) -> list[int]:
        """Lengths of the patches over the committed positions."""
        bounds = self.patch_begin + [len(self.ids)]
        return [b - a for a, b in zip(bounds, bounds[1:]) if b > a]

    # -- extending ---------------------------------------------------------------------------
    def extend(self, new_ids: Sequence[int]) -> torch.Tensor:
        """Append ids, run every component once over them, return their logits [T, V] (fp32)."""
        t = len(new_ids)
        if t == 0:
            raise ValueError("extend needs at least one id")
        p0 = len(self.ids)
        ids = torch.tensor([list(new_ids)], dtype=torch.long, device=self.device)
        self._extend_entropy(ids)
        self.ids.extend(new_ids)
        self._extend_patches(p0)

        history = self._hash_history(p0)
        self._observe("encoder", t, p0)
        h = self.model.local_encoder(self.model.embed(ids, history), p0, self.enc_cache)
        self._store_states(p0, h)
        self._complete_patches()

        self._observe("decoder", t, p0)
        dec = [self.n_starts[p + 1] - 2 for p in range(p0, p0 + t)]
        if t == 1:
            a, b = dec[0] * self.k, dec[0] * self.k + self.k
            mask = None
        else:
            a, b = 0, self.n_latents * self.k
            slot_patch = torch.arange(self.n_latents, device=self.device).repeat_interleave(self.k)
            want = torch.tensor(dec, device=self.device)
            mask = (want[:, None] == slot_patch[None, :])[None, None]
        cache = self.latent_cache

        def cross_kv(i: int):
            return cache.keys[i][:, :, a:b], cache.values[i][:, :, a:b]

        logits = self.model.local_decoder(h, cross_kv, mask, p0, self.dec_cache)
        return logits[0].float()

    def _extend_entropy(self, ids: torch.Tensor) -> None:
        if self.entropy_model is None:
            self.entropies.extend([0.0] * ids.shape[1])
            return
        self._observe("entropy", ids.shape[1], self.ent_cache.length)
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
        self._observe("global", last - first, self.glob_cache.length)
        latents = self.model.global_transformer(slots, first, self.glob_cache)
        kv = self.model.local_decoder.latent_kv(latents)
        self.latent_cache.reserve((last) * self.k)
        for i, (k, v) in enumerate(kv):
            self.latent_cache.write(i, k, v, 0)
        self.latent_cache.length = last * self.k
        self.n_latents = last

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
