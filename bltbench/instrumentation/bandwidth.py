"""Pricing an NFE trace as 16-bit memory traffic (DESIGN.md section 8).

- `paper_gb`: the paper's proxy (its Eq. 8), weights only:
  GB = 2 * (N_dec * P_dec + N_enc * (P_enc + P_glob)) / 1e9. The paper counts encoder + global
  evaluations at patch granularity, so N_enc here is the number of global-model calls (each one
  a pooled patch batch), and per-byte encoder steps are left to the extended figures.
- `extended_gb`: every call of every component reads the dense weights that call uses (entropy model
  included; see `ComponentParams.per_call`: pooling and latent projections are billed to the global
  call that runs them) plus the embedding rows it actually gathers: one byte row and one row per hash
  table per encoder position, one row per entropy position. Never whole tables.
- `kv_gb`: the extended figure plus KV-cache reads: 2 (K and V) x layers x (cached + new positions)
  x width x 2 bytes per call, and the decoder's cross-attention slots.
"""

from __future__ import annotations

from dataclasses import dataclass

from bltbench.instrumentation.params import ComponentParams
from bltbench.model.incremental import Call

BYTES_PER_PARAM = 2  # 16-bit weights and activations


def paper_gb(n_dec: int, n_enc: int, p_dec: float, p_enc_glob: float) -> float:
    return BYTES_PER_PARAM * (n_dec * p_dec + n_enc * p_enc_glob) / 1e9


def embedding_params(call: Call, p: ComponentParams) -> int:
    if call.component == "encoder":
        return call.positions * (1 + p.n_hash_tables) * p.d_local
    if call.component == "entropy":
        return call.positions * p.d_entropy
    return 0


def kv_params(call: Call, p: ComponentParams) -> int:
    keys = call.cache_length + call.positions
    total = 2 * p.layers[call.component] * keys * p.kv_width[call.component]
    if call.component == "decoder":  # each position reads k slots of each latent it attends to, per layer
        total += 2 * p.layers["decoder"] * call.positions * p.cross_attn_k * call.latents * p.d_local
    return total


@dataclass(frozen=True)
class Bandwidth:
    paper_gb: float
    extended_gb: float
    kv_gb: float


def price(calls: list[Call], p: ComponentParams) -> Bandwidth:
    n_dec = sum(1 for c in calls if c.component == "decoder")
    n_glob = sum(1 for c in calls if c.component == "global")
    weights = sum(p.per_call[c.component] + embedding_params(c, p) for c in calls)
    kv = sum(kv_params(c, p) for c in calls)
    return Bandwidth(
        paper_gb=paper_gb(n_dec, n_glob, p.decoder, p.encoder + p.global_),
        extended_gb=BYTES_PER_PARAM * weights / 1e9,
        kv_gb=BYTES_PER_PARAM * (weights + kv) / 1e9,
    )
