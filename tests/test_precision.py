"""Precision and size: --dtype end to end, large random presets built on the meta device with only the
weights a method needs, a model that does not fit as one error line, bf16 against fp32."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bltbench.errors import BltbenchError
from bltbench.instrumentation.params import component_params
from bltbench.model.build import parse_dtype
from bltbench.model.checkpoint import load_model, random_bundle
from bltbench.model.diffusion import BlockDiffusionBLT
from bltbench.model.entropy import entropy_nats
from bltbench.model.ids import encode_prompt
from bltbench.model.patching import patch_starts
from conftest import run_cli


def _embedding_rows(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Embedding))


@pytest.mark.parametrize("name", ["blt-1b", "blt-7b"])
def test_large_presets_build_only_the_weights_asked_for_in_their_dtype(name):
    """On the meta device nothing is allocated: blt-7b's 6.7B dense parameters are counted, not built."""
    bundle = random_bundle(name, hash_buckets=1024, dtype=torch.bfloat16, weights=("blt",), device="meta")
    assert bundle.blt_d is None and bundle.blt is not None and bundle.entropy is not None
    params = component_params(bundle.config)
    for module, dense in ((bundle.blt, params.encoder + params.global_ + params.decoder),
                          (bundle.entropy, params.entropy)):
        tensors = list(module.parameters())
        assert {t.dtype for t in tensors} == {torch.bfloat16} and {t.device.type for t in tensors} == {"meta"}
        assert sum(t.numel() for t in tensors) - _embedding_rows(module) == dense
    c = bundle.config
    assert _embedding_rows(bundle.blt) == (c.n_hash_tables * 1024 + c.vocab_size) * c.d_local
    if name == "blt-7b":
        assert params.encoder + params.global_ + params.decoder > 6e9
    only_d = random_bundle(name, hash_buckets=1024, dtype=torch.float16, weights=("blt-d",), device="meta")
    assert only_d.blt is None and isinstance(only_d.blt_d, BlockDiffusionBLT)
    assert next(only_d.blt_d.parameters()).dtype == torch.float16


def test_load_model_builds_the_requested_dtype_and_weights():
    bundle = load_model("random:tiny", dtype="bf16", hash_buckets=512, weights=["blt"])
    assert bundle.blt_d is None and bundle.config.hash_buckets == 512
    assert {p.dtype for p in bundle.blt.parameters()} == {torch.bfloat16}
    assert bundle.blt.encoder_hash_tok_embedding[0].weight.shape[0] == 512
    folder = load_model("tiny", dtype="fp16", weights=["blt-d"])
    assert folder.blt is None and next(folder.blt_d.parameters()).dtype == torch.float16
    with pytest.raises(BltbenchError, match="random presets only"):
        load_model("tiny", hash_buckets=512)
    with pytest.raises(BltbenchError, match="unknown dtype 'int8'"):
        parse_dtype("int8")


def test_a_model_that_does_not_fit_is_one_error_line_with_what_it_needs(capsys, monkeypatch):
    monkeypatch.setattr("bltbench.model.build.available_bytes", lambda device: 2 * 10**9)
    code, out, err = run_cli(capsys, "generate", "--model", "random:blt-7b", "--dtype", "bf16", "--prompt", "x")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    # blt-7b's dense weights in bf16 (6.81B parameters, entropy model included) plus its full hash
    # tables (6 x 500002 x 1280) and byte embeddings; one hash table in fp32 while it is initialised
    weights = float(err.split("GB: ")[1].split(" GB")[0])
    assert abs(weights - 2 * (6.713e9 + 0.0993e9 + 6 * 500002 * 1280 + 260 * 1280 + 260 * 768) / 1e9) < 0.06, err
    assert "in bfloat16 + 2.6 GB while building them" in err and "2.0 GB is free" in err, err
    assert "--hash-buckets" in err and "--dtype bf16" not in err, err


def test_bf16_logits_stay_within_a_stated_tolerance_of_fp32():
    """Same weights, same patches: bf16 log-probabilities within 0.15 nats of fp32 (0.3% of positions
    may go further), and the greedy byte the same at >= 95% of positions."""
    ids = torch.tensor([encode_prompt(b"The quick brown fox jumps over the lazy dog. " * 6)])
    out = {}
    starts = None
    for dtype in ("fp32", "bf16"):
        bundle = load_model("random:tiny", dtype=dtype, weights=["blt"])
        with torch.inference_mode():
            if starts is None:
                entropies = entropy_nats(bundle.entropy(ids)[0]).tolist()
                starts = torch.tensor([patch_starts(bundle.config.patching, entropies, ids.shape[1])])
            out[dtype] = torch.log_softmax(bundle.blt(ids, starts).float(), -1)[0]
    gap = (out["bf16"] - out["fp32"]).abs().amax(-1)
    assert gap.quantile(0.997) < 0.15, gap.max()
    assert (out["bf16"].argmax(-1) == out["fp32"].argmax(-1)).float().mean() >= 0.95


def test_dtype_flows_into_records_and_bad_dtypes_are_one_line(capsys, monkeypatch):
    code, out, err = run_cli(capsys, "generate", "--model", "random:tiny", "--prompt", "Hi", "--max-bytes", "6",
                             "--dtype", "bf16", "--json", "--device-profile", "off")
    assert code == 0, err
    assert json.loads(out)["dtype"] == "bfloat16"
    for command in (["generate", "--prompt", "x"], ["compare"], ["bench", "decode"]):
        code, _, err = run_cli(capsys, *command, "--model", "random:tiny", "--dtype", "int8")
        assert code == 2 and "unknown dtype 'int8'" in err and len(err.strip().splitlines()) == 1, (command, err)
    real_linear = torch.nn.functional.linear

    def no_half(x, w, *rest):
        if x.dtype == torch.float16:
            raise RuntimeError('"addmm_impl_cpu_" not implemented for \'Half\'')
        return real_linear(x, w, *rest)

    monkeypatch.setattr(torch.nn.functional, "linear", no_half)  # a device without fp16 kernels
    code, _, err = run_cli(capsys, "generate", "--model", "random:tiny", "--prompt", "x", "--dtype", "fp16")
    assert code == 2 and "cannot compute in float16" in err and len(err.strip().splitlines()) == 1, err


def test_inference_multiplies_the_fused_weights_in_place_not_a_copy():
    """q/k/v (and gate/up, cross-attention k/v) are views of the one matrix decoding multiplies, so a
    loaded model holds its weights once; a decode leaves it so, and changing a weight changes the matrix."""
    from bltbench.model.layers import Attention, CrossAttention, FeedForward

    for bundle in (load_model("random:tiny", weights=["blt"]), load_model("tiny", weights=["blt"])):
        with torch.inference_mode():
            bundle.blt(torch.tensor([encode_prompt(b"shared storage")]), torch.ones(1, 16, dtype=torch.bool))
        fused = [m for m in bundle.blt.modules() if isinstance(m, (Attention, CrossAttention, FeedForward))]
        assert {type(m) for m in fused} == {Attention, CrossAttention, FeedForward}
        for m in fused:
            first = getattr(m, m.FUSED[0]).weight
            with torch.inference_mode():
                assert m.fused().data_ptr() == first.data_ptr(), type(m).__name__
    with torch.no_grad():
        first.add_(1.0)
    with torch.inference_mode():
        assert torch.equal(m.fused()[: first.shape[0]], first)
