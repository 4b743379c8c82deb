"""Loading and saving model bundles in the three folder formats, detected from the folder.

- bltbench: `bltbench.json` (config + component files) and 16/32-bit safetensors per component.
- official BLT: `consolidated.pth` holding {"model": state_dict} + `params.json` (train args), or the
  official `save_pretrained` output (`model.safetensors` + `config.json` {"args": ...}); the entropy
  model inside it or beside it (`entropy_model/`, `blt-entropy/`), laid out either way.
- transformers: `BltForCausalLM.save_pretrained` output (`config.json` with model_type "blt").
Plus `random:PRESET[:SEED]` for deterministic random weights, and bundled model names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bltbench.errors import BltbenchError
from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.build import (
    check_dtype_runs,
    ensure_fits,
    largest_tensor_bytes,
    materialise,
    on_meta,
    parse_dtype,
)
from bltbench.model.bundle import ModelBundle
from bltbench.model.config import (
    BLTConfig,
    EntropyModelConfig,
    PatchingConfig,
    preset,
)
from bltbench.model.diffusion import BlockDiffusionBLT
from bltbench.model.entropy import EntropyModel
from bltbench.model.init import init_weights
from bltbench.model.layers import share_fused_storage

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"
MANIFEST = "bltbench.json"
COMPONENT_FILES = {"blt": "blt.safetensors", "blt_d": "blt_d.safetensors", "entropy": "entropy.safetensors"}


# -- random weights ----------------------------------------------------------------------------
WEIGHTS = ("blt", "blt-d")
_RANDOM_PARTS = {"blt": (ByteLatentTransformer, 0), "blt-d": (BlockDiffusionBLT, 2_000_003),
                 "entropy": (EntropyModel, 1_000_003)}


def _weights_wanted(weights: Iterable[str] | None) -> tuple[str, ...]:
    """Which of the BLT and BLT-D weights to build: all when None."""
    if weights is None:
        return WEIGHTS
    wanted = tuple(dict.fromkeys(weights))
    bad = [w for w in wanted if w not in WEIGHTS]
    if bad:
        raise BltbenchError(f"unknown weights {bad[0]!r} (blt or blt-d)")
    return wanted


def random_bundle(preset_name: str, seed: int = 0, hash_buckets: int | None = None, dtype: torch.dtype | None = None,
                  weights: Iterable[str] | None = None, device: str | torch.device = "cpu") -> ModelBundle:
    """Deterministic random weights of a preset (see `random_weights`); `hash_buckets` cuts the hash
    tables (a large preset's dense dims then fit a small machine)."""
    config = preset(preset_name)
    if hash_buckets is not None:
        config = dataclasses.replace(config, hash_buckets=hash_buckets)
        config.validate()
    buckets = f", {config.hash_buckets} hash buckets" if hash_buckets is not None else ""
    return random_weights(config, seed, dtype, weights, device, f"random:{preset_name}", buckets)


def random_weights(config: BLTConfig, seed: int = 0, dtype: torch.dtype | None = None,
                   weights: Iterable[str] | None = None, device: str | torch.device = "cpu", name: str = "random",
                   note: str = "") -> ModelBundle:
    """Deterministic random weights for a config, only those asked for (`weights`: blt, blt-d; the
    entropy model when it patches by entropy), built straight in `dtype` on `device`. On the meta
    device nothing is allocated or initialised: sizes and dtypes only."""
    dtype = dtype or torch.float32
    parts = list(_weights_wanted(weights)) + (["entropy"] if config.patching.mode == "entropy" else [])
    metas = {part: on_meta(lambda cls=_RANDOM_PARTS[part][0]: cls(config.entropy if cls is EntropyModel else config),
                           dtype) for part in parts}
    real = torch.device(device).type != "meta"
    if real:
        ensure_fits(f"{name} ({' + '.join(parts)}{note})", metas.values(), device,
                    largest_tensor_bytes(metas.values()), "--hash-buckets 1024")
    modules: dict[str, nn.Module] = {}
    for part, module in metas.items():
        if real:
            module = materialise(module, device)
            init_weights(module, seed + _RANDOM_PARTS[part][1])
            share_fused_storage(module)
        modules[part] = module.eval()
    return ModelBundle(config, modules.get("blt"), modules.get("entropy"), f"{name}:{seed}", "random",
                       modules.get("blt-d"))


def _parse_random(spec: str, **options) -> ModelBundle:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise BltbenchError(f"bad model spec {spec!r}: expected random:PRESET[:SEED]")
    seed = 0
    if len(parts) == 3:
        try:
            seed = int(parts[2])
        except ValueError:
            raise BltbenchError(f"bad seed {parts[2]!r} in {spec!r}: expected an integer") from None
    return random_bundle(parts[1], seed, **options)


def _built(factory: Callable[[], nn.Module], state: dict[str, torch.Tensor], source: str,
           dtype: torch.dtype) -> nn.Module:
    """A module allocated once in `dtype` (no fp32 copy first) and filled from a checkpoint's state."""
    meta = on_meta(factory, dtype)
    ensure_fits(source, [meta], "cpu")
    module = materialise(meta, "cpu")
    load_state(module, state, source)
    return module.eval()


# -- strict state loading ------------------------------------------------------------------------
def load_state(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `module`, failing with one line on any missing, extra or misshapen tensor."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if misshapen:
        k = misshapen[0]
        problems.append(
            f"{len(misshapen)} of the wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})"
        )
    if problems:
        raise BltbenchError(f"checkpoint {source} does not match its config: tensors " + "; ".join(problems))
    dtype = next(iter(expected.values())).dtype
    module.load_state_dict({k: v.to(dtype) for k, v in state.items()})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BltbenchError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BltbenchError(f"{path} does not hold a JSON object")
    return data


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BltbenchError(f"corrupt or unreadable checkpoint {path}: {str(exc).splitlines()[0]}") from None


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise BltbenchError(f"corrupt or unreadable checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return data["model"]
    raise BltbenchError(f"{path} does not hold {{'model': state_dict}} as official BLT checkpoints do")


# -- bltbench format ---------------------------------------------------------------------------------
def save_bundle(bundle: ModelBundle, folder: str | Path, dtype: torch.dtype = torch.bfloat16,
                keep: list[str] | None = None) -> Path:
    """Write a bundle atomically: everything goes to a temporary folder renamed into place. Files named
    in `keep` that already sit in the folder are carried over (a trainer's checkpoint).

    BLT-D tensors equal to the BLT's (after the cast) are stored once: the BLT-D file then names the
    BLT file as its base, which is how a BLT-D fine-tuned with frozen parts stays small."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        components: dict[str, str] = {}
        bases: dict[str, str] = {}
        states: dict[str, dict[str, torch.Tensor]] = {}
        for name, module in (("blt", bundle.blt), ("blt_d", bundle.blt_d), ("entropy", bundle.entropy)):
            if module is None:
                continue
            # clone: weights sharing one fused tensor (share_fused_storage) are saved as separate tensors
            state = {k: v.detach().to("cpu", dtype).clone() for k, v in module.state_dict().items()}
            states[name] = state
            if name == "blt_d" and "blt" in states:
                base = states["blt"]
                state = {k: v for k, v in state.items() if k not in base or not torch.equal(v, base[k])}
                bases[name] = "blt"
            components[name] = _save_shards(state, tmp, COMPONENT_FILES[name], save_file)
        manifest = {"format": "bltbench", "version": 1, "config": bundle.config.to_dict(), "components": components,
                    "bases": bases}
        for name in keep or []:
            if (folder / name).exists():
                os.replace(folder / name, tmp / name)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


SHARD_BYTES = 10 * 1024 * 1024  # keeps every file small enough for a plain git repository


def _save_shards(state: dict[str, torch.Tensor], folder: Path, filename: str, save_file) -> str | list[str]:
    """One file, or numbered shards of at most SHARD_BYTES each when the state is larger."""
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if groups[-1] and size + nbytes > SHARD_BYTES:
            groups.append({})
            size = 0
        groups[-1][key] = tensor
        size += nbytes
    if len(groups) == 1:
        save_file(groups[0], str(folder / filename))
        return filename
    stem = filename.removesuffix(".safetensors")
    names = [f"{stem}-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    for name, group in zip(names, groups):
        save_file(group, str(folder / name))
    return names


def _read_component(folder: Path, files: str | list[str]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for name in [files] if isinstance(files, str) else files:
        state.update(_read_safetensors(folder / name))
    return state


def _load_bltbench(folder: Path, dtype: torch.dtype, weights: tuple[str, ...]) -> ModelBundle:
    manifest = _read_json(folder / MANIFEST)
    if manifest.get("format") != "bltbench" or not isinstance(manifest.get("config"), dict):
        raise BltbenchError(f"{folder / MANIFEST} is not a bltbench manifest")
    config = BLTConfig.from_dict(manifest["config"])
    components = manifest.get("components") or {}
    blt = entropy = blt_d = None
    if "blt" in components and "blt" in weights:
        blt = _built(lambda: ByteLatentTransformer(config), _read_component(folder, components["blt"]),
                     f"{folder} (blt)", dtype)
    if "entropy" in components:
        entropy = _built(lambda: EntropyModel(config.entropy), _read_component(folder, components["entropy"]),
                         f"{folder} (entropy)", dtype)
    if "blt_d" in components and "blt-d" in weights:
        state = _read_component(folder, components["blt_d"])
        base = (manifest.get("bases") or {}).get("blt_d")
        if base is not None:  # tensors BLT-D shares with its base are stored only there
            if base not in components:
                raise BltbenchError(f"{folder / MANIFEST}: BLT-D's base {base!r} is not in the bundle")
            state = {**_read_component(folder, components[base]), **state}
        blt_d = _built(lambda: BlockDiffusionBLT(config), state, f"{folder} (blt_d)", dtype)
    return ModelBundle(config, blt, entropy, str(folder), "bltbench", blt_d)


# -- official BLT format -------------------------------------------------------------------------
def official_ffn(dim: int, multiple_of: int = 256, multiplier: float | None = None) -> int:
    hidden = int(2 * (4 * dim) / 3)
    if multiplier is not None:
        hidden = int(multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


OFFICIAL_ENTROPY_CHUNK = 8192  # calculate_entropies: the entropy model sees the sequence in chunks this long


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def _unsupported_official_settings(model: dict[str, Any]) -> list[str]:
    """Official model arguments, explicitly set, that change the logits in ways bltbench does not compute
    (an unset argument is taken to be what the released BLT models use). Refusing them beats loading
    a model that silently runs differently."""
    found = []
    if model.get("use_rope") is False:
        found.append("use_rope: false")
    heads = model.get("n_heads_local_decoder")
    if heads is not None and heads != model.get("n_heads_local_encoder"):
        found.append(f"n_heads_local_decoder: {heads} (the encoder has {model.get('n_heads_local_encoder')})")
    if model.get("cross_attn_init_by_pooling") is False:
        found.append("cross_attn_init_by_pooling: false")
    pooling = model.get("downsampling_by_pooling")
    if pooling not in (None, "max"):
        found.append(f"downsampling_by_pooling: {pooling!r} (bltbench pools by max)")
    return found


RELEASED_ATTENTION = "xformers"  # what the released models set; the argument's own default (sdpa) cannot run them


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
    read = args.get if as_written else (lambda key, default=None: default)
    dim = args["dim"]
    # load_entropy_model fixes xformers' local_block_causal; a Hub config says its own
    windowed, documents = official_attention(read("attn_impl", "xformers"), read("attn_bias_type", "local_block_causal"),
                                             "the entropy model's")
    return EntropyModelConfig(
        dim=dim,
        n_layers=args["n_layers"],
        n_heads=args["n_heads"],
        ffn_dim=official_ffn(dim, read("multiple_of", 256) or 256, args.get("ffn_dim_multiplier")),
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


def config_from_official(args: dict[str, Any], entropy_args: dict[str, Any] | None, as_written: bool = False) -> BLTConfig:
    """Translate official train args (params.json) into a BLTConfig; `as_written` says how the entropy
    model's arguments are read (see `entropy_config_official`)."""
    model = args.get("model")
    if not isinstance(model, dict):
        raise BltbenchError("official params.json has no 'model' section")
    patcher = (args.get("data") or {}).get("patcher_args") or {}
    try:
        d_local = model["dim_local_encoder"]
        if model.get("dim_local_decoder", d_local) != d_local:
            raise BltbenchError("local encoder and decoder widths differ; bltbench needs them equal")
        if model.get("cross_attn_all_layers_encoder") and model["n_layers_local_encoder"] > 1:
            raise BltbenchError("encoder cross-attention in every layer is not supported")
        if model.get("cross_attn_decoder") is False or model.get("cross_attn_all_layers_decoder") is False:
            raise BltbenchError("bltbench needs decoder cross-attention in every layer, as BLT uses")
        unsupported = _unsupported_official_settings(model)
        if unsupported:
            raise BltbenchError(f"params.json sets {unsupported[0]}, which bltbench does not implement: its logits "
                                "would differ from the official code's" + (f" (and {len(unsupported) - 1} more)"
                                                                           if len(unsupported) > 1 else ""))
        mult, multiple_of = model.get("ffn_dim_multiplier"), model.get("multiple_of", 256)
        sizes = model.get("encoder_hash_byte_group_size") or [3, 4, 5, 6, 7, 8]
        if isinstance(sizes, str):
            sizes = [int(s) for s in sizes.split(",")]
        mode = patcher.get("patching_mode", model.get("patching_mode", "entropy"))
        if mode not in ("entropy", "static"):
            raise BltbenchError(f"patching mode {mode!r} is not supported (entropy or static)")
        patching = PatchingConfig(
            mode=mode,
            threshold=float(patcher.get("threshold", model.get("patching_threshold") or 1.335442066192627)),
            monotonic=bool(patcher.get("monotonicity", model.get("monotonicity", False))),
            threshold_add=_optional_float(patcher.get("threshold_add", model.get("patching_threshold_add"))),
            max_patch_length=patcher.get("max_patch_length", model.get("max_patch_length")),
            static_length=int(patcher.get("patch_size", model.get("patch_size") or 4)),
        )
        entropy = EntropyModelConfig() if entropy_args is None else entropy_config_official(entropy_args, as_written)
        # The local models always ask for local_block_causal; the global model for its attn_bias_type.
        local_windowed, local_documents = official_attention(model.get("attn_impl"), "local_block_causal", "the local models'")
        global_bias = model.get("attn_bias_type", "causal")
        if global_bias == "local_block_causal":
            raise BltbenchError("params.json sets attn_bias_type: 'local_block_causal', which the official global "
                                "model cannot run (it has no sliding window)")
        _, global_documents = official_attention(model.get("attn_impl"), global_bias, "the global model's")
        config = BLTConfig(
            d_local=d_local,
            n_heads_local=model["n_heads_local_encoder"],
            n_layers_encoder=model["n_layers_local_encoder"],
            n_layers_decoder=model["n_layers_local_decoder"],
            ffn_local=official_ffn(d_local, multiple_of, mult),
            d_global=model["dim_global"],
            n_heads_global=model["n_heads_global"],
            n_layers_global=model["n_layers_global"],
            ffn_global=official_ffn(model["dim_global"], multiple_of, mult),
            cross_attn_k=model.get("cross_attn_k") or 1,
            cross_attn_heads=model.get("cross_attn_nheads"),
            hash_sizes=tuple(int(s) for s in sizes),
            hash_buckets=model.get("encoder_hash_byte_group_vocab", 30000),
            hash_functions=model.get("encoder_hash_byte_group_nb_functions", 1),
            local_window=model.get("local_attention_window_len") if local_windowed else None,
            rope_theta=float(model.get("rope_theta", 10000.0)),
            norm_eps=float(model.get("norm_eps", 1e-5)),
            patching=patching,
            entropy=entropy,
            max_seqlen=_optional_int(model.get("max_encoder_seq_length")),
            cross_attn_window_encoder=_window(model, "cross_attn_window_encoder"),
            cross_attn_window_decoder=_window(model, "cross_attn_window_decoder"),
            eos_documents_local=local_documents,
            eos_documents_global=global_documents,
        )
    except KeyError as exc:
        raise BltbenchError(f"official params.json lacks {exc.args[0]!r}") from None
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


def _read_official_entropy(folder: Path | None) -> tuple[dict | None, bool, dict | None, str]:
    """(entropy args, read as written, state, source) of an official entropy folder, in any of its
    layouts: consolidated.pth (or consolidated/consolidated.pth, which the official patcher prefers)
    with params.json, or a Hub folder's model.safetensors with config.json {"args": ...}."""
    if folder is None:
        return None, False, None, ""
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        args = _read_json(folder / "config.json").get("args")
        if not isinstance(args, dict):
            raise BltbenchError(f"{folder / 'config.json'} has no 'args' object (the official save_pretrained writes one)")
        state = _read_safetensors(folder / "model.safetensors")
        return args, True, state, str(folder / "model.safetensors")
    if not (folder / "params.json").exists():
        return None, False, None, ""
    args = _read_json(folder / "params.json").get("entropy_model")
    for path in (folder / "consolidated" / "consolidated.pth", folder / "consolidated.pth"):
        if path.exists() and isinstance(args, dict):
            return args, False, _read_torch(path), str(path)
    return None, False, None, ""


def _load_official(folder: Path, dtype: torch.dtype) -> ModelBundle:
    """An official checkpoint: consolidated.pth + params.json (the facebook/blt download), or a Hub
    folder written by the official save_pretrained (model.safetensors + config.json {"args": ...},
    train_args.json holding params.json)."""
    if (folder / "consolidated.pth").exists():
        args = _read_json(folder / "params.json")
        weights_path = folder / "consolidated.pth"
        state = _read_torch(weights_path)
    else:
        model_args = _read_json(folder / "config.json").get("args")
        if not isinstance(model_args, dict):
            raise BltbenchError(f"{folder / 'config.json'} has no 'args' object (the official save_pretrained writes one)")
        args = _read_json(folder / "train_args.json") if (folder / "train_args.json").exists() else {}
        args = {**args, "model": model_args}
        weights_path = folder / "model.safetensors"
        state = _read_safetensors(weights_path)
    entropy_args, as_written, entropy_state, entropy_source = _read_official_entropy(_entropy_folder(folder))
    config = config_from_official(args, entropy_args, as_written)
    blt = _built(lambda: ByteLatentTransformer(config), state, str(weights_path), dtype)
    entropy = None
    if entropy_state is not None:
        entropy_state = {k: v for k, v in entropy_state.items() if not k.endswith("freqs_cis")}
        entropy = _built(lambda: EntropyModel(config.entropy), entropy_state, entropy_source, dtype)
    return ModelBundle(config, blt, entropy, str(folder), "official")


# -- transformers format -----------------------------------------------------------------------------
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


def convert_hf_state(state: dict[str, torch.Tensor], config: BLTConfig) -> tuple[dict, dict]:
    """Split a transformers `BltForCausalLM` state dict into (BLT, entropy model) official names."""
    blt, entropy = {}, {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            blt["local_decoder.output.weight"] = tensor
        elif name == "model.encoder_hash_tok_embedding.weight":
            for i, chunk in enumerate(tensor.split(config.hash_buckets)):
                blt[f"encoder_hash_tok_embedding.{i}.weight"] = chunk
        elif name.startswith("model.patcher."):
            short = _rename_hf(name[len("model.patcher.") :])
            entropy["output.weight" if short == "lm_head.weight" else short] = tensor
        elif name.startswith("model."):
            blt[_rename_hf(name[len("model.") :])] = tensor
        else:
            blt[name] = tensor  # left for load_state to report
    return blt, entropy


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


def _load_hf(folder: Path, dtype: torch.dtype) -> ModelBundle:
    cfg = _read_json(folder / "config.json")
    config = config_from_hf(cfg)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise BltbenchError(f"{folder} has a transformers config.json but no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(_read_safetensors(f))
    blt_state, entropy_state = convert_hf_state(state, config)
    blt = _built(lambda: ByteLatentTransformer(config), blt_state, str(folder), dtype)
    entropy = None
    if entropy_state:
        entropy = _built(lambda: EntropyModel(config.entropy), entropy_state, f"{folder} (patcher)", dtype)
    return ModelBundle(config, blt, entropy, str(folder), "transformers")


# -- entry point -----------------------------------------------------------------------------------
def bundled_models() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / MANIFEST).exists())


def load_model(spec: str, device: str = "cpu", dtype: str | torch.dtype | None = None,
               hash_buckets: int | None = None, weights: Iterable[str] | None = None) -> ModelBundle:
    """Resolve a --model argument: random:PRESET[:SEED], a bundled name, or a checkpoint folder, in
    `dtype` (default fp32) on `device`. `weights` (blt, blt-d; default both) says which to build: a run
    of `blt` never allocates BLT-D. `hash_buckets` resizes a random preset's hash tables."""
    torch_dtype = parse_dtype(dtype) or torch.float32
    wanted = _weights_wanted(weights)
    if hash_buckets is not None and hash_buckets < 1:
        raise BltbenchError(f"--hash-buckets must be >= 1, got {hash_buckets}")
    check_dtype_runs(torch_dtype, device)
    if spec.startswith("random:"):
        return _parse_random(spec, hash_buckets=hash_buckets, dtype=torch_dtype, weights=wanted, device=device)
    if hash_buckets is not None:
        raise BltbenchError("--hash-buckets resizes random presets only; a checkpoint's tables are what it holds")
    folder = Path(spec)
    if not folder.exists() and spec in bundled_models():
        folder = BUNDLED_DIR / spec
    if not folder.exists():
        names = ", ".join(bundled_models()) or "none installed"
        raise BltbenchError(
            f"model {spec!r} not found: give random:PRESET[:SEED], a bundled model ({names}) or a checkpoint folder"
        )
    if not folder.is_dir():
        raise BltbenchError(f"model {spec!r} is a file; a checkpoint is a folder")
    if (folder / MANIFEST).exists():
        bundle = _load_bltbench(folder, torch_dtype, wanted)
    elif (folder / "consolidated.pth").exists() and (folder / "params.json").exists():
        bundle = _load_official(folder, torch_dtype)
    elif (folder / "config.json").exists():
        hf_config = _read_json(folder / "config.json")
        if hf_config.get("model_type") == "blt":
            bundle = _load_hf(folder, torch_dtype)
        elif isinstance(hf_config.get("args"), dict) and (folder / "model.safetensors").exists():
            bundle = _load_official(folder, torch_dtype)  # the official save_pretrained (Hub facebook/blt-1b)
        else:
            raise BltbenchError(f"{folder}/config.json is neither a transformers BLT config (model_type 'blt') "
                                "nor an official one ({'args': ...} beside model.safetensors)")
    else:
        raise BltbenchError(
            f"{folder} is not a model folder: expected {MANIFEST} (bltbench), consolidated.pth + params.json "
            "(official BLT) or config.json (transformers)"
        )
    bundle.to(device)
    for module in (bundle.blt, bundle.blt_d, bundle.entropy):
        if module is not None:
            share_fused_storage(module)
    return bundle
