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
from bltbench.model.config import BLTConfig, preset
from bltbench.model.diffusion import BlockDiffusionBLT
from bltbench.model.entropy import EntropyModel
from bltbench.model.formats.hf import is_transformers, load_transformers
from bltbench.model.formats.native import MANIFEST, is_native, load_native, save_bundle
from bltbench.model.formats.official import is_official, load_official
from bltbench.model.init import init_weights
from bltbench.model.layers import share_fused_storage

__all__ = ["BUNDLED_DIR", "bundled_models", "load_model", "random_bundle", "random_weights", "save_bundle"]

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
    if is_native(folder):
        bundle = load_native(folder, torch_dtype, wanted)
    elif is_official(folder):
        bundle = load_official(folder, torch_dtype)
    elif is_transformers(folder):
        bundle = load_transformers(folder, torch_dtype)
    elif (folder / "config.json").exists():
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
