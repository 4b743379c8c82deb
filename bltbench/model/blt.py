"""The Byte Latent Transformer in the official layout (DESIGN.md section 2).

Three components over one byte sequence: a local encoder (hash n-gram embeddings, causal windowed
layers, then patch pooling by cross-attention), a global transformer over patches, and a local
decoder that cross-attends every layer to the latent of the patch before the byte it predicts.
The full forward here is the oracle; `bltbench.model.incremental` runs the same modules position
by position with caches.
"""

from __future__ import annotations

import torch
from torch import nn

from bltbench.model.config import BLTConfig
from bltbench.model.hashing import HashEmbeddings
from bltbench.model.ids import EOS
from bltbench.model.layers import (
    AttentionPlan,
    CrossAttention,
    KVCache,
    RMSNorm,
    Rotary,
    TransformerBlock,
    causal_plan,
    eos_documents,
    mask_to_bias,
    run_blocks,
)


def patch_window(query_patch: torch.Tensor, key_patch: torch.Tensor, window: int | None) -> torch.Tensor:
    """Whether a query of patch q may read a key of patch j (broadcast): j == q, or with a window W, the
    last W patches up to q (j <= q < j + W), as the official create_patch_mask_from_ids decides."""
    if window is None:
        return query_patch == key_patch
    return (key_patch <= query_patch) & (query_patch < key_patch + window)


def _blocks(dim: int, heads: int, hidden: int, eps: float, n: int) -> nn.ModuleList:
    return nn.ModuleList(TransformerBlock(dim, heads, hidden, eps) for _ in range(n))


