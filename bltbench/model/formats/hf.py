"""The transformers format: `BltForCausalLM.save_pretrained` output (config.json with model_type "blt"
and safetensors weights, the entropy model under `model.patcher.`), renamed to bltbench's layout."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from bltbench.errors import BltbenchError
from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.bundle import ModelBundle
from bltbench.model.config import BLTConfig, EntropyModelConfig, PatchingConfig
from bltbench.model.entropy import EntropyModel
from bltbench.model.formats.common import LazyState, build_from_state, read_json, read_safetensors


def is_transformers(folder: Path) -> bool:
    return (folder / "config.json").exists() and read_json(folder / "config.json").get("model_type") == "blt"


_HF_LAYER_RENAMES = (
    ("self_attn.q_proj", "attention.wq"),
    ("self_attn.k_proj", "attention.wk"),
    ("self_attn.v_proj", "attention.wv"),
    ("self_attn.o_proj", "attention.wo"),
    ("mlp.gate_proj", "feed_forward.w1"),
    ("mlp.up_proj", "feed_forward.w3"),
    ("mlp.down_proj", "feed_forward.w2"),
    ("input_layernorm", "attention_norm"),
    ("post_attention_layernorm", "ffn_norm"),
)
_HF_CROSS_RENAMES = (("q_proj", "wq"), ("k_proj", "wk"), ("v_proj", "wv"), ("o_proj", "wo"),
                     ("q_norm", "cross_attn_norm_q"), ("k_norm", "cross_attn_norm_kv"))


def _rename_hf(name: str) -> str:
    for old, new in _HF_LAYER_RENAMES:
        name = name.replace(f".{old}.", f".{new}.")
    m = re.match(r"(.*\.cross_attn_layers\.\d+\.)(\w+)(\..*)", name)
    if m:
        name = m.group(1) + dict(_HF_CROSS_RENAMES).get(m.group(2), m.group(2)) + m.group(3)
    return name.replace("embed_tokens", "tok_embeddings")


def convert_hf_state(state: LazyState, config: BLTConfig) -> tuple[LazyState, LazyState]:
    """Split a transformers `BltForCausalLM` state into (BLT, entropy model) under bltbench's names,
    as views: nothing is read until a loader copies it into place."""
    blt: dict[str, str] = {}
    entropy: dict[str, str] = {}
    fused_hash = None
    for name in state:
        if name == "lm_head.weight":
            blt["local_decoder.output.weight"] = name
        elif name == "model.encoder_hash_tok_embedding.weight":
            fused_hash = name
        elif name.startswith("model.patcher."):
            short = _rename_hf(name[len("model.patcher.") :])
            entropy["output.weight" if short == "lm_head.weight" else short] = name
        elif name.startswith("model."):
            blt[_rename_hf(name[len("model.") :])] = name
        else:
            blt[name] = name  # left for load_state to report
    blt_state = state.select(blt)
    if fused_hash is not None:  # transformers stacks the hash tables in one embedding
        rows, width = state.shape(fused_hash)
        n = config.hash_buckets
        def table(i: int) -> torch.Tensor:  # only that table's rows, not the whole fused embedding
            if state.rows is not None:
                return state.rows(fused_hash, i * n, (i + 1) * n)
            return state[fused_hash][i * n:(i + 1) * n]

        for i in range(-(-rows // n)):
            blt_state.derived(f"encoder_hash_tok_embedding.{i}.weight", (min(n, rows - i * n), width),
                              lambda s, i=i: table(i))
    return blt_state, state.select(entropy)


def config_from_hf(cfg: dict[str, Any]) -> BLTConfig:
    def theta(sub: dict[str, Any], default: float) -> float:
        rope = sub.get("rope_parameters") or cfg.get("rope_parameters") or {}
        return float(rope.get("rope_theta", sub.get("rope_theta", default)))

    try:
        enc, dec, glob = cfg["encoder_config"], cfg["decoder_config"], cfg["global_config"]
        pat = cfg.get("patcher_config") or {}
        if enc["hidden_size"] != dec["hidden_size"]:
            raise BltbenchError("local encoder and decoder widths differ; bltbench needs them equal")
        d_local = enc["hidden_size"]
        config = BLTConfig(
            d_local=d_local,
            n_heads_local=enc["num_attention_heads"],
            n_layers_encoder=enc["num_hidden_layers"],
            n_layers_decoder=dec["num_hidden_layers"],
            ffn_local=dec.get("intermediate_size") or int(8 * d_local / 3),
            d_global=glob["hidden_size"],
            n_heads_global=glob["num_attention_heads"],
            n_layers_global=glob["num_hidden_layers"],
            ffn_global=glob.get("intermediate_size") or int(8 * glob["hidden_size"] / 3),
            cross_attn_k=cfg.get("cross_attn_k") or 2,
            hash_sizes=tuple(cfg.get("encoder_hash_byte_group_size") or (3, 4, 5, 6, 7, 8)),
            hash_buckets=cfg.get("encoder_hash_byte_group_vocab", 500002),
            hash_functions=cfg.get("encoder_hash_byte_group_nb_functions", 1),
            local_window=cfg.get("local_attention_window_len", 512),
            rope_theta=theta(enc, 500000.0),
            norm_eps=float(enc.get("rms_norm_eps", 1e-5)),
            patching=PatchingConfig(
                mode="entropy" if cfg.get("patching_mode", "entropy") == "entropy" else "static",
                threshold=float(cfg.get("patching_threshold") or 1.335442066192627),
                max_patch_length=cfg.get("max_patch_length"),
                static_length=int(cfg.get("patch_size") or 4),
            ),
            entropy=EntropyModelConfig(
                dim=pat.get("hidden_size", 768),
                n_layers=pat.get("num_hidden_layers", 14),
                n_heads=pat.get("num_attention_heads", 12),
                ffn_dim=pat.get("intermediate_size", 2048),
                window=pat.get("sliding_window", 512),
                rope_theta=theta(pat, 10000.0),
                norm_eps=float(pat.get("rms_norm_eps", 1e-5)),
            ),
        )
        if enc.get("intermediate_size") and enc["intermediate_size"] != config.hidden_ffn_local:
            raise BltbenchError("local encoder and decoder FFN widths differ; bltbench needs them equal")
    except KeyError as exc:
        raise BltbenchError(f"transformers config.json lacks {exc.args[0]!r}") from None
    config.validate()
    return config


def _transformers_state(folder: Path) -> LazyState:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise BltbenchError(f"{folder} has a transformers config.json but no .safetensors weights")
    return LazyState.merged([read_safetensors(f) for f in files], str(folder))


def load_transformers(folder: Path, dtype: torch.dtype, with_entropy: bool = True) -> ModelBundle:
    config = config_from_hf(read_json(folder / "config.json"))
    blt_state, entropy_state = convert_hf_state(_transformers_state(folder), config)
    blt = build_from_state(lambda: ByteLatentTransformer(config), blt_state, str(folder), dtype)
    entropy = None
    if with_entropy and len(entropy_state):
        entropy = build_from_state(lambda: EntropyModel(config.entropy), entropy_state, f"{folder} (patcher)", dtype)
    return ModelBundle(config, blt, entropy, str(folder), "transformers")


def load_transformers_entropy(folder: Path, dtype: torch.dtype) -> tuple[EntropyModelConfig, EntropyModel]:
    """Only the entropy model (transformers' `patcher`) of a transformers BLT folder."""
    config = config_from_hf(read_json(folder / "config.json"))
    _, entropy_state = convert_hf_state(_transformers_state(folder), config)
    if not len(entropy_state):
        raise BltbenchError(f"{folder} holds no entropy model (no model.patcher.* weights)")
    return config.entropy, build_from_state(lambda: EntropyModel(config.entropy), entropy_state,
                                            f"{folder} (patcher)", dtype)
