"""Sampling rules: what survives temperature, top-k and top-p, and the special-id ban."""

from __future__ import annotations

import torch

from bltbench.decoding.sampling import Sampler, SamplingConfig
from bltbench.model.ids import BOE, BOS, EOS, PAD


def test_greedy_skips_banned_ids():
    logits = torch.full((260,), -5.0)
    logits[BOS], logits[10] = 9.0, 1.0
    assert Sampler(SamplingConfig()).sample(logits) == 10
    assert Sampler(SamplingConfig(suppress_special=False)).sample(logits) == BOS
    logits[EOS] = 8.0
    assert Sampler(SamplingConfig()).sample(logits) == EOS
    assert Sampler(SamplingConfig(suppress_eos=True)).sample(logits) == 10


def test_top_k_and_top_p_keep_the_right_sets():
    logits = torch.log(torch.tensor([0.0001] * 4 + [0.5, 0.3, 0.15, 0.05] + [1e-6] * 252))
    p = Sampler(SamplingConfig(temperature=1.0, top_k=2)).probs(logits)
    assert set(torch.nonzero(p).flatten().tolist()) == {4, 5}
    p = Sampler(SamplingConfig(temperature=1.0, top_p=0.75)).probs(logits)
    assert set(torch.nonzero(p).flatten().tolist()) == {4, 5}  # 0.5 + 0.3 is the smallest set above 0.75
    p = Sampler(SamplingConfig(temperature=1.0, top_p=0.85)).probs(logits)
    assert set(torch.nonzero(p).flatten().tolist()) == {4, 5, 6}
    assert torch.isclose(p.sum(), torch.tensor(1.0))
    assert p[BOE] == p[PAD] == 0


def test_temperature_sharpens_and_samples_follow_the_distribution():
    logits = torch.full((260,), -30.0)
    logits[4], logits[5] = 1.0, 0.0
    cold = Sampler(SamplingConfig(temperature=0.25)).probs(logits)
    warm = Sampler(SamplingConfig(temperature=1.0)).probs(logits)
    assert cold[4] > warm[4] > 0.5
    sampler = Sampler(SamplingConfig(temperature=1.0, seed=3))
    draws = [sampler.sample(logits) for _ in range(4000)]
    share = draws.count(4) / len(draws)
    expected = float(warm[4])  # e / (1 + e) = 0.731; 4000 draws give a std of 0.007
    assert abs(share - expected) < 0.035
