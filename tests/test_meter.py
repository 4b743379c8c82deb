"""The meter and the bandwidth model against hand counts."""

from __future__ import annotations

import dataclasses

import pytest

from bltbench.decoding.methods import MethodSpec
from bltbench.decoding.sampling import SamplingConfig
from bltbench.instrumentation.bandwidth import paper_gb, price
from bltbench.decoding.sampling import Sampler
from bltbench.instrumentation.measure import measure
from bltbench.instrumentation.meter import Meter
from bltbench.instrumentation.params import block_params, component_params, profile
from bltbench.model.ids import encode_prompt
from bltbench.model.incremental import Call
from conftest import decode

PROMPT = encode_prompt(b"Metering every call of every component.")


def starts_from_lengths(lengths: list[int]) -> list[int]:
    out, pos = [], 0
    for n in lengths:
        out.append(pos)
        pos += n
    return out


@pytest.mark.parametrize("n", [1, 17, 60])
def test_blt_counts_are_what_the_algorithm_implies(micro, n):
    m = measure(MethodSpec("blt"), micro, PROMPT, n, SamplingConfig(suppress_eos=True))
    assert m.bytes_generated == n
    assert m.nfe["decoder"] == m.nfe["encoder"] == n
    # The entropy model runs one position ahead: the prefill covers the whole prompt, each step the
    # byte it picked, and the last byte the budget allows is never run (nothing reads its entropy).
    assert m.nfe["entropy"] == n - 1
    # A patch completes when its last byte is run; generation runs positions L-1 .. L+n-2, so the
    # completed patches are those starting at L .. L+n-1 (the next one's start marks completion).
    L = len(PROMPT)
    starts = starts_from_lengths(m.generation.patch_lengths)
    assert m.nfe["global"] == sum(L <= s <= L + n - 1 for s in starts)
    assert m.prefill_nfe == {"entropy": 1, "encoder": 1, "global": 1, "decoder": 1}
    meter = Meter()
    decode(micro, "blt", PROMPT, n, Sampler(SamplingConfig(suppress_eos=True)), observer=meter)
    prefill = Meter.positions(meter.prefill())
    assert (prefill["entropy"], prefill["encoder"], prefill["decoder"]) == (L, L - 1, L - 1)


def test_bandwidth_equals_a_hand_count(micro):
    c = micro.config  # d_local 32, ffn 256; d_global 64, ffn 256; k 2; 6 hash tables; entropy 32 x 2
    p = component_params(c)
    local_block = 4 * 32 * 32 + 3 * 32 * 256 + 2 * 32
    cross = 4 * 32 * 32 + 2 * 32
    assert p.encoder == local_block + 32 * 64 + cross
    assert p.global_ == 2 * (4 * 64 * 64 + 3 * 64 * 256 + 2 * 64)
    assert p.decoder == 2 * (local_block + cross) + 64 * 64 + 32 + 32 * 260
    assert p.entropy == 2 * local_block + 32 + 32 * 260
    assert sum(x.numel() for n, x in micro.blt.named_parameters() if "hash" not in n and "tok_emb" not in n) == (
        p.encoder + p.global_ + p.decoder
    )
    assert sum(x.numel() for n, x in micro.entropy.named_parameters() if "tok_emb" not in n) == p.entropy

    calls = [
        Call("entropy", "step", 1, 10),
        Call("encoder", "step", 1, 10),
        Call("global", "step", 2, 3),
        Call("decoder", "step", 1, 10),
        Call("decoder", "verify", 3, 11),
    ]
    bw = price(calls, p)
    assert bw.paper_gb == pytest.approx(2 * (2 * p.decoder + 1 * (p.encoder + p.global_)) / 1e9)
    # per call: the encoder step without pooling; the global call with pooling (32*64 + cross) and the
    # latent projection into each decoder layer's keys/values (64*64 + 2 layers x (2*32*32 + 32))
    pooling, latent_kv = 32 * 64 + cross, 64 * 64 + 2 * (2 * 32 * 32 + 32)
    assert p.per_call == {"entropy": p.entropy, "encoder": p.encoder - pooling,
                          "global": p.global_ + pooling + latent_kv, "decoder": p.decoder - latent_kv}
    weights = p.entropy + (p.encoder - pooling) + (p.global_ + pooling + latent_kv) + 2 * (p.decoder - latent_kv)
    rows = 1 * 32 + 1 * (1 + 6) * 32  # one entropy embedding row; byte + six hash rows per encoder position
    assert bw.extended_gb == pytest.approx(2 * (weights + rows) / 1e9)
    kv = (
        2 * 2 * 11 * 32  # entropy: 2 layers, 10 cached + 1 new keys and values, width 32
        + 2 * 1 * 11 * 32  # encoder: 1 layer
        + 2 * 2 * 5 * 64  # global: 2 layers, 3 cached + 2 new patches, width 64
        + 2 * 2 * 11 * 32 + 2 * 2 * 1 * 2 * 32  # decoder self-attention + k=2 latent slots per position
        + 2 * 2 * 14 * 32 + 2 * 2 * 3 * 2 * 32
    )
    assert bw.kv_gb == pytest.approx(2 * (weights + rows + kv) / 1e9)


