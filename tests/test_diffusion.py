"""BLT-D and BLT-DV: no leakage, cached blocks equal the training forward, sampler rules, lossless DV."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bltbench.decoding.diffusion import DiffusionConfig, choose_cells
from bltbench.decoding.sampling import Sampler, SamplingConfig
from bltbench.errors import BltbenchError
from bltbench.model.ids import MASK, encode_prompt
from bltbench.training.objective import batch_patch_starts
from conftest import decode, session

TEXT = b"Block diffusion writes several bytes per decoder pass, and must never peek ahead."


def _setup(bundle):
    ids = torch.tensor([encode_prompt(TEXT)])
    starts = batch_patch_starts(bundle.entropy, bundle.config.patching, ids)
    block_starts = torch.nonzero(starts[0, 1 : ids.shape[1]]).flatten() + 1
    return ids, starts, block_starts


@torch.no_grad()
def test_no_leakage_from_the_future_or_the_masked_truth(micro):
    model = micro.blt_d
    ids, starts, bs = _setup(micro)
    assert len(bs) >= 6
    chosen = bs[[1, len(bs) // 2, -2]]
    size = 8
    cells = torch.full((1, len(chosen), size), MASK)
    cells[0, :, 5] = 77  # one unmasked cell per block
    clean, blocks = model.forward_blocks(ids, starts, chosen[None], cells)
    for b, s in enumerate(chosen.tolist()):
        for p in (s, s + 3, ids.shape[1] - 1):  # a clean byte at the block start, inside it, at the end
            changed = ids.clone()
            changed[0, p] = 4 + (int(changed[0, p]) - 4 + 101) % 256
            _, again = model.forward_blocks(changed, starts, chosen[None], cells)
            torch.testing.assert_close(again[0, b], blocks[0, b], atol=1e-5, rtol=0)
        other = cells.clone()
        other[0, [i for i in range(len(chosen)) if i != b]] = 99  # other blocks' contents
        _, again = model.forward_blocks(ids, starts, chosen[None], other)
        torch.testing.assert_close(again[0, b], blocks[0, b], atol=1e-5, rtol=0)
    # the clean next-byte path is the BLT's own, untouched by any block
    torch.testing.assert_close(clean, model(ids, starts), atol=1e-5, rtol=0)
    _, _ = model.forward_blocks(ids, starts, chosen[None], cells.fill_(42))
    torch.testing.assert_close(model.forward_blocks(ids, starts, chosen[None], cells)[0], clean, atol=1e-5, rtol=0)


@torch.inference_mode()
@pytest.mark.parametrize("size", [4, 8, 16])
def test_cached_block_pass_equals_the_training_forward(micro, size):
    model = micro.blt_d
    ids, starts, bs = _setup(micro)
    s = int(bs[len(bs) // 2])
    cells = [MASK] * size
    cells[1] = 80
    reference = model.forward_blocks(ids, starts, torch.tensor([[s]]), torch.tensor([[cells]]))[1][0, 0]
    state = session(micro, ids.shape[1] + size, weights="blt-d")
    state.append(ids[0, : s - 3].tolist())
    state.write(ids[0, s - 3 : s], s - 3)
    state.place_patches(s, "step")
    clean, fused = state.extend_with_block(3, torch.tensor(cells), "step")
    torch.testing.assert_close(fused, reference, atol=1e-4, rtol=0)
    torch.testing.assert_close(state.extend_with_block(0, torch.tensor(cells), "step")[1], reference, atol=1e-4, rtol=0)
    # the block left nothing behind: the causal path continues as if it never ran
    fresh = session(micro, ids.shape[1], weights="blt-d")
    torch.testing.assert_close(state.append(ids[0, s:].tolist()), fresh.append(ids[0].tolist())[s:], atol=1e-4, rtol=0)


def _run(bundle, config: DiffusionConfig, n: int = 48, prompt: bytes = b"The entropy of"):
    value = config.alpha if config.sampler == "confidence" else config.gamma
    return decode(bundle, f"blt-d-{config.block}@{config.sampler}={value!r}", encode_prompt(prompt), n,
                  Sampler(SamplingConfig(suppress_eos=True)))


@pytest.mark.parametrize("size", [4, 8, 16])
def test_one_byte_per_pass_at_the_extremes(micro, size):
    for config in (DiffusionConfig(size, "confidence", alpha=1.01), DiffusionConfig(size, "entropy", gamma=0.0)):
        g = _run(micro, config)
        assert len(g.output_ids) == 48 and MASK not in g.output_ids  # every block ends fully unmasked
        assert g.extras["decoder_passes"] == 48


def test_bytes_per_pass_grow_with_gamma_and_fall_with_alpha(micro):
    per_pass = lambda g: len(g.output_ids) / g.extras["decoder_passes"]  # noqa: E731
    by_gamma = [per_pass(_run(micro, DiffusionConfig(16, "entropy", gamma=g))) for g in (0.0, 0.5, 1.5, 4.0, 12.0, 100.0)]
    by_alpha = [per_pass(_run(micro, DiffusionConfig(16, "confidence", alpha=a))) for a in (0.0, 0.2, 0.5, 0.7, 0.9, 1.01)]
    assert by_gamma == sorted(by_gamma) and by_gamma[-1] > by_gamma[0]
    assert by_alpha == sorted(by_alpha, reverse=True) and by_alpha[0] > by_alpha[-1]
    assert by_alpha[0] == 16.0  # alpha 0: every cell is confident enough, one pass per block


def _chosen(probs, config, masked=None) -> list[int]:
    masked = torch.ones(probs.shape[0], dtype=torch.bool) if masked is None else torch.tensor(masked)
    return torch.nonzero(choose_cells(probs, masked, config)).flatten().tolist()


def test_sampler_rules_on_known_distributions():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.98, 0.01, 0.01], [0.34, 0.33, 0.33]])
    assert _chosen(probs, DiffusionConfig(sampler="confidence", alpha=0.7)) == [0, 2]
    assert _chosen(probs, DiffusionConfig(sampler="confidence", alpha=0.99)) == [2]
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)  # [0.325, 0.693, 0.112, 1.099]
    assert _chosen(probs, DiffusionConfig(sampler="entropy", gamma=0.5)) == [0, 2]
    assert _chosen(probs, DiffusionConfig(sampler="entropy", gamma=1.2)) == [0, 1, 2]
    assert _chosen(probs, DiffusionConfig(sampler="entropy", gamma=0.0)) == [2]
    # EB-Sampler: sum - max over the sorted prefix; {2, 0, 1}: 0.112 + 0.325 = 0.437 <= 0.5
    assert _chosen(probs, DiffusionConfig(sampler="eb", gamma=0.5)) == [0, 1, 2]
    assert float(entropy[2] + entropy[0] + entropy[1]) <= 1.2
    # committed cells are never chosen again, and the fallback picks among the masked ones only
    assert _chosen(probs, DiffusionConfig(sampler="confidence", alpha=0.99), [True, True, False, True]) == [0]
    assert _chosen(probs, DiffusionConfig(sampler="entropy", gamma=0.5), [False, True, False, True]) == [1]
    assert _chosen(probs, DiffusionConfig(sampler="entropy", gamma=1.2), [False, True, True, True]) == [1, 2]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.binary(min_size=1, max_size=30), size=st.sampled_from([4, 8, 16]), n=st.integers(1, 40),
       variant=st.integers(0, 3))
def test_dv_greedy_equals_blt_d_autoregressive_greedy(micro_variants, prompt, size, n, variant):
    bundle = micro_variants[variant]
    ids = encode_prompt(prompt)
    ref = decode(bundle, "blt", ids, n, weights="blt-d")
    dv = decode(bundle, f"blt-dv-{size}", ids, n)
    assert dv.output_ids == ref.output_ids
    assert dv.patch_lengths == ref.patch_lengths


@pytest.mark.parametrize("bad", [
    dict(block=5), dict(block=32), dict(sampler="topk"), dict(alpha=-0.1), dict(gamma=float("nan")), dict(gamma=-1.0),
])
def test_bad_settings_are_refused(bad):
    with pytest.raises(BltbenchError):
        DiffusionConfig(**bad).validate()
    with pytest.raises(BltbenchError, match="larger than this model"):
        DiffusionConfig(block=16).validate(trained_blocks=(4, 8))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5])
def test_bandwidth_per_byte_falls_as_blocks_grow(micro, alpha):
    from bltbench.decoding.methods import parse_method
    from bltbench.instrumentation.measure import measure

    per_byte, per_pass = [], []
    for size in (4, 8, 16):
        spec = parse_method(f"blt-d-{size}@confidence={alpha}")
        m = measure(spec, micro, encode_prompt(b"Bandwidth falls as"), 64, SamplingConfig(suppress_eos=True))
        per_byte.append(m.bandwidth.paper_gb / m.bytes_generated)
        per_pass.append(m.bytes_generated / m.nfe["decoder"])
    assert min(per_pass) > 1, "the premise: more than one byte per decoder pass"
    assert per_byte[0] > per_byte[1] > per_byte[2]
