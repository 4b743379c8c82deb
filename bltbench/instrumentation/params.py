"""Dense parameter counts per component, computed from a config without allocating the model.

These are what the bandwidth model prices (DESIGN.md section 8), so any preset can price a run's
NFE trace: a run on `tiny` projected to `blt-1b` or `blt-7b`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bltbench.errors import BltbenchError
from bltbench.model.config import BLTConfig, EntropyModelConfig, PRESETS, preset


def block_params(dim: int, hidden: int) -> int:
    """Attention (4 d^2), SwiGLU (3 d h) and two RMSNorm weights."""
    return 4 * dim * dim + 3 * dim * hidden + 2 * dim


def cross_attention_params(dim: int) -> int:
    return 4 * dim * dim + 2 * dim


@dataclass(frozen=True)
class ComponentParams:
    """Dense parameters per component (embedding tables excluded: only gathered rows are read),
    plus the shapes the extended figures need (embedding row widths, KV widths and layer counts).

    `entropy`, `encoder`, `global_`, `decoder` are whole modules, as the paper counts them. `per_call`
    is what one call of each component actually reads in bltbench's decoding: pooling a completed patch
    (the encoder's projection and cross-attention) and projecting its latent into every decoder layer's
    cross-attention keys/values happen once per latent, inside the global call, not in every encoder
    or decoder step."""

    name: str
    entropy: int
    encoder: int
    global_: int
    decoder: int
    d_local: int
    d_entropy: int
    n_hash_tables: int
    cross_attn_k: int
    layers: dict[str, int]  # self-attention layers per component
    kv_width: dict[str, int]  # key (= value) width per layer and position
    per_call: dict[str, int]  # dense parameters one call of each component reads
    note: str = ""

    def dense(self, component: str) -> int:
        return {"entropy": self.entropy, "encoder": self.encoder, "global": self.global_, "decoder": self.decoder}[
            component
        ]


def entropy_params(c: EntropyModelConfig) -> int:
    return c.n_layers * block_params(c.dim, c.hidden_ffn) + c.dim + c.dim * c.vocab_size


def component_params(config: BLTConfig, name: str = "custom", note: str = "") -> ComponentParams:
    c = config
    enc = (
        c.n_layers_encoder * block_params(c.d_local, c.hidden_ffn_local)
        + c.d_local * c.d_patch  # pooled patch -> k query slots
        + cross_attention_params(c.d_local)
    )
    glob = c.n_layers_global * block_params(c.d_global, c.hidden_ffn_global)
    if c.d_patch != c.d_global:
        glob += c.d_patch * c.d_global  # token_embedding_projection
    dec = (
        c.n_layers_decoder * (block_params(c.d_local, c.hidden_ffn_local) + cross_attention_params(c.d_local))
        + c.d_global * c.d_patch  # latent -> k key/value slots
        + c.d_local  # final norm
        + c.d_local * c.vocab_size  # output head
    )
    pooling = c.d_local * c.d_patch + cross_attention_params(c.d_local)
    latent_kv = c.d_global * c.d_patch + c.n_layers_decoder * (2 * c.d_local * c.d_local + c.d_local)
    per_call = {"entropy": entropy_params(c.entropy), "encoder": enc - pooling, "global": glob + pooling + latent_kv,
                "decoder": dec - latent_kv}
    return ComponentParams(
        name=name,
        per_call=per_call,
        entropy=entropy_params(c.entropy),
        encoder=enc,
        global_=glob,
        decoder=dec,
        d_local=c.d_local,
        d_entropy=c.entropy.dim,
        n_hash_tables=c.n_hash_tables,
        cross_attn_k=c.cross_attn_k,
        layers={"entropy": c.entropy.n_layers, "encoder": c.n_layers_encoder, "global": c.n_layers_global,
                "decoder": c.n_layers_decoder},
        kv_width={"entropy": c.entropy.dim, "encoder": c.d_local, "global": c.d_global, "decoder": c.d_local},
        note=note,
    )


def _blt_3b() -> BLTConfig:
    """The paper's 3B dims are not public. Derived: blt-1b's local models (which give the paper's
    P_dec = 158M) under a 2560-wide, 36-layer global model (P_enc + P_glob = 2.88B vs the paper's
    2.857B), with a 2048 -> 2560 patch projection."""
    c = preset("blt-1b")
    c.d_global, c.n_heads_global, c.n_layers_global = 2560, 20, 36
    return c


PROFILE_NOTES = {"blt-3b": "derived between blt-1b and blt-7b; the paper's 3B dims are not public"}


def profile(name: str) -> ComponentParams:
    """Parameter counts of a named preset (`blt-3b` is derived, see PROFILE_NOTES)."""
    if name == "blt-3b":
        return component_params(_blt_3b(), name, PROFILE_NOTES[name])
    if name not in PRESETS:
        raise BltbenchError(f"unknown pricing profile {name!r} (choose from {', '.join(list(PRESETS) + ['blt-3b'])})")
    return component_params(preset(name), name)


@dataclass(frozen=True)
class Matrix:
    """A weight one call multiplies: `count` matrices of out x inp, each over positions x `rows_per`
    rows (the k query slots of a pooled patch, say)."""

    out: int
    inp: int
    count: int = 1
    rows_per: int = 1

    @property
    def params(self) -> int:
        return self.count * self.out * self.inp


def _block_matrices(dim: int, hidden: int, layers: int) -> list[Matrix]:
    """A transformer block as decoding multiplies it: fused q/k/v, output, fused gate/up, down."""
    return [Matrix(3 * dim, dim, layers), Matrix(dim, dim, layers), Matrix(2 * hidden, dim, layers),
            Matrix(dim, hidden, layers)]


def component_matrices(config: BLTConfig) -> dict[str, list[Matrix]]:
    """The weight matrices one call of each component multiplies, billed as `per_call` bills them
    (pooling and latent projections inside the global call); norms are left out (vectors)."""
    c, e = config, config.entropy
    d, k = c.d_local, c.cross_attn_k
    glob = _block_matrices(c.d_global, c.hidden_ffn_global, c.n_layers_global)
    if c.d_patch != c.d_global:
        glob.append(Matrix(c.d_global, c.d_patch))
    pooling = [Matrix(c.d_patch, d), Matrix(d, d, 1, k), Matrix(2 * d, d, 1, k), Matrix(d, d, 1, k)]
    latent_kv = [Matrix(c.d_patch, c.d_global), Matrix(2 * d, d, c.n_layers_decoder, k)]
    return {
        "entropy": _block_matrices(e.dim, e.hidden_ffn, e.n_layers) + [Matrix(e.vocab_size, e.dim)],
        "encoder": _block_matrices(d, c.hidden_ffn_local, c.n_layers_encoder),
        "global": glob + pooling + latent_kv,
        "decoder": _block_matrices(d, c.hidden_ffn_local, c.n_layers_decoder)
        + [Matrix(d, d, c.n_layers_decoder), Matrix(d, d, c.n_layers_decoder), Matrix(c.vocab_size, d)],
    }
