"""The official BLT formats (facebookresearch/blt), read as the official code reads them.

- `consolidated.pth` holding {"model": state_dict} + `params.json` (train args): the facebook/blt download;
- the official `save_pretrained` output (`model.safetensors` + `config.json` {"args": ...} +
  `train_args.json`): the Hub repos facebook/blt-1b, blt-7b and blt-entropy.
The entropy model sits inside the folder (`entropy_model/`) or beside it (`entropy_model/`,
`blt-entropy/`), in either layout, `consolidated/consolidated.pth` included. Every setting is honoured
as the official code honours it, or refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bltbench.errors import BltbenchError
from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.bundle import ModelBundle
from bltbench.model.config import BLTConfig, EntropyModelConfig, PatchingConfig
from bltbench.model.entropy import EntropyModel
from bltbench.model.formats.common import LazyState, build_from_state, read_json, read_safetensors, read_torch
from bltbench.model.formats.official_settings import CONSOLIDATED_ENTROPY_READS, explain, refusals, with_defaults


def is_official(folder: Path) -> bool:
    if (folder / "consolidated.pth").exists() and (folder / "params.json").exists():
        return True
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return isinstance(read_json(folder / "config.json").get("args"), dict)
    return False


def official_ffn(dim: int, multiple_of: int = 256, multiplier: float | None = None) -> int:
    hidden = int(2 * (4 * dim) / 3)
    if multiplier is not None:
        hidden = int(multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


OFFICIAL_ENTROPY_CHUNK = 8192  # calculate_entropies: the entropy model sees the sequence in chunks this long


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


RELEASED_ATTENTION = "xformers"  # what the released models set (an explicit null is taken to mean it)


def official_attention(impl: str | None, bias: str | None, where: str) -> tuple[bool, bool]:
    """(the sliding window applies, self-attention splits into documents at EOS) for the official
    `create_causal_mask(attn_impl, attn_bias_type)`; what it cannot run is refused in one line."""
    impl = impl or RELEASED_ATTENTION
    if impl == "xformers":
        if bias in (None, "causal"):
            return False, False
        if bias in ("block_causal", "local_block_causal"):
            return bias == "local_block_causal", True
        return True, False  # the official fallback: a local window from the bottom right
    if impl == "flex_attention":
        return False, False  # a plain causal block mask: no window, no documents
    if impl == "sdpa" and bias == "causal":
        return False, False
    raise BltbenchError(f"params.json sets {where} attn_impl: {impl!r} with attn_bias_type: {bias!r}, which the "
                        "official code does not run (it needs xformers or flex_attention for these masks)")


def entropy_config_official(args: dict[str, Any], as_written: bool) -> EntropyModelConfig:
    """The entropy model's config as the official code builds it. From a consolidated checkpoint's
    params.json (`load_entropy_model`), only dim, layers, heads and the FFN multiplier are read: the
    window is always 512 and RoPE theta, norm eps and multiple_of keep their defaults (10000, 1e-5,
    256), whatever the file says. From a Hub folder's config.json (`from_pretrained`), every argument
    is read as written (`as_written`). Either way the official patcher computes entropies over
    8192-byte chunks, each with no context from the one before (`context_restart`)."""
    written = with_defaults("entropy_model", args)  # a missing key is the official class default
    read = (lambda key, default=None: written[key]) if as_written else (lambda key, default=None: default)
    dim, heads, head_dim = written["dim"], written["n_heads"], written["head_dim"]
    if heads is None and head_dim:  # the official attention takes n_heads = dim // head_dim then
        heads = dim // head_dim
    if not isinstance(heads, int) or heads < 1 or not isinstance(dim, int):
        raise BltbenchError(f"the entropy model's settings give no usable dim and heads (dim {dim!r}, n_heads "
                            f"{written['n_heads']!r}, head_dim {head_dim!r})")
    # load_entropy_model fixes xformers' local_block_causal; a Hub config says its own
    windowed, documents = official_attention(read("attn_impl", "xformers"), read("attn_bias_type", "local_block_causal"),
                                             "the entropy model's")
    return EntropyModelConfig(
        dim=dim,
        n_layers=written["n_layers"],
        n_heads=heads,
        ffn_dim=official_ffn(dim, read("multiple_of", 256) or 256, written["ffn_dim_multiplier"]),
        window=(read("sliding_window", 512) or 512) if windowed else None,
        rope_theta=float(read("rope_theta", 10000.0)),
        norm_eps=float(read("norm_eps", 1e-5)),
        context_restart=OFFICIAL_ENTROPY_CHUNK,
        eos_documents=documents,
    )


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _window(model: dict[str, Any], key: str) -> int | None:
    value = model.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise BltbenchError(f"params.json {key} must be a positive integer or null, got {value!r}")
    return value


def _refuse(found: list[str]) -> None:
    if found:
        also = f" (also: {', '.join(item.split(':')[0].split(' ')[0] for item in found[1:])})" if len(found) > 1 else ""
        raise BltbenchError(f"the checkpoint sets {found[0]}, which bltbench does not implement: its logits would "
                            f"differ from the official code's{also}")


def official_refusals(args: dict[str, Any], entropy_args: dict[str, Any] | None, as_written: bool) -> list[str]:
    """Every setting of these official args that bltbench would not run as the official code runs it."""
    model = args.get("model") or {}
    data = args.get("data") or {}
    tokenizer = data.get("tokenizer_args") or {}
    found = refusals("model", model) + refusals("data.patcher_args", data.get("patcher_args") or {})
    if "data" in args:  # a Hub folder without train_args.json has none (the official loader then cannot patch)
        found += refusals("data.tokenizer_args", tokenizer)
        init = tokenizer.get("init_kwargs")
        found += refusals("data.tokenizer_args.init_kwargs", init if isinstance(init, dict) else {})
    if entropy_args is not None:
        found += refusals("entropy_model", entropy_args, _entropy_reads(as_written))
    return found


def config_from_official(args: dict[str, Any], entropy_args: dict[str, Any] | None, as_written: bool = False) -> BLTConfig:
    """Translate official train args (params.json) into a BLTConfig, every field as the official code reads
    it (a missing one at its class default) or refused in one line; `as_written` says how the entropy
    model's arguments are read (see `entropy_config_official`)."""
    if not isinstance(args.get("model"), dict):
        raise BltbenchError("official params.json has no 'model' section")
    _refuse(official_refusals(args, entropy_args, as_written))
    m = with_defaults("model", args["model"])
    patcher = with_defaults("data.patcher_args", (args.get("data") or {}).get("patcher_args") or {})
    sizes = m["encoder_hash_byte_group_size"]
    if sizes is None:
        raise BltbenchError("params.json sets no encoder_hash_byte_group_size: bltbench needs the hash n-gram embeddings")
    if isinstance(sizes, str):
        sizes = [int(size) for size in sizes.split(",")]
    static = patcher["patching_mode"] == "static"
    patching = PatchingConfig(
        mode=patcher["patching_mode"],
        threshold=float(patcher["threshold"]),
        monotonic=bool(patcher["monotonicity"]),
        threshold_add=_optional_float(patcher["threshold_add"]),
        max_patch_length=patcher["max_patch_length"],
        static_length=int(patcher["patch_size"]) if static else 4,
    )
    entropy = EntropyModelConfig() if entropy_args is None else entropy_config_official(entropy_args, as_written)
    # The local models always ask for local_block_causal; the global model for its attn_bias_type.
    local_windowed, local_documents = official_attention(m["attn_impl"], "local_block_causal", "the local models'")
    if m["attn_bias_type"] == "local_block_causal":
        raise BltbenchError("params.json sets attn_bias_type: 'local_block_causal', which the official global "
                            "model cannot run (it has no sliding window)")
    _, global_documents = official_attention(m["attn_impl"], m["attn_bias_type"], "the global model's")
    d_local, mult, multiple_of = m["dim_local_encoder"], m["ffn_dim_multiplier"], m["multiple_of"]
    config = BLTConfig(
        d_local=d_local,
        n_heads_local=m["n_heads_local_encoder"],
        n_layers_encoder=m["n_layers_local_encoder"],
        n_layers_decoder=m["n_layers_local_decoder"],
        ffn_local=official_ffn(d_local, multiple_of, mult),
        d_global=m["dim_global"],
        n_heads_global=m["n_heads_global"],
        n_layers_global=m["n_layers_global"],
        ffn_global=official_ffn(m["dim_global"], multiple_of, mult),
        cross_attn_k=m["cross_attn_k"] or 1,
        cross_attn_heads=m["cross_attn_nheads"],
        hash_sizes=tuple(int(size) for size in sizes),
        hash_buckets=m["encoder_hash_byte_group_vocab"],
        hash_functions=m["encoder_hash_byte_group_nb_functions"],
        local_window=m["local_attention_window_len"] if local_windowed else None,
        rope_theta=float(m["rope_theta"]),
        norm_eps=float(m["norm_eps"]),
        patching=patching,
        entropy=entropy,
        max_seqlen=_optional_int(m["max_encoder_seq_length"]),
        cross_attn_window_encoder=_window(m, "cross_attn_window_encoder"),
        cross_attn_window_decoder=_window(m, "cross_attn_window_decoder"),
        eos_documents_local=local_documents,
        eos_documents_global=global_documents,
    )
    config.validate()
    return config


