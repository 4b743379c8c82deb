"""Entropy patching properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bltbench.model.config import PatchingConfig
from bltbench.model.patching import patch_lengths, patch_starts

entropies = st.lists(st.floats(0.0, 6.0, allow_nan=False), min_size=1, max_size=80)
max_lengths = st.one_of(st.none(), st.integers(1, 10))


@settings(max_examples=200, deadline=None)
@given(h=entropies, theta=st.floats(0.0, 6.0), max_len=max_lengths, monotonic=st.booleans())
def test_lengths_cover_the_sequence_within_the_maximum(h, theta, max_len, monotonic):
    config = PatchingConfig(threshold=theta, max_patch_length=max_len, monotonic=monotonic)
    lengths = patch_lengths(config, h, len(h))
    assert sum(lengths) == len(h)
    assert all(n >= 1 for n in lengths)
    assert lengths[0] == 1, "the BOS is a patch of its own"
    if max_len is not None:
        assert max(lengths) <= max_len
    starts = patch_starts(config, h, len(h))
    assert starts[0] and (len(h) == 1 or starts[1])
    assert len(starts) == len(h) + 1


@settings(max_examples=200, deadline=None)
@given(h=entropies, a=st.floats(0.0, 6.0), b=st.floats(0.0, 6.0), monotonic=st.booleans())
def test_raising_the_threshold_never_adds_boundaries(h, a, b, monotonic):
    low, high = min(a, b), max(a, b)
    s_low = patch_starts(PatchingConfig(threshold=low, max_patch_length=None, monotonic=monotonic), h, len(h))
    s_high = patch_starts(PatchingConfig(threshold=high, max_patch_length=None, monotonic=monotonic), h, len(h))
    assert all(lo or not hi for lo, hi in zip(s_low, s_high)), "every high-threshold boundary is a low one"


def test_global_and_monotonic_rules():
    h = [9.0, 1.0, 3.0, 2.5, 2.6, 0.1]
    glob = PatchingConfig(threshold=2.0, max_patch_length=None)
    # H_i > 2 at i = 2, 3, 4 -> bytes 3, 4, 5 open patches (plus positions 0 and 1)
    assert patch_starts(glob, h, 6) == [True, True, False, True, True, True, False]
    mono = PatchingConfig(threshold=1.5, max_patch_length=None, monotonic=True)
    # H_i - H_{i-1} > 1.5 only at i = 2 (3.0 - 1.0)
    assert patch_starts(mono, h, 6) == [True, True, False, True, False, False, False]


def test_max_length_splits_and_static_mode():
    h = [0.0] * 20
    assert patch_lengths(PatchingConfig(threshold=5.0, max_patch_length=8), h, 20) == [1, 8, 8, 3]
    assert patch_lengths(PatchingConfig(mode="static", static_length=4, max_patch_length=None), h, 10) == [1, 4, 4, 1]
