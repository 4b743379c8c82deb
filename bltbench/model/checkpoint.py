"""`load_model`: a --model argument resolved to a bundle, whatever it names.

`random:PRESET[:SEED]` (deterministic random weights), a bundled model's name, or a checkpoint folder
in one of three formats, detected from the folder, each read by its own module in `formats/`:
bltbench (`native`), the official BLT download and Hub layouts (`official`), transformers (`hf`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

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
from bltbench.model.config import BLTConfig, EntropyModelConfig, preset
from bltbench.model.diffusion import BlockDiffusionBLT
from bltbench.model.entropy import EntropyModel
from bltbench.model.formats.hf import is_transformers, load_transformers, load_transformers_entropy
from bltbench.model.formats.native import MANIFEST, is_native, load_native, save_bundle
from bltbench.model.formats.official import (
    is_official,
    is_official_entropy,
    load_official,
    load_official_entropy,
)
from bltbench.model.init import init_weights
from bltbench.model.layers import share_fused_storage

__all__ = ["BUNDLED_DIR", "bundled_models", "load_entropy_model", "load_model", "random_bundle", "random_weights", "save_bundle"]

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"


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


# -- entry point -----------------------------------------------------------------------------------
def bundled_models() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / MANIFEST).exists())


def _folder(spec: str, what: str) -> Path:
    """A checkpoint folder named by path or by a bundled model's name."""
    folder = Path(spec)
    if not folder.exists() and spec in bundled_models():
        folder = BUNDLED_DIR / spec
    if not folder.exists():
        names = ", ".join(bundled_models()) or "none installed"
        raise BltbenchError(f"{what} {spec!r} not found: give random:PRESET[:SEED], a bundled model ({names}) "
                            "or a checkpoint folder")
    if not folder.is_dir():
        raise BltbenchError(f"{what} {spec!r} is a file; a checkpoint is a folder")
    return folder


def load_entropy_model(spec: str, dtype: torch.dtype = torch.float32) -> tuple[EntropyModelConfig, EntropyModel]:
    """An entropy model on its own (`--entropy-model`): an official entropy folder in any layout
    (facebook/blt's entropy_model/, the Hub's blt-entropy), or the entropy model of a bltbench bundle,
    a transformers BLT folder or an official BLT folder."""
    if spec.startswith("random:"):
        bundle = load_model(spec, dtype=dtype, weights=())
        if bundle.entropy is None:
            raise BltbenchError(f"--entropy-model {spec}: that preset patches statically and has no entropy model")
        return bundle.config.entropy, bundle.entropy
    folder = _folder(spec, "entropy model")
    if is_official_entropy(folder) or is_official(folder):
        return load_official_entropy(folder, dtype)
    if is_transformers(folder):
        return load_transformers_entropy(folder, dtype)
    if is_native(folder):
        bundle = load_native(folder, dtype, ())
        if bundle.entropy is None:
            raise BltbenchError(f"--entropy-model {spec}: {folder} holds no entropy model")
        return bundle.config.entropy, bundle.entropy
    raise BltbenchError(f"--entropy-model {spec}: {folder} is not an entropy model folder (expected params.json "
                        "with 'entropy_model' + consolidated.pth, model.safetensors + config.json, a bltbench "
                        "bundle or a transformers BLT folder)")


def load_model(spec: str, device: str = "cpu", dtype: str | torch.dtype | None = None,
               hash_buckets: int | None = None, weights: Iterable[str] | None = None,
               entropy_model: str | None = None) -> ModelBundle:
    """Resolve a --model argument: random:PRESET[:SEED], a bundled name, or a checkpoint folder, in
    `dtype` (default fp32) on `device`. `weights` (blt, blt-d; default both) says which to build: a run
    of `blt` never allocates BLT-D. `hash_buckets` resizes a random preset's hash tables.
    `entropy_model` (any spec `load_entropy_model` takes) replaces whatever entropy model the folder
    holds or sits beside."""
    torch_dtype = parse_dtype(dtype) or torch.float32
    wanted = _weights_wanted(weights)
    if hash_buckets is not None and hash_buckets < 1:
        raise BltbenchError(f"--hash-buckets must be >= 1, got {hash_buckets}")
    check_dtype_runs(torch_dtype, device)
    if spec.startswith("random:"):  # built where it runs, fused storage already shared
        bundle = _parse_random(spec, hash_buckets=hash_buckets, dtype=torch_dtype, weights=wanted, device=device)
        loaded = []
    else:
        if hash_buckets is not None:
            raise BltbenchError("--hash-buckets resizes random presets only; a checkpoint's tables are what it holds")
        bundle = _load_folder(_folder(spec, "model"), torch_dtype, wanted, find_entropy=entropy_model is None)
        loaded = [bundle.blt, bundle.blt_d] + ([bundle.entropy] if entropy_model is None else [])
    if entropy_model is not None:
        if bundle.config.patching.mode != "entropy":
            raise BltbenchError(f"--entropy-model {entropy_model}: {spec} patches {bundle.config.patching.mode}ally, "
                                "so no entropy model would be used")
        entropy_config, entropy = load_entropy_model(entropy_model, torch_dtype)
        bundle = dataclasses.replace(bundle, config=dataclasses.replace(bundle.config, entropy=entropy_config),
                                     entropy=entropy, entropy_source=entropy_model)
        loaded.append(entropy)
    for module in loaded:
        if module is not None:
            module.to(device)
            share_fused_storage(module)
    return _compared_in_entropy_precision(bundle)


def _compared_in_entropy_precision(bundle: ModelBundle) -> ModelBundle:
    """The patching thresholds as an entropy model in bf16/fp16 compares its entropies with them: the
    official patcher compares a bf16 tensor with a Python float, which torch does in bf16, so the
    threshold is rounded to bf16 first (entropies are computed in the entropy model's precision)."""
    if bundle.entropy is None:
        return bundle
    dtype = next(bundle.entropy.parameters()).dtype
    if dtype.itemsize >= 4:
        return bundle

    def cast(value: float | None) -> float | None:
        return None if value is None else float(torch.tensor(value, dtype=dtype))

    p = bundle.config.patching
    patching = dataclasses.replace(p, threshold=cast(p.threshold), threshold_add=cast(p.threshold_add))
    return dataclasses.replace(bundle, config=dataclasses.replace(bundle.config, patching=patching))


def _load_folder(folder: Path, dtype: torch.dtype, weights: tuple[str, ...], find_entropy: bool) -> ModelBundle:
    if is_native(folder):
        return load_native(folder, dtype, weights, find_entropy)
    if is_official(folder):
        return load_official(folder, dtype, find_entropy)
    if is_transformers(folder):
        return load_transformers(folder, dtype, find_entropy)
    if (folder / "config.json").exists():
        raise BltbenchError(f"{folder}/config.json is neither a transformers BLT config (model_type 'blt') "
                            "nor an official one ({'args': ...} beside model.safetensors)")
    raise BltbenchError(
        f"{folder} is not a model folder: expected {MANIFEST} (bltbench), consolidated.pth + params.json "
        "(official BLT) or config.json (transformers)"
    )