ENTROPY_FOLDERS = ("entropy_model", "blt-entropy", "blt_entropy")


def _entropy_folder(folder: Path) -> Path | None:
    """Where an official checkpoint's entropy model lives: inside it (`entropy_model/`), or beside it, as
    the facebook/blt download lays it out (`hf-weights/blt_1b` next to `hf-weights/entropy_model`) and
    as Hub snapshots of facebook/blt-1b and facebook/blt-entropy sit side by side."""
    for base in (folder, folder.parent):
        for name in ENTROPY_FOLDERS:
            candidate = base / name
            if candidate.is_dir() and candidate.resolve() != folder.resolve():
                return candidate
    return None


def _read_official_entropy(folder: Path | None) -> tuple[dict | None, bool, LazyState | None, str]:
    """(entropy args, read as written, state, source) of an official entropy folder, in any of its
    layouts: consolidated.pth (or consolidated/consolidated.pth, which the official patcher prefers)
    with params.json, or a Hub folder's model.safetensors with config.json {"args": ...}."""
    if folder is None:
        return None, False, None, ""
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        args = read_json(folder / "config.json").get("args")
        if not isinstance(args, dict):
            raise BltbenchError(f"{folder / 'config.json'} has no 'args' object (the official save_pretrained writes one)")
        state = read_safetensors(folder / "model.safetensors")
        return args, True, state, str(folder / "model.safetensors")
    if not (folder / "params.json").exists():
        return None, False, None, ""
    args = read_json(folder / "params.json").get("entropy_model")
    for path in (folder / "consolidated" / "consolidated.pth", folder / "consolidated.pth"):
        if path.exists() and isinstance(args, dict):
            return args, False, read_torch(path), str(path)
    return None, False, None, ""


