"""Cached incremental decoding against the oracle: the full forward over the whole prefix.

Tolerance: cached and full-recompute logits agree to 1e-4 absolute in fp32 (observed ~1e-5);
the differences come only from summation order in attention over different key slices.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from bltbench.decoding.blt import recompute_logits
from bltbench.decoding.sampling import Sampler, SamplingConfig
from bltbench.model.checkpoint import random_bundle
from bltbench.model.ids import EOS, encode_prompt
from conftest import context, decode, make_bundle, micro_config, session

ATOL = 1e-4
TEXT = (
    b"Byte-level models read raw bytes. They avoid tokenizers, but they generate one byte per decoder "
    b"pass, so serving them is bound by memory bandwidth. Patches group predictable bytes together. "
)


def step_logits(bundle, ids, chunks):
    """Logits from feeding `ids` to the cache in the given chunk sizes."""
    state = session(bundle, len(ids))
    out, pos = [], 0
    for size in chunks:
        out.append(state.append(ids[pos : pos + size]))
        pos += size
    return torch.cat(out), state


@torch.inference_mode()
def test_cached_logits_equal_full_recompute_past_the_window(micro):
    ids = encode_prompt(TEXT[:130])  # window is 24, so keys slide out of the window many times
    full = recompute_logits(context(micro), ids)
    cached, state = step_logits(micro, ids, [5] + [1] * (len(ids) - 5))
    assert len(state.patches.lengths(state.length)) > 20, "the prompt must span many patches"
    assert len(ids) > 4 * micro.config.local_window
    torch.testing.assert_close(cached, full, atol=ATOL, rtol=0)


@torch.inference_mode()
@pytest.mark.parametrize("variant", range(4))
def test_any_chunking_gives_the_same_logits(micro_variants, variant):
    bundle = micro_variants[variant]
    ids = encode_prompt(TEXT[:90])
    full = recompute_logits(context(bundle), ids)
    rng = random.Random(variant)
    chunks, left = [], len(ids)
    while left:
        chunks.append(min(left, rng.randint(1, 9)))
        left -= chunks[-1]
    cached, _ = step_logits(bundle, ids, chunks)
    torch.testing.assert_close(cached, full, atol=ATOL, rtol=0)


@torch.inference_mode()
def test_tiny_preset_cached_equals_recompute_beyond_its_512_window():
    bundle = random_bundle("tiny", seed=3)
    ids = encode_prompt((TEXT * 4)[:560])
    full = recompute_logits(context(bundle), ids)
    cached, state = step_logits(bundle, ids, [300] + [1] * (len(ids) - 300))
    assert len(ids) > bundle.config.local_window and len(state.patches.lengths(state.length)) > 50
    torch.testing.assert_close(cached, full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", range(4))
def test_greedy_bytes_identical_to_recompute(micro_variants, variant):
    bundle = micro_variants[variant]
    for prompt in (b"Hello", TEXT[:40], "déjà vu — ünïcode".encode()):
        cached = decode(bundle, "blt", encode_prompt(prompt), 48)
        full = decode(bundle, "blt", encode_prompt(prompt), 48, recompute=True)
        assert cached.output_ids == full.output_ids
        assert cached.patch_lengths == full.patch_lengths
        assert sum(cached.patch_lengths) == len(cached.prompt_ids) + len(cached.output_ids)


def test_sampling_with_a_seed_is_reproducible_and_matches_recompute(micro):
    args = (micro, "blt", encode_prompt(b"Seeded"), 40)
    config = SamplingConfig(temperature=0.9, top_p=0.95, top_k=50, seed=7)
    a = decode(*args, Sampler(config))
    b = decode(*args, Sampler(config))
    c = decode(*args, Sampler(config), recompute=True)
    assert a.output_ids == b.output_ids == c.output_ids
    other = decode(*args, Sampler(SamplingConfig(temperature=0.9, top_p=0.95, top_k=50, seed=8)))
    assert other.output_ids != a.output_ids


@torch.inference_mode()
def test_rollback_leaves_no_stale_state(micro):
    ids = encode_prompt(TEXT[:70])
    wrong = [x ^ 0x55 if x >= 4 else x for x in ids[40:]]
    state = session(micro, len(ids))
    state.append(ids[:40])
    state.append(wrong[:17])  # a rejected draft: new patches, latents and cache entries
    state.truncate(40)
    resumed = torch.cat([state.append(ids[40:55]), state.append(ids[55:])])
    fresh, fresh_state = step_logits(micro, ids, [len(ids)])
    torch.testing.assert_close(resumed, fresh[40:], atol=ATOL, rtol=0)
    assert state.patches.lengths(state.length) == fresh_state.patches.lengths(state.length)
    assert state.n_latents == fresh_state.n_latents


def test_eos_and_budget_stop_generation():
    bundle = make_bundle(micro_config(), seed=9)
    prompt = encode_prompt(b"x")
    assert decode(bundle, "blt", prompt, 0).output_ids == []
    g = decode(bundle, "blt", prompt, 7, Sampler(SamplingConfig(suppress_eos=True)))
    assert len(g.output_ids) == 7 and not g.stopped_at_eos
    with torch.no_grad():  # all logits equal: greedy takes the first allowed id (BOE, BOS banned), EOS
        bundle.blt.local_decoder.output.weight.zero_()
    assert EOS == 2
    for recompute in (False, True):
        g = decode(bundle, "blt", prompt, 7, recompute=recompute)
        assert g.stopped_at_eos and g.output_ids == []


@torch.inference_mode()
def test_bfloat16_one_position_steps_match_the_full_pass():
    """16-bit one-position steps take the matrix-vector kernel on a CPU, the full pass the matrix-matrix
    one: the logits agree to bf16 precision, and the project helper equals linear in float64."""
    from bltbench.model.layers import project

    w = torch.randn(96, 64, dtype=torch.bfloat16)
    x = torch.randn(1, 1, 64, dtype=torch.bfloat16)
    exact = x.double() @ w.double().t()
    assert project(x, w).shape == (1, 1, 96)
    torch.testing.assert_close(project(x, w).double(), exact, atol=0.05, rtol=0.02)
    torch.testing.assert_close(project(x.expand(1, 3, 64), w).double(), exact.expand(1, 3, 96), atol=0.05, rtol=0.02)
    bundle = make_bundle(micro_config(window=None, max_patch=None), seed=5)
    # Static patches: a bf16 entropy a hair from the threshold would move a boundary between the two paths.
    config = dataclasses.replace(bundle.config, patching=dataclasses.replace(bundle.config.patching, mode="static"))
    half = dataclasses.replace(bundle, config=config, blt=bundle.blt.to(torch.bfloat16), entropy=None)
    ids = encode_prompt(TEXT[:60])
    full = recompute_logits(context(half), ids)
    mv_calls = []
    real_mv = torch.mv
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "mv", lambda w, v: mv_calls.append(w.shape) or real_mv(w, v))
        cached, _ = step_logits(half, ids, [10] + [1] * (len(ids) - 10))
    assert len(mv_calls) > 10 * (len(ids) - 10)  # every one-position step's projections took the mv kernel
    assert (cached - full).abs().max() < 0.05 * full.abs().max()
    assert (cached.argmax(-1) == full.argmax(-1)).float().mean() > 0.9


@torch.inference_mode()
def test_an_entropy_context_restart_is_a_fresh_start_and_cached_steps_keep_it():
    """The official patcher runs the entropy model on 8192-byte chunks, each with no context from the one
    before. With a restart every 16 positions (window 24, so the window alone would reach across), the
    entropies past each restart equal those of that chunk run alone; cached, fixed-shape and eager
    decoding equal the full recompute."""
    from bltbench.model.entropy import EntropyModel, entropy_nats

    bundle = make_bundle(micro_config(window=24), seed=11)
    config = dataclasses.replace(bundle.config.entropy, context_restart=16)
    entropy = EntropyModel(config)
    entropy.load_state_dict(bundle.entropy.state_dict())
    restarted = dataclasses.replace(bundle, config=dataclasses.replace(bundle.config, entropy=config),
                                    entropy=entropy.eval())
    ids = torch.tensor([encode_prompt(TEXT[:47])])
    whole = entropy_nats(entropy(ids)[0])
    for start in (0, 16, 32):
        alone = entropy_nats(bundle.entropy(ids[:, start : start + 16])[0])
        torch.testing.assert_close(whole[start : start + 16], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(whole[16:32], entropy_nats(bundle.entropy(ids)[0])[16:32], atol=1e-3)
    cache, stepped = entropy.new_cache(64), []
    for i in range(ids.shape[1]):
        stepped.append(entropy_nats(entropy(ids[:, i : i + 1], cache)[0]))
    torch.testing.assert_close(torch.cat(stepped), whole, atol=1e-5, rtol=1e-5)
    prompt = encode_prompt(TEXT[:20])
    sampler = lambda: Sampler(SamplingConfig(suppress_eos=True))  # noqa: E731
    reference = decode(restarted, "blt", prompt, 30, sampler(), recompute=True).output_ids
    for steps in ("eager", "fixed"):
        assert decode(restarted, "blt", prompt, 30, sampler(), steps=steps).output_ids == reference, steps
