"""The engine on a GPU: the same oracles as on a CPU, CUDA graphs equal to eager steps, and the host
syncs CUDA itself sees (hidden ones included: a nonzero or a tensor-sized repeat would show here).
Skipped without a GPU; `scripts/gpu_check.sh` runs them."""

from __future__ import annotations

import warnings

import pytest
import torch

from bltbench.decoding.blt import recompute_logits
from bltbench.decoding.sampling import Sampler, SamplingConfig
from bltbench.model.checkpoint import random_bundle
from bltbench.model.ids import encode_prompt
from conftest import context, decode, session

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

PROMPT = encode_prompt(b"On a GPU, wall-clock should measure the method, not Python. ")
METHODS = ["blt", "blt-s-4", "blt-s-16", "blt-d-4@confidence=0.5", "blt-d-8@entropy=1.5", "blt-dv-4", "blt-dv-8"]


@pytest.fixture(scope="module")
def gpu_tiny():
    bundle = random_bundle("tiny", seed=5)
    for model in (bundle.blt, bundle.blt_d, bundle.entropy):
        model.to("cuda")
    return bundle


def _greedy():
    return Sampler(SamplingConfig(), "cuda")


@torch.inference_mode()
def test_cached_logits_equal_full_recompute_on_cuda(gpu_tiny):
    full = recompute_logits(context(gpu_tiny), PROMPT)
    state = session(gpu_tiny, len(PROMPT))
    cached = torch.cat([state.append(PROMPT[:9])] + [state.append([x]) for x in PROMPT[9:]])
    torch.testing.assert_close(cached, full, atol=1e-3, rtol=0)


def test_lossless_methods_on_cuda(gpu_tiny):
    ref = decode(gpu_tiny, "blt", PROMPT, 64, _greedy())
    ref_d = decode(gpu_tiny, "blt", PROMPT, 64, _greedy(), weights="blt-d")
    for method in ("blt-s-4", "blt-s-16"):
        assert decode(gpu_tiny, method, PROMPT, 64, _greedy()).output_ids == ref.output_ids
    for method in ("blt-dv-4", "blt-dv-8"):
        assert decode(gpu_tiny, method, PROMPT, 64, _greedy()).output_ids == ref_d.output_ids


@pytest.mark.parametrize("method", METHODS)
def test_cuda_graphs_equal_eager_on_cuda(gpu_tiny, method):
    eager = decode(gpu_tiny, method, PROMPT, 48, _greedy())
    for _ in range(2):  # the second request replays graphs recorded for the first's buffers
        graphs = decode(gpu_tiny, method, PROMPT, 48, _greedy(), steps="compiled")
        assert graphs.output_ids == eager.output_ids and graphs.patch_lengths == eager.patch_lengths


def _cuda_syncs(bundle, method: str, n: int, steps: str = "eager") -> tuple[object, int]:
    decode(bundle, method, PROMPT, n, _greedy(), steps=steps)  # warm: caches, kernels, graphs
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            g = decode(bundle, method, PROMPT, n, Sampler(SamplingConfig(suppress_eos=True), "cuda"), steps=steps)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return g, syncs


@pytest.mark.parametrize("steps", ["eager", "compiled"])
def test_cuda_sees_one_sync_per_byte_for_blt(gpu_tiny, steps):
    g, syncs = _cuda_syncs(gpu_tiny, "blt", 40, steps)
    assert len(g.output_ids) == 40
    assert syncs <= 40 + 1 + 4, syncs  # one per byte, the prefill's entropies, a few one-off set-ups


def test_cuda_sees_one_sync_per_blt_s_round_run_ahead(gpu_tiny):
    g, syncs = _cuda_syncs(gpu_tiny, "blt-s-8", 40)
    rounds = g.extras["verify_rounds"]
    assert syncs <= 2 * rounds - g.extras["rounds_run_ahead"] + 1 + 4, (syncs, g.extras)