def test_paper_proxy_reproduces_the_paper_table():
    # The paper's 3B profile: P_dec = 158M, P_enc + P_glob = 2.857B (DESIGN.md section 8).
    assert paper_gb(512, 308, 158e6, 2.857e9) == pytest.approx(1920.99, abs=1.5)
    assert paper_gb(162, 32, 158e6, 2.857e9) == pytest.approx(233.87, abs=0.5)


def test_projection_uses_the_published_sizes():
    one_b = profile("blt-1b")
    assert one_b.global_ == pytest.approx(1.28e9, rel=0.01)  # published P_glob 1.28B
    assert one_b.decoder == pytest.approx(160e6, rel=0.03)  # published P_dec ~160M
    assert one_b.global_ == 25 * block_params(2048, 5632)
    three_b = profile("blt-3b")  # derived profile: within 1% of the paper's 3B figures
    assert three_b.decoder == pytest.approx(158e6, rel=0.01)
    assert three_b.encoder + three_b.global_ == pytest.approx(2.857e9, rel=0.01)
    seven_b = profile("blt-7b")
    assert 6.5e9 < seven_b.encoder + seven_b.global_ + seven_b.decoder < 7.5e9


def test_a_trace_priced_as_blt_1b(micro):
    m = measure(MethodSpec("blt"), micro, PROMPT, 24, SamplingConfig(suppress_eos=True), projections=("blt-1b",))
    one_b = profile("blt-1b")
    expected = paper_gb(m.nfe["decoder"], m.nfe["global"], one_b.decoder, one_b.encoder + one_b.global_)
    assert m.projected["blt-1b"].paper_gb == pytest.approx(expected)
    assert m.projected["blt-1b"].paper_gb > 1000 * m.bandwidth.paper_gb


def test_decoder_calls_count_the_latents_a_window_reads(micro_variants):
    """With a decoder window of 3, a step reads the k slots of up to 3 latents: the call says how many
    (1 while only one patch exists, growing to 3), and the KV figure prices those slots."""
    from bltbench.instrumentation.bandwidth import kv_params
    from bltbench.instrumentation.measure import own_params
    from bltbench.model.ids import encode_prompt
    from conftest import decode

    bundle = micro_variants[1]
    assert bundle.config.cross_attn_window_decoder == 3
    calls = []
    decode(bundle, "blt", encode_prompt(b"ab"), 40, observer=calls.append)
    steps = [c.latents for c in calls if c.component == "decoder" and c.role == "step"]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 3 and set(steps) <= {1, 2, 3}
    p = own_params(bundle)
    c = next(c for c in calls if c.component == "decoder" and c.latents == 3)
    one = dataclasses.replace(c, latents=1)
    extra = 2 * p.layers["decoder"] * c.positions * p.cross_attn_k * 2 * p.d_local
    assert kv_params(c, p) - kv_params(one, p) == extra


def test_drafts_run_ahead_count_the_latents_of_where_they_ran(micro_variants):
    """BLT-S drafts its next round before the host knows where it starts; once placed, each draft call
    says how many latents it read there, as a plain step at that point would."""
    from bltbench.model.ids import encode_prompt
    from conftest import decode

    calls = []
    g = decode(micro_variants[1], "blt-s-4", encode_prompt(b"ab"), 40, observer=calls.append)
    assert g.extras["rounds_run_ahead"] > 0
    drafts = [c.latents for c in calls if c.component == "decoder" and c.role == "draft"]
    assert drafts == sorted(drafts) and drafts[0] == 1 and drafts[-1] == 3
