"""The bltbench folder format: `bltbench.json` (config + component files) and 16/32-bit safetensors
per component, numbered shards past SHARD_BYTES; BLT-D stores only what differs from its base BLT."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from bltbench.errors import BltbenchError
from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.bundle import ModelBundle
from bltbench.model.config import BLTConfig
from bltbench.model.diffusion import BlockDiffusionBLT
from bltbench.model.entropy import EntropyModel
from bltbench.model.formats.common import LazyState, build_from_state, read_json, read_safetensors

MANIFEST = "bltbench.json"
COMPONENT_FILES = {"blt": "blt.safetensors", "blt_d": "blt_d.safetensors", "entropy": "entropy.safetensors"}
SHARD_BYTES = 10 * 1024 * 1024  # keeps every file small enough for a plain git repository


def is_native(folder: Path) -> bool:
    return (folder / MANIFEST).exists()


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
        components: dict[str, str | list[str]] = {}
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


def _read_component(folder: Path, files: str | list[str]) -> LazyState:
    names = [files] if isinstance(files, str) else files
    return LazyState.merged([read_safetensors(folder / name) for name in names], str(folder))


def load_native(folder: Path, dtype: torch.dtype, weights: tuple[str, ...], with_entropy: bool = True) -> ModelBundle:
    manifest = read_json(folder / MANIFEST)
    if manifest.get("format") != "bltbench" or not isinstance(manifest.get("config"), dict):
        raise BltbenchError(f"{folder / MANIFEST} is not a bltbench manifest")
    config = BLTConfig.from_dict(manifest["config"])
    components = manifest.get("components") or {}
    blt = entropy = blt_d = None
    if "blt" in components and "blt" in weights:
        blt = build_from_state(lambda: ByteLatentTransformer(config), _read_component(folder, components["blt"]),
                               f"{folder} (blt)", dtype)
    if "entropy" in components and with_entropy:
        entropy = build_from_state(lambda: EntropyModel(config.entropy),
                                   _read_component(folder, components["entropy"]), f"{folder} (entropy)", dtype)
    if "blt_d" in components and "blt-d" in weights:
        state = _read_component(folder, components["blt_d"])
        base = (manifest.get("bases") or {}).get("blt_d")
        if base is not None:  # tensors BLT-D shares with its base are stored only there
            if base not in components:
                raise BltbenchError(f"{folder / MANIFEST}: BLT-D's base {base!r} is not in the bundle")
            state = LazyState.merged([_read_component(folder, components[base]), state], str(folder))
        blt_d = build_from_state(lambda: BlockDiffusionBLT(config), state, f"{folder} (blt_d)", dtype)
    return ModelBundle(config, blt, entropy, str(folder), "bltbench", blt_d)
