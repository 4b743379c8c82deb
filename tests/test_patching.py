"""Entropy patching properties."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bltbench.model.config import PatchingConfig
from bltbench.model.patching import batch_patch_flags, patch_lengths, patch_starts

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
    # byte 2 always (the official monotonic mask starts True); then H_i - H_{i-1} > 1.5 only at i = 2
    assert patch_starts(mono, h, 6) == [True, True, True, True, False, False, False]
    both = PatchingConfig(threshold=2.0, max_patch_length=None, threshold_add=0.05)
    # byte 2 always, byte 3 never; then H_i - H_{i-1} > 0.05 and H_i > 2 at i = 4 (2.6 after 2.5)
    assert patch_starts(both, h, 6) == [True, True, True, False, False, True, False]


def test_patch_starts_equal_the_official_patchers():
    """Fixtures the official find_entropy_patch_start_ids produced (global, monotonic, and global and
    monotonic with threshold_add) on random entropies: per-row and batched rules give the same starts."""
    import json
    from pathlib import Path

    cases = json.loads((Path(__file__).parent / "fixtures" / "official_patch_starts.json").read_text())["cases"]
    assert {c["rule"] for c in cases} == {"global", "monotonic", "global_and_monotonic"}
    for case in cases:
        config = PatchingConfig(threshold=case["threshold"], max_patch_length=None,
                                monotonic=case["rule"] == "monotonic", threshold_add=case["threshold_add"])
        h = case["entropies"]
        flags = patch_starts(config, h, len(h))
        assert [p for p, f in enumerate(flags) if f] == case["starts"], case["rule"]
        assert batch_patch_flags(config, np.array([h])).tolist() == [flags]


def test_max_length_splits_and_static_mode():
    h = [0.0] * 20
    assert patch_lengths(PatchingConfig(threshold=5.0, max_patch_length=8), h, 20) == [1, 8, 8, 3]
    assert patch_lengths(PatchingConfig(mode="static", static_length=4, max_patch_length=None), h, 10) == [1, 4, 4, 1]


@settings(max_examples=200, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(0, 9)),
    data=st.data(),
    theta=st.sampled_from([0.5, 1.0, 1.5, 3.25]),
    max_len=st.one_of(st.none(), st.integers(1, 5)),
    monotonic=st.booleans(),
    static=st.booleans(),
    static_length=st.integers(1, 5),
    threshold_add=st.one_of(st.none(), st.sampled_from([0.0, 0.5])),
)
def test_batch_flags_equal_the_per_row_rule(shape, data, theta, max_len, monotonic, static, static_length, threshold_add):
    """The batched rule training uses is the per-row rule decoding uses, on every row and length (0 too);
    the values include entropies equal to the threshold, where a strict comparison must stay strict."""
    values = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.25, 5.0])
    rows = data.draw(st.lists(st.lists(values, min_size=shape[1], max_size=shape[1]), min_size=shape[0], max_size=shape[0]))
    config = PatchingConfig(
        mode="static" if static else "entropy", threshold=theta, monotonic=monotonic,
        max_patch_length=max_len, static_length=static_length, threshold_add=threshold_add,
    )
    flags = batch_patch_flags(config, np.array(rows, dtype=np.float32).reshape(shape))
    assert flags.shape == (shape[0], shape[1] + 1)
    for row, got in zip(rows, flags.tolist()):
        assert got == patch_starts(config, [float(np.float32(x)) for x in row], shape[1])


def test_batch_flags_compare_float32_entropies_as_the_per_row_rule_does():
    """An entropy stored as float32 just above a float64 threshold that rounds to it in float32."""
    theta = 1.1  # float32(1.1) > 1.1
    config = PatchingConfig(threshold=theta, max_patch_length=None)
    h = np.array([[0.0, np.float32(1.1), 0.0]], dtype=np.float32)
    expected = patch_starts(config, h[0].tolist(), 3)
    assert expected[2] is True
    assert batch_patch_flags(config, h).tolist() == [expected]
