"""Model configuration: dataclasses, presets and the FFN width rule (DESIGN.md section 2)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from bltbench.errors import BltbenchError
from bltbench.model.ids import VOCAB_SIZE

OFFICIAL_THRESHOLD = 1.335442066192627


def ffn_width(dim: int, multiple_of: int = 256) -> int:
    """SwiGLU hidden width: 256 * ceil(int(8d/3) / 256), as the official code computes it."""
    return multiple_of * math.ceil(int(8 * dim / 3) / multiple_of)


@dataclass
class EntropyModelConfig:
    """The small causal byte transformer whose next-byte entropy places patch boundaries."""

    dim: int = 768
    n_layers: int = 14
    n_heads: int = 12
    ffn_dim: int | None = None
    window: int | None = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    vocab_size: int = VOCAB_SIZE
    context_restart: int | None = None  # the official patcher runs the entropy model on 8192-byte chunks
    eos_documents: bool = False  # self-attention split into documents at EOS (official local_block_causal)

    @property
    def hidden_ffn(self) -> int:
        return self.ffn_dim or ffn_width(self.dim)


@dataclass
class PatchingConfig:
    """How bytes are grouped into patches (DESIGN.md section 3)."""

    mode: str = "entropy"  # "entropy" or "static"
    threshold: float = OFFICIAL_THRESHOLD
    monotonic: bool = False
    threshold_add: float | None = None  # the official "global and monotonic" rule (unless monotonic)
    max_patch_length: int | None = 8
    static_length: int = 4

    def validate(self) -> None:
        if self.mode not in ("entropy", "static"):
            raise BltbenchError(f"unknown patching mode {self.mode!r} (expected 'entropy' or 'static')")
        if self.max_patch_length is not None and self.max_patch_length < 1:
            raise BltbenchError(f"max_patch_length must be at least 1, got {self.max_patch_length}")
        if self.static_length < 1:
            raise BltbenchError(f"static patch length must be at least 1, got {self.static_length}")


@dataclass
class BLTConfig:
    """Dimensions of a Byte Latent Transformer, in the official layout."""

    d_local: int = 1024
    n_heads_local: int = 16
    n_layers_encoder: int = 1
    n_layers_decoder: int = 9
    ffn_local: int | None = None
    d_global: int = 2048
    n_heads_global: int = 16
    n_layers_global: int = 25
    ffn_global: int | None = None
    cross_attn_k: int = 2
    cross_attn_heads: int | None = None  # defaults to n_heads_local
    hash_sizes: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    hash_buckets: int = 500002
    hash_functions: int = 1
    local_window: int | None = 512
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5
    vocab_size: int = VOCAB_SIZE
    diffusion_blocks: tuple[int, ...] = (4, 8, 16)  # block sizes BLT-D weights were trained for
    max_seqlen: int | None = None  # the longest byte sequence the model runs (official: max_encoder_seq_length)
    # Cross-attention over several patches (official cross_attn_window_*): a patch's pooling queries read
    # the bytes of the last W patches up to it, a byte's decoder reads the latents of the last W patches up
    # to the one it reads. None: one patch (the patch itself; the latent before the byte's patch).
    cross_attn_window_encoder: int | None = None
    cross_attn_window_decoder: int | None = None
    # Documents split at EOS (official block-causal masks): the local encoder's and decoder's
    # self-attention stops at each EOS (it ends its document); the global model's at each patch that
    # holds an EOS. Cross-attention and hash n-grams are not split (as in the official code).
    eos_documents_local: bool = False
    eos_documents_global: bool = False
    patching: PatchingConfig = field(default_factory=PatchingConfig)
    entropy: EntropyModelConfig = field(default_factory=EntropyModelConfig)

    @property
    def hidden_ffn_local(self) -> int:
        return self.ffn_local or ffn_width(self.d_local)

    @property
    def hidden_ffn_global(self) -> int:
        return self.ffn_global or ffn_width(self.d_global)

    @property
    def n_cross_heads(self) -> int:
        return self.cross_attn_heads or self.n_heads_local

    @property
    def d_patch(self) -> int:
        """Width of the k concatenated pooled slots that feed the global model."""
        return self.d_local * self.cross_attn_k

    @property
    def n_hash_tables(self) -> int:
        return len(self.hash_sizes) * self.hash_functions

    def validate(self) -> None:
        for name, dim, heads in (
            ("local", self.d_local, self.n_heads_local),
            ("global", self.d_global, self.n_heads_global),
            ("cross-attention", self.d_local, self.n_cross_heads),
            ("entropy", self.entropy.dim, self.entropy.n_heads),
        ):
            if heads < 1 or dim % heads:
                raise BltbenchError(f"{name} width {dim} is not divisible by {heads} heads")
        sizes = {"d_local": self.d_local, "n_layers_decoder": self.n_layers_decoder, "d_global": self.d_global,
                 "n_layers_global": self.n_layers_global, "vocab_size": self.vocab_size,
                 "entropy.dim": self.entropy.dim, "entropy.n_layers": self.entropy.n_layers}
        optional = {"ffn_local": self.ffn_local, "ffn_global": self.ffn_global, "local_window": self.local_window,
                    "entropy.ffn_dim": self.entropy.ffn_dim, "entropy.window": self.entropy.window,
                    "entropy.context_restart": self.entropy.context_restart, "max_seqlen": self.max_seqlen,
                    "cross_attn_window_encoder": self.cross_attn_window_encoder,
                    "cross_attn_window_decoder": self.cross_attn_window_decoder}
        for name, value in [*sizes.items(), *((k, v) for k, v in optional.items() if v is not None)]:
            if value < 1:
                raise BltbenchError(f"model config field {name} must be at least 1, got {value}")
        if self.n_layers_encoder < 0:
            raise BltbenchError(f"model config field n_layers_encoder must be >= 0, got {self.n_layers_encoder}")
        for name, value in (("rope_theta", self.rope_theta), ("norm_eps", self.norm_eps),
                            ("entropy.rope_theta", self.entropy.rope_theta), ("entropy.norm_eps", self.entropy.norm_eps)):
            if not value > 0:
                raise BltbenchError(f"model config field {name} must be positive, got {value}")
        if self.cross_attn_k < 1:
            raise BltbenchError(f"cross_attn_k must be at least 1, got {self.cross_attn_k}")
        if self.hash_buckets < 1 or any(n < 1 for n in self.hash_sizes):
            raise BltbenchError("hash sizes and bucket counts must be positive")
        if not 1 <= self.hash_functions <= 11:
            raise BltbenchError(f"hash_functions must be 1 to 11 (the official code's primes), got {self.hash_functions}")
        self.patching.validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BLTConfig":
        if not isinstance(data, dict):
            raise BltbenchError(f"malformed model config: expected a mapping, got {type(data).__name__}")
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise BltbenchError(f"unknown model config fields: {', '.join(sorted(unknown))}")
        for key, kind in (("patching", PatchingConfig), ("entropy", EntropyModelConfig)):
            if not isinstance(data.get(key, {}), dict):
                raise BltbenchError(f"model config field {key} must be a mapping, got {data[key]!r}")
            check_field_types(kind, data.get(key, {}), f"{key}.")
        check_field_types(cls, {k: v for k, v in data.items() if k not in ("patching", "entropy")})
        try:
            patching = PatchingConfig(**data.pop("patching", {}))
            entropy = EntropyModelConfig(**data.pop("entropy", {}))
            for key in ("hash_sizes", "diffusion_blocks"):
                if key in data:
                    data[key] = tuple(data[key])
            config = cls(**data, patching=patching, entropy=entropy)
        except TypeError as exc:
            raise BltbenchError(f"malformed model config: {exc}") from None
        config.validate()
        return config


def _matches(value: Any, kind: Any) -> bool:
    """Whether a JSON value fits a field annotation (int, float, bool, str, X | None, tuple[int, ...])."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    if typing.get_origin(kind) is tuple:
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    return True


