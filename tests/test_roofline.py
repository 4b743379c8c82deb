"""The roofline cost model against a hand count on a synthetic device profile (memory-bound and
compute-bound calls), its matrices against the model's own modules, and device profiles end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bltbench.errors import BltbenchError
from bltbench.instrumentation.device_profile import ROWS, DeviceProfile, model_shapes
from bltbench.instrumentation.params import component_matrices, component_params
from bltbench.instrumentation.roofline import Roofline
from bltbench.model.checkpoint import random_bundle
from bltbench.model.incremental import Call
from bltbench.model.layers import RMSNorm
from conftest import micro_config, run_cli

BW = 10e9  # bytes/s the synthetic device streams weights at
FLOPS = 1e11  # its matmul rate: one row is memory-bound (4 bytes per 2 FLOPs), 64 rows compute-bound
KV = 5e9


def _product_seconds(out: int, inp: int, rows: int) -> float:
    return max(out * inp * 4 / BW, 2 * out * inp * rows / FLOPS)


def synthetic_profile(config) -> DeviceProfile:
    table = {f"{o}x{i}": {r: _product_seconds(o, i, r) for r in ROWS} for o, i in model_shapes(config)}
    return DeviceProfile("cpu", "synthetic", "float32", 1, torch.__version__, "x", 20.0, BW / 1e9, KV / 1e9, table,
                         {"decoder": 1e-4, "decoder:many": 3e-4, "encoder": 5e-5})


# The micro model's decoder by hand: 2 layers of fused qkv (96x32), output (32x32), fused gate/up
# (512x32), down (32x256), cross-attention query and output (32x32 each); then the 260-way head.
MICRO_DECODER = [(96, 32, 2), (32, 32, 2), (512, 32, 2), (32, 256, 2), (32, 32, 2), (32, 32, 2), (260, 32, 1)]


def _hand_count(positions: int, cache: int, fixed: float, product=_product_seconds) -> float:
    weights = sum(n * product(o, i, positions) for o, i, n in MICRO_DECODER)
    self_kv = 2 * 2 * (cache + positions) * 32 * 4  # K and V, 2 layers, 32 wide, fp32
    cross_kv = 2 * 2 * positions * 2 * 32 * 4  # each position reads k = 2 latent slots per layer
    return weights + (self_kv + cross_kv) / KV + fixed


def test_roofline_prices_memory_and_compute_bound_calls_as_a_hand_count():
    config = micro_config()
    roofline = Roofline(config, synthetic_profile(config), torch.float32)
    one = roofline.call(Call("decoder", "step", 1, 10))
    assert one.seconds == pytest.approx(_hand_count(1, 10, 1e-4), rel=1e-9)
    assert one.compute_s < one.memory_s  # one row: the weights' streaming time binds
    many = roofline.call(Call("decoder", "verify", 64, 10))
    assert many.seconds == pytest.approx(_hand_count(64, 10, 3e-4), rel=1e-9)
    assert many.compute_s > many.memory_s  # 64 rows: the FLOPs bind
    params = sum(n * o * i for o, i, n in MICRO_DECODER)
    assert one.flops == pytest.approx(2 * params + 4 * 2 * 1 * 11 * 32)  # weights, then attention over 11 keys
    assert many.bytes == pytest.approx(params * 4 + 2 * 2 * 74 * 32 * 4 + 2 * 2 * 64 * 2 * 32 * 4)
    assert roofline.price([Call("decoder", "step", 1, 10)] * 3).seconds == pytest.approx(3 * one.seconds)
    # Row counts between measured ones interpolate linearly; past 64 rows, the 64-row rate holds.
    three = roofline.call(Call("decoder", "verify", 3, 0))
    between = lambda o, i, r: max(_product_seconds(o, i, 1), (_product_seconds(o, i, 2) + _product_seconds(o, i, 4)) / 2)
    assert three.seconds == pytest.approx(_hand_count(3, 0, 3e-4, between), rel=1e-9)
    big = roofline.call(Call("decoder", "verify", 100, 0))
    assert big.compute_s == pytest.approx(sum(n * _product_seconds(o, i, 64) * 100 / 64 for o, i, n in MICRO_DECODER))


def test_component_matrices_are_the_modules_weights():
    """Every matrix the roofline prices exists in the model, and with the norms they add up to the
    pricing model's per-call parameters (embedding tables apart)."""
    bundle = random_bundle("blt-7b", hash_buckets=64, device="meta")
    config = bundle.config
    shapes = {tuple(m.weight.shape) for module in (bundle.blt, bundle.entropy) for m in module.modules()
              if isinstance(m, nn.Linear)}
    for out, inp in model_shapes(config):
        fused = any(out % o == 0 and i == inp for o, i in shapes)  # q/k/v and gate/up are fused row-wise
        assert fused, (out, inp)
    norms = sum(m.weight.numel() for module in (bundle.blt, bundle.entropy) for m in module.modules()
                if isinstance(m, RMSNorm))
    matrices = sum(m.params for ms in component_matrices(config).values() for m in ms)
    assert matrices + norms == sum(component_params(config).per_call.values())


def test_bad_device_profiles_are_one_error_line(capsys, tmp_path):
    config = micro_config()
    good = synthetic_profile(config).to_json()
    cases = {"not-json.json": "{", "other.json": json.dumps({"format": "something"}),
             "negative.json": json.dumps({**good, "gemv_gb_s": -1}),
             "missing.json": json.dumps({k: v for k, v in good.items() if k != "call_s"})}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(BltbenchError):
            DeviceProfile.read(path)
        code, _, err = run_cli(capsys, "generate", "--model", "random:tiny", "--prompt", "x", "--device-profile",
                               str(path))
        assert code == 2 and "device profile" in err and len(err.strip().splitlines()) == 1, (name, err)
    path = tmp_path / "micro.json"
    path.write_text(json.dumps(good))
    assert DeviceProfile.read(path).matmul_s == synthetic_profile(config).matmul_s
    code, _, err = run_cli(capsys, "generate", "--model", "random:tiny", "--prompt", "x", "--device-profile", str(path))
    assert code == 2 and "matrix" in err and len(err.strip().splitlines()) == 1, err  # measured for other shapes


@pytest.mark.slow  # several seconds; make test-slow and CI run it
def test_bench_device_writes_a_profile_that_bench_roofline_prices_with(capsys, tmp_path):
    out = tmp_path / "tiny.json"
    code, text, err = run_cli(capsys, "bench", "device", "--model", "random:tiny", "--repeats", "1", "--threads", "1",
                              "--working-set-gb", "0.02", "--out", str(out))
    assert code == 0, err
    profile = DeviceProfile.read(out)
    assert profile.dtype == "float32" and profile.threads == 1 and profile.gemv_gb_s > 0
    assert {"entropy", "encoder", "global", "decoder", "decoder:many"} <= set(profile.call_s)
    assert set(profile.matmul_s) == {f"{o}x{i}" for o, i in model_shapes(random_bundle("tiny", device="meta").config)}
    code, text, err = run_cli(capsys, "bench", "roofline", "--preset", "tiny", "--dtype", "fp32", "--new-bytes", "6",
                              "--repeats", "1", "--methods", "blt,blt-d-4@confidence=0", "--device-profile", str(out))
    assert code == 0, err
    assert "blt-d-4@confidence=0" in text and "roofline ms/B" in text and "paper proxy" in text
    code, _, err = run_cli(capsys, "bench", "roofline", "--preset", "tiny", "--dtype", "bf16", "--device-profile", str(out))
    assert code == 2 and "measured in float32" in err and len(err.strip().splitlines()) == 1, err