def is_official_entropy(folder: Path) -> bool:
    """An official entropy model folder on its own (what --entropy-model may name)."""
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        args = read_json(folder / "config.json").get("args")
        return isinstance(args, dict) and "dim_global" not in args
    return (folder / "params.json").exists() and isinstance(read_json(folder / "params.json").get("entropy_model"), dict)


def load_official_entropy(folder: Path, dtype: torch.dtype) -> tuple[EntropyModelConfig, EntropyModel]:
    """An official entropy model folder (download, nested or Hub layout), or the one an official BLT folder
    holds or sits beside, configured and in the precision the official loader gives it; the BLT is not built."""
    if not is_official_entropy(folder):
        folder = _entropy_folder(folder)
    args, as_written, state, source = _read_official_entropy(folder)
    if state is None:
        raise BltbenchError(f"{folder} holds no official entropy model (params.json with 'entropy_model' beside "
                            "consolidated.pth or consolidated/consolidated.pth, or model.safetensors + config.json)")
    _refuse(refusals("entropy_model", args, _entropy_reads(as_written)))
    config = entropy_config_official(args, as_written)
    return config, _entropy_module(config, state, source, dtype, as_written)


def _entropy_reads(as_written: bool):
    return (lambda key: True) if as_written else (lambda key: key in CONSOLIDATED_ENTROPY_READS)


def _entropy_module(config: EntropyModelConfig, state: LazyState, source: str, dtype: torch.dtype,
                    as_written: bool) -> EntropyModel:
    """As the official loaders run it: a consolidated entropy model in the asked precision (load_entropy_model
    builds it in bf16), a Hub one (from_pretrained, never cast) in fp32 whatever the BLT's."""
    state = state.drop([k for k in state if k.endswith("freqs_cis")])  # RoPE tables the official code stores
    return build_from_state(lambda: EntropyModel(config), state, source, torch.float32 if as_written else dtype)


def load_official(folder: Path, dtype: torch.dtype, find_entropy: bool = True) -> ModelBundle:
    """An official checkpoint: consolidated.pth + params.json (the facebook/blt download), or a Hub
    folder written by the official save_pretrained (model.safetensors + config.json {"args": ...},
    train_args.json holding params.json). `find_entropy=False`: the entropy model comes from elsewhere."""
    if (folder / "consolidated.pth").exists():
        args = read_json(folder / "params.json")
        weights_path = folder / "consolidated.pth"
        state = read_torch(weights_path)
    else:
        model_args = read_json(folder / "config.json").get("args")
        if not isinstance(model_args, dict):
            raise BltbenchError(f"{folder / 'config.json'} has no 'args' object (the official save_pretrained writes one)")
        if not (folder / "train_args.json").exists():
            raise BltbenchError(f"{folder} has no train_args.json: the official Hub folders keep the patcher and "
                                "tokenizer settings there, and without them the official code cannot patch")
        args = {**read_json(folder / "train_args.json"), "model": model_args}
        weights_path = folder / "model.safetensors"
        state = read_safetensors(weights_path)
    entropy_folder = _entropy_folder(folder) if find_entropy else None
    entropy_args, as_written, entropy_state, entropy_source = _read_official_entropy(entropy_folder)
    config = config_from_official(args, entropy_args, as_written)
    blt = build_from_state(lambda: ByteLatentTransformer(config), state, str(weights_path), dtype)
    entropy = None
    if entropy_state is not None:
        entropy = _entropy_module(config.entropy, entropy_state, entropy_source, dtype, as_written)
    settings = explain(args, entropy_args, as_written)
    return ModelBundle(config, blt, entropy, str(folder), "official", file_settings=settings,
                       entropy_source=str(entropy_folder) if entropy is not None else None)