def _describe(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        return "a list of " + {int: "integers", float: "numbers"}.get(typing.get_args(kind)[0], "values")
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string",
            type(None): "null"}.get(kind, str(kind))


def check_field_types(cls: type, data: dict[str, Any], prefix: str = "") -> None:
    """Type-check a config mapping against a dataclass's annotations, in one error line per field."""
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key in hints and not _matches(value, hints[key]):
            raise BltbenchError(f"model config field {prefix}{key} must be {_describe(hints[key])}, got {value!r}")


def _tiny() -> BLTConfig:
    # blt-1b in proportion: 1 encoder layer, a deeper decoder, a wider and deeper global model, k = 2.
    return BLTConfig(
        d_local=128,
        n_heads_local=4,
        n_layers_encoder=1,
        n_layers_decoder=4,
        d_global=256,
        n_heads_global=4,
        n_layers_global=6,
        cross_attn_k=2,
        hash_sizes=(3, 4, 5, 6, 7, 8),
        hash_buckets=2048,
        local_window=512,
        patching=PatchingConfig(threshold=5.156, max_patch_length=8),
        entropy=EntropyModelConfig(dim=128, n_layers=2, n_heads=4, window=512),
    )


def _blt_1b() -> BLTConfig:
    return BLTConfig(
        d_local=1024,
        n_heads_local=16,
        n_layers_encoder=1,
        n_layers_decoder=9,
        d_global=2048,
        n_heads_global=16,
        n_layers_global=25,
        cross_attn_k=2,
        entropy=EntropyModelConfig(dim=768, n_layers=14, n_heads=12),
    )


def _blt_7b() -> BLTConfig:
    return BLTConfig(
        d_local=1280,
        n_heads_local=20,
        n_layers_encoder=1,
        n_layers_decoder=6,
        ffn_local=3584,
        d_global=4096,
        n_heads_global=32,
        n_layers_global=32,
        ffn_global=11008,
        cross_attn_k=4,  # 4 x 1280 = 5120 slots, projected to the 4096-wide global model
        entropy=EntropyModelConfig(dim=768, n_layers=14, n_heads=12),
    )


PRESETS = {"tiny": _tiny, "blt-1b": _blt_1b, "blt-7b": _blt_7b}


def preset(name: str) -> BLTConfig:
    """A fresh copy of a named preset's config."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise BltbenchError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})") from None