class LocalEncoder(nn.Module):
    def __init__(self, c: BLTConfig) -> None:
        super().__init__()
        self.config = c
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.d_local)
        self.layers = _blocks(c.d_local, c.n_heads_local, c.hidden_ffn_local, c.norm_eps, c.n_layers_encoder)
        self.patch_embedding_projection = nn.Linear(c.d_local, c.d_patch, bias=False)
        self.cross_attn_layers = nn.ModuleList([CrossAttention(c.d_local, c.n_cross_heads, c.norm_eps)])
        self.rope = Rotary(c.d_local // c.n_heads_local, c.rope_theta)

    def new_cache(self, capacity: int, batch: int = 1) -> KVCache:
        c, p = self.config, self.patch_embedding_projection.weight
        return KVCache(c.n_layers_encoder, batch, c.n_heads_local, c.d_local // c.n_heads_local, p.dtype, p.device, capacity)

    def forward(self, embeds: torch.Tensor, start: int = 0, cache: KVCache | None = None,
                docs: torch.Tensor | None = None) -> torch.Tensor:
        plan = causal_plan(self.rope, start, embeds.shape[1], self.config.local_window, embeds.device, docs=docs)
        return run_blocks(self.layers, plan, embeds, cache)

    def pool(self, h: torch.Tensor, patch_ids: torch.Tensor, n_patches: int, first: int = 0) -> torch.Tensor:
        """Slots [B, P, d_local * k] of patches [first, first + P): amax over each patch's byte states,
        projected to k query slots that cross-attend to that patch's bytes (or, with an encoder window,
        to those of the last W patches up to it); result 2 * x + attn (official). `patch_ids` [B, T]
        are the absolute patches of h's bytes; bytes before `first` are only read through the window."""
        b, t, d = h.shape
        k = self.config.cross_attn_k
        own = patch_ids - first
        index = own.clamp(min=0).unsqueeze(-1).expand(-1, -1, d)
        pooled = h.new_zeros(b, n_patches, d).scatter_reduce(1, index, h.masked_fill((own < 0).unsqueeze(-1), float("-inf")),
                                                              reduce="amax", include_self=False)
        queries = self.patch_embedding_projection(pooled).reshape(b, n_patches * k, d)
        slot_patch = torch.arange(first, first + n_patches, device=h.device).repeat_interleave(k)
        mask = patch_window(slot_patch[None, :, None], patch_ids[:, None, :], self.config.cross_attn_window_encoder).unsqueeze(1)
        attended = self.cross_attn_layers[0](queries, h, mask_to_bias(mask, h.dtype))
        if b > 1:  # rows with fewer patches than the batch's most have empty padding slots: NaN, made 0
            attended = torch.nan_to_num(attended)
        slots = queries + attended
        return slots.reshape(b, n_patches, k * d)


class GlobalTransformer(nn.Module):
    def __init__(self, c: BLTConfig) -> None:
        super().__init__()
        self.config = c
        self.layers = _blocks(c.d_global, c.n_heads_global, c.hidden_ffn_global, c.norm_eps, c.n_layers_global)
        self.token_embedding_projection = (
            nn.Linear(c.d_patch, c.d_global, bias=False) if c.d_patch != c.d_global else None
        )
        self.rope = Rotary(c.d_global // c.n_heads_global, c.rope_theta)

    def new_cache(self, capacity: int, batch: int = 1) -> KVCache:
        c, p = self.config, self.layers[0].attention.wq.weight
        return KVCache(c.n_layers_global, batch, c.n_heads_global, c.d_global // c.n_heads_global, p.dtype, p.device, capacity)

    def forward(self, slots: torch.Tensor, start: int = 0, cache: KVCache | None = None,
                docs: torch.Tensor | None = None) -> torch.Tensor:
        """Latents for patches [start, start + P): causal over patch index (within `docs`' documents of
        patches when given), no final norm."""
        h = slots if self.token_embedding_projection is None else self.token_embedding_projection(slots)
        return run_blocks(self.layers, causal_plan(self.rope, start, h.shape[1], None, h.device, docs=docs), h, cache)


class LocalDecoder(nn.Module):
    def __init__(self, c: BLTConfig) -> None:
        super().__init__()
        self.config = c
        self.layers = _blocks(c.d_local, c.n_heads_local, c.hidden_ffn_local, c.norm_eps, c.n_layers_decoder)
        self.patch_embedding_projection = nn.Linear(c.d_global, c.d_patch, bias=False)
        self.cross_attn_layers = nn.ModuleList(
            CrossAttention(c.d_local, c.n_cross_heads, c.norm_eps) for _ in range(c.n_layers_decoder)
        )
        self.norm = RMSNorm(c.d_local, c.norm_eps)
        self.output = nn.Linear(c.d_local, c.vocab_size, bias=False)
        self.rope = Rotary(c.d_local // c.n_heads_local, c.rope_theta)

    def new_cache(self, capacity: int, batch: int = 1) -> KVCache:
        c, p = self.config, self.output.weight
        return KVCache(c.n_layers_decoder, batch, c.n_heads_local, c.d_local // c.n_heads_local, p.dtype, p.device, capacity)

    def new_latent_cache(self, capacity: int, batch: int = 1) -> KVCache:
        """Per-layer cross-attention keys/values of the latent slots, k per patch."""
        c, p = self.config, self.output.weight
        return KVCache(c.n_layers_decoder, batch, c.n_cross_heads, c.d_local // c.n_cross_heads, p.dtype, p.device, capacity)

    def latent_kv(self, latents: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's cross-attention keys/values for latents [B, P, d_global]: [B, H, P*k, D]."""
        b, n, _ = latents.shape
        slots = self.patch_embedding_projection(latents).reshape(b, n * self.config.cross_attn_k, self.config.d_local)
        return [layer.project_kv(slots) for layer in self.cross_attn_layers]

    def forward(self, h, cross_kv, cross_mask, start: int = 0, cache: KVCache | None = None,
                plan: AttentionPlan | None = None, docs: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for byte states h [B, T, d_local] at positions [start, start + T).

        `cross_kv(i)` gives layer i's latent keys/values; `cross_mask` [B, 1, T, S] or None. A `plan`
        replaces the causal one (BLT-D's blocks attend bidirectionally within themselves).
        """
        if plan is None:
            plan = causal_plan(self.rope, start, h.shape[1], self.config.local_window, h.device, docs=docs)

        cross_bias = mask_to_bias(cross_mask, h.dtype)

        def cross(i: int, x: torch.Tensor) -> torch.Tensor:
            k, v = cross_kv(i)
            return x + self.cross_attn_layers[i].attend(x, k, v, cross_bias)

        h = run_blocks(self.layers, plan, h, cache, before=cross)
        return self.output(self.norm(h))


def patch_ids_from_starts(starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From start flags [B, L + 1] (the last is the next byte): the patch of each position [B, L],
    and the patch whose latent each decoder position reads (patch of byte p + 1, minus one)."""
    count = starts.long().cumsum(-1)
    return count[:, :-1] - 1, count[:, 1:] - 2


class ByteLatentTransformer(nn.Module):
    def __init__(self, config: BLTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.local_encoder = LocalEncoder(config)
        self.global_transformer = GlobalTransformer(config)
        self.local_decoder = LocalDecoder(config)
        self.encoder_hash_tok_embedding = HashEmbeddings(
            config.hash_sizes, config.hash_buckets, config.hash_functions, config.d_local
        )

    def embed(self, ids: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder input: byte embedding plus the sum of the n-gram hash embeddings."""
        return self.local_encoder.tok_embeddings(ids) + self.encoder_hash_tok_embedding(ids, history)

    def documents(self, ids: torch.Tensor, patch_ids: torch.Tensor, n_patches: int):
        """(document of each byte [B, L], document of each patch [B, P]), each None where the model does
        not split at EOS. A patch that holds an EOS ends its document, as the official global model's
        block-causal mask over EOS-marked patches has it."""
        c = self.config
        docs = eos_documents(ids) if c.eos_documents_local else None
        patch_docs = None
        if c.eos_documents_global:
            ends = torch.zeros(ids.shape[0], n_patches, dtype=torch.long, device=ids.device)
            ends = (ends.scatter_add(1, patch_ids.clamp(min=0), (ids == EOS).long()) > 0).long()
            patch_docs = ends.cumsum(-1) - ends
        return docs, patch_docs

    def forward(self, ids: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Full-sequence logits [B, L, V] for ids [B, L] and patch start flags [B, L + 1]."""
        patch_ids, dec_patch_ids = patch_ids_from_starts(starts)
        n_patches = int(patch_ids.max()) + 1
        docs, patch_docs = self.documents(ids, patch_ids, n_patches)
        h = self.local_encoder(self.embed(ids), docs=docs)
        latents = self.global_transformer(self.local_encoder.pool(h, patch_ids, n_patches), docs=patch_docs)
        kv = self.local_decoder.latent_kv(latents)
        slot_patch = torch.arange(n_patches, device=ids.device).repeat_interleave(self.config.cross_attn_k)
        mask = patch_window(dec_patch_ids[:, :, None], slot_patch[None, None, :], self.config.cross_attn_window_decoder)
        return self.local_decoder(h, kv.__getitem__, mask.unsqueeze(1), docs=docs)
