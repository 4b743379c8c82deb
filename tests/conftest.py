"""Shared fixtures: small random models that run in milliseconds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.bundle import ModelBundle
from bltbench.model.config import BLTConfig, EntropyModelConfig, PatchingConfig
from bltbench.model.diffusion import BlockDiffusionBLT
from bltbench.model.entropy import EntropyModel
from bltbench.model.init import init_weights


def micro_config(window: int | None = 24, threshold: float = 1.4, max_patch: int | None = 6) -> BLTConfig:
    """A BLT small enough for exhaustive tests, with a short local window so tests cross it."""
    return BLTConfig(
        d_local=32,
        n_heads_local=2,
        n_layers_encoder=1,
        n_layers_decoder=2,
        d_global=64,
        n_heads_global=4,
        n_layers_global=2,
        cross_attn_k=2,
        hash_sizes=(3, 4, 5, 6, 7, 8),
        hash_buckets=257,
        local_window=window,
        patching=PatchingConfig(threshold=threshold, max_patch_length=max_patch),
        entropy=EntropyModelConfig(dim=32, n_layers=2, n_heads=2, window=window),
    )


def make_bundle(config: BLTConfig, seed: int = 0) -> ModelBundle:
    blt = ByteLatentTransformer(config)
    init_weights(blt, seed)
    entropy = EntropyModel(config.entropy)
    init_weights(entropy, seed + 1)
    blt_d = BlockDiffusionBLT(config)
    init_weights(blt_d, seed + 2)
    with torch.no_grad():
        # A sharper entropy head spreads entropies out, so thresholds cut patches of many lengths;
        # a sharper BLT-D head spreads cell confidences, so samplers face real choices.
        entropy.output.weight.mul_(6.0)
        blt_d.local_decoder.output.weight.mul_(4.0)
    return ModelBundle(config, blt.eval(), entropy.eval(), f"micro:{seed}", "random", blt_d.eval())


@pytest.fixture(scope="session")
def micro() -> ModelBundle:
    return make_bundle(micro_config())


@pytest.fixture(scope="session")
def micro_variants() -> list[ModelBundle]:
    """Different seeds, windows (local attention; cross-attention over several patches) and patching rules."""
    return [
        make_bundle(micro_config(), seed=1),
        make_bundle(dataclasses.replace(micro_config(window=None, max_patch=None), cross_attn_window_encoder=2,
                                        cross_attn_window_decoder=3), seed=2),  # cross-attention windows
        make_bundle(dataclasses.replace(micro_config(), patching=PatchingConfig(threshold=0.3, monotonic=True, max_patch_length=8)), seed=3),
        make_bundle(dataclasses.replace(micro_config(), patching=PatchingConfig(mode="static", static_length=3)), seed=4),
    ]


class Killed(Exception):
    """Stands in for a kill in the middle of a sweep."""


def die_after(n: int):
    """An on_sample callback that raises Killed at the n-th written sample."""
    count = {"n": 0}

    def callback(_):
        count["n"] += 1
        if count["n"] == n:
            raise Killed

    return callback


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in-process: (exit status, stdout, stderr)."""
    from bltbench.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


VOLATILE = {"wall_s", "bytes_per_s", "time", "prefill_s", "ttft_s", "decode_s", "ms_per_byte", "roofline_fraction"}  # record fields that differ between identical runs


def stable_records(folder: Path) -> list[dict]:
    """A run's records without their timing fields, in a fixed order: what two runs must agree on."""
    rows = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows),
                  key=lambda r: (r["method"], r["task"], r["sample_id"]))


def decode(bundle: ModelBundle, method: str, prompt_ids: list[int], n: int, sampler=None, weights: str | None = None,
           recompute: bool = False, **kwargs):
    """One method's generation through the public entry point (greedy unless a sampler is given)."""
    from bltbench.decoding.methods import generate, parse_method
    from bltbench.decoding.sampling import Sampler, SamplingConfig

    return generate(parse_method(method, recompute=recompute, weights=weights), bundle, prompt_ids, n, sampler or Sampler(SamplingConfig()),
                    **kwargs)


def context(bundle: ModelBundle, weights: str = "blt", observer=None):
    from bltbench.decoding.core import DecodeContext

    return DecodeContext(bundle.weights(weights), bundle.entropy, bundle.config.patching, observer)


def session(bundle: ModelBundle, capacity: int = 1024, weights: str = "blt", **kwargs):
    """An empty cached state with static caches of `capacity` positions."""
    from bltbench.model.incremental import IncrementalBLT

    return IncrementalBLT(bundle.weights(weights), bundle.entropy, bundle.config.patching, capacity, **kwargs)


def draft_bytes(state, xs) -> list:
    """Run given bytes as BLT-S drafts after the committed positions (logits of each); nothing is
    committed, as when a round's drafts are rejected."""
    import torch

    here = torch.tensor([state.length])
    latent = torch.tensor([state.n_latents - 1])
    logits = []
    for i, x in enumerate(xs):
        state.write_ahead(torch.tensor([x]), here, i, state.length)
        logits.append(state.draft_step(here, i, state.length, latent))
    state.place_ahead(state.length)
    return logits


@pytest.fixture(autouse=True, scope="session")
def _device_profile_cache(tmp_path_factory):
    """Device profiles measured once per test session, in a folder of its own (not the user's cache), over
    a small working set (fast; tests check what the roofline does with a profile, not its accuracy)."""
    import os

    before = {k: os.environ.get(k) for k in ("BLTBENCH_CACHE", "BLTBENCH_PROFILE_GB")}
    os.environ["BLTBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["BLTBENCH_PROFILE_GB"] = "0.01"
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
