"""Hash n-gram ids against an independent computation of the spec's formula in Python integers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bltbench.errors import BltbenchError
from bltbench.model.config import BLTConfig
from bltbench.model.hashing import HASH_PRIMES, HashEmbeddings, ngram_buckets, power_matrix
from bltbench.model.ids import BOE

MASK64 = (1 << 64) - 1


def reference_hash(window: list[int], prime: int, buckets: int) -> int:
    """sum_i window[i] * prime^i (oldest first) in wrapping signed 64-bit, then a non-negative modulo."""
    acc = 0
    for i, token in enumerate(window):
        acc = (acc + token * pow(prime, i)) & MASK64  # exact integers, wrapped to 64 bits
    signed = acc - (1 << 64) if acc >= 1 << 63 else acc
    return signed % buckets  # Python's % is non-negative for a positive modulus


def reference_buckets(ids: list[int], n: int, prime: int, buckets: int) -> list[int]:
    padded = [0] * (n - 1) + ids
    return [reference_hash(padded[j : j + n], prime, buckets) for j in range(len(ids))]


SIZES = (3, 4, 5, 6, 7, 8)


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.integers(0, 259), min_size=1, max_size=40),
    buckets=st.sampled_from([2, 257, 4096, 500002]),
    n_functions=st.integers(1, 2),
)
def test_bucket_ids_match_reference(ids, buckets, n_functions):
    specs = [(n, HASH_PRIMES[f]) for f in range(n_functions) for n in SIZES]
    got = ngram_buckets(torch.tensor([ids]), power_matrix(specs, 8), buckets)[0]
    for col, (n, prime) in enumerate(specs):
        assert got[:, col].tolist() == reference_buckets(ids, n, prime, buckets)


def test_overflowing_ngrams_wrap_like_signed_64_bit():
    # 259 * p^7 alone exceeds 2^63 many times over: the sum must wrap, and may wrap negative.
    ids = [259] * 8 + [4, 255, 259, 7, 259, 259, 100, 259]
    got = ngram_buckets(torch.tensor([ids]), power_matrix([(8, HASH_PRIMES[0])], 8), 500002)[0, :, 0].tolist()
    assert got == reference_buckets(ids, 8, HASH_PRIMES[0], 500002)
    raw = sum(t * pow(HASH_PRIMES[0], i) for i, t in enumerate(ids[:8]))
    assert raw >= 1 << 63, "the test must exercise overflow"


def test_history_continues_the_sequence():
    ids = torch.randint(0, 260, (1, 30))
    powers = power_matrix([(n, HASH_PRIMES[0]) for n in SIZES], 8)
    whole = ngram_buckets(ids, powers, 4096)
    tail = ngram_buckets(ids[:, 20:], powers, 4096, history=ids[:, 13:20])
    assert torch.equal(whole[:, 20:], tail)


def test_embedding_sums_one_row_per_size():
    emb = HashEmbeddings(SIZES, 97, 1, 4)
    ids = torch.tensor([[1, 70, 80, 90]])
    expected = torch.zeros(1, 4, 4)
    for table, n in zip(emb, SIZES):
        rows = torch.tensor(reference_buckets(ids[0].tolist(), n, HASH_PRIMES[0], 97))
        expected += table.weight[rows]
    assert torch.allclose(emb(ids), expected)
    assert [name for name, _ in emb.named_parameters()] == [f"{i}.weight" for i in range(6)]


def test_all_eleven_hash_functions_equal_the_official_ones():
    """Fixtures the official byte_group_hash_function produced for hash functions 0-10 and n-grams 3-8
    (it pads with id 0, which is BOE here)."""
    import json
    from pathlib import Path

    fixture = json.loads((Path(__file__).parent / "fixtures" / "official_hashes.json").read_text())
    assert BOE == 0
    emb = HashEmbeddings(SIZES, fixture["buckets"], 11, 4)
    got = ngram_buckets(torch.tensor([fixture["ids"]]), emb.powers, fixture["buckets"])[0]
    for col, (n, prime) in enumerate(emb.specs):
        f = HASH_PRIMES.index(prime)
        assert got[:, col].tolist() == fixture["hashes"][f"{f}:{n}"], (f, n)
    with pytest.raises(BltbenchError, match="1 to 11"):
        BLTConfig(hash_functions=12).validate()
