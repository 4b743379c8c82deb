"""The decoding engine: host transfers per byte, round and pass; fixed-shape and compiled steps equal
eager ones; static caches refuse what they were not sized for and roll back cleanly."""

from __future__ import annotations

import math

import pytest
import torch

from bltbench.decoding.core import REGISTRY, DecodeContext, Output, lookup
from bltbench.decoding.sampling import Sampler, SamplingConfig
from bltbench.errors import BltbenchError
from bltbench.model.ids import encode_prompt
from bltbench.model.layers import CacheOverflow
from conftest import decode, draft_bytes, session

PROMPT = encode_prompt(b"Host transfers are what a GPU waits on.")
GREEDY = SamplingConfig(suppress_eos=True)
SAMPLED = SamplingConfig(temperature=1.0, suppress_eos=True)
TRANSFERS = ("item", "tolist", "__int__", "__float__", "__bool__", "__index__")


class TransferCounter:
    """Counts every way a tensor's value can reach Python while it is installed."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        for name in TRANSFERS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                self.count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def _transfers(monkeypatch, bundle, method: str, n: int, sampler: SamplingConfig = SamplingConfig(suppress_eos=True)):
    decode(bundle, method, PROMPT, 4)  # first calls build caches of fused weights; not decoding
    counter = TransferCounter(monkeypatch)
    g = decode(bundle, method, PROMPT, n, Sampler(sampler))
    monkeypatch.undo()
    prefill = 1 if bundle.config.patching.mode == "entropy" else 0  # the prompt's entropies, before any byte
    return g, counter.count - prefill


@pytest.mark.parametrize("variant", [0, 3])  # entropy patching, and static patching (no entropy model)
@pytest.mark.parametrize("sampling", [SamplingConfig(suppress_eos=True), SamplingConfig(temperature=0.8, suppress_eos=True)])
def test_blt_moves_one_value_set_per_byte_to_the_host(monkeypatch, micro_variants, variant, sampling):
    g, transfers = _transfers(monkeypatch, micro_variants[variant], "blt", 40, sampling)
    assert len(g.output_ids) == 40 and transfers == 40


def _transfers_per_round(monkeypatch, bundle, method: str, n: int, sampler: SamplingConfig):
    """(room before each round's commit, host transfers since the previous commit) and the output."""
    decode(bundle, method, PROMPT, 4)
    counter = TransferCounter(monkeypatch)
    rounds, seen = [], [0]
    original = Output.commit

    def commit(out, new):
        rounds.append((out.room, counter.count - seen[0]))
        seen[0] = counter.count
        return original(out, new)

    monkeypatch.setattr(Output, "commit", commit)
    g = decode(bundle, method, PROMPT, n, Sampler(sampler))
    monkeypatch.undo()
    return g, rounds, counter.count


@pytest.mark.parametrize("k,sampling", [(1, GREEDY), (4, GREEDY), (8, GREEDY), (4, SAMPLED)])
def test_blt_s_moves_one_per_round(monkeypatch, micro, k, sampling):
    """A round whose successor will draft k bytes whatever is accepted drafts that successor, and its
    entropies, before its own transfer: every such successor transfers once, on the acceptance."""
    g, rounds, total = _transfers_per_round(monkeypatch, micro, f"blt-s-{k}", 60, sampling)
    assert len(g.output_ids) == 60 and len(rounds) == g.extras["verify_rounds"]
    prefill = 1
    assert rounds[0][1] == prefill + 2  # the prompt's entropies; the first drafts' entropies; the acceptance
    steady = [i for i in range(1, len(rounds)) if rounds[i - 1][0] >= 2 * k + 2]
    assert len(steady) >= len(rounds) // 2
    assert all(rounds[i][1] == 1 for i in steady)
    assert all(t in (1, 2) for _, t in rounds[1:])  # near the budget's end: entropies, then the acceptance
    assert total - prefill == 2 * len(rounds) - g.extras["rounds_run_ahead"]


def test_blt_s_with_static_patching_moves_one_per_round(monkeypatch, micro_variants):
    """Static patches need no entropies, so only the acceptance travels, in every round."""
    g, rounds, _ = _transfers_per_round(monkeypatch, micro_variants[3], "blt-s-4", 40, GREEDY)
    assert len(g.output_ids) == 40 and [t for _, t in rounds] == [1] * g.extras["verify_rounds"]


@pytest.mark.parametrize("block", [4, 8, 16])
def test_blt_d_moves_one_per_pass_when_blocks_fill_cell_by_cell(monkeypatch, micro, block):
    """alpha = 1 commits one cell per pass, so the pass that fills a block is known in advance: the
    block's entropies travel with its last cells."""
    g, transfers = _transfers(monkeypatch, micro, f"blt-d-{block}@confidence=1.0", 40)
    assert len(g.output_ids) == 40 and g.extras["decoder_passes"] == 40
    assert transfers == g.extras["decoder_passes"]


@pytest.mark.parametrize("method", ["blt-d-4@confidence=0.5", "blt-d-8@entropy=1.5", "blt-d-16@eb=1.0",
                                    "blt-d-8@confidence=0"])
def test_blt_d_moves_one_per_pass_and_one_per_block_filled_at_once(monkeypatch, micro, method):
    """A pass that commits a block's last cells together could not have been foreseen: that block's
    entropies follow in a transfer of their own (alpha = 0 fills every block in one pass)."""
    g, transfers = _transfers(monkeypatch, micro, method, 40)
    block = int(method.split("-")[2].split("@")[0])
    blocks = math.ceil(40 / block)
    passes = g.extras["decoder_passes"]
    assert passes <= transfers <= passes + blocks - 1
    if method.endswith("confidence=0"):
        assert passes == blocks and transfers == passes + blocks - 1


@pytest.mark.parametrize("block", [4, 8])
def test_blt_dv_moves_at_most_two_per_round(monkeypatch, micro, block):
    g, transfers = _transfers(monkeypatch, micro, f"blt-dv-{block}", 40)
    rounds = g.extras["verify_rounds"]
    assert 2 * rounds - 1 <= transfers <= 2 * rounds  # a last one-byte round is a plain step: one


def test_the_counter_sees_a_transfer():
    """The counter has power: a decode that reads each byte with int() twice is caught."""
    mp = pytest.MonkeyPatch()
    counter = TransferCounter(mp)
    x = torch.tensor([3.0])
    int(x), float(x), x.tolist(), x.item(), bool(x)
    mp.undo()
    assert counter.count == 5


METHODS = ["blt", "blt-s-1", "blt-s-8", "blt-d-4@confidence=0.5", "blt-d-8@entropy=1.5", "blt-dv-4", "blt-dv-8"]


FIXED_CASES = [pytest.param(m, v, marks=[pytest.mark.slow] if v >= 2 else [])  # variants 2-3: make test-slow
               for m in ("blt", "blt-s-4", "blt-dv-4") for v in range(4)] + [
    ("blt-d-4@confidence=0.5", 0), ("blt-d-8@entropy=1.5", 2), ("blt-d-16@eb=1.0", 3)]


@pytest.mark.parametrize("method,variant", FIXED_CASES)
def test_fixed_shape_steps_equal_eager_steps(micro_variants, variant, method):
    """The steps compile traces (positions as device tensors, attention over the whole buffer under a
    mask) decode exactly what the eager steps decode."""
    bundle = micro_variants[variant]
    samplings = [SamplingConfig()] + ([SamplingConfig(temperature=0.9, top_p=0.9, seed=3)] if variant == 0 else [])
    for sampling in samplings:
        eager = decode(bundle, method, PROMPT, 32, Sampler(sampling))
        fixed = decode(bundle, method, PROMPT, 32, Sampler(sampling), steps="fixed")
        assert fixed.output_ids == eager.output_ids
        assert fixed.patch_lengths == eager.patch_lengths


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_compiled_greedy_equals_eager(micro, method):
    eager = decode(micro, method, PROMPT, 48)
    compiled = decode(micro, method, PROMPT, 48, steps="compiled")
    assert compiled.output_ids == eager.output_ids and len(eager.output_ids) > 0
    assert compiled.patch_lengths == eager.patch_lengths


@torch.inference_mode()
def test_a_request_longer_than_its_preallocation_is_one_clear_error(micro):
    state = session(micro, capacity=len(PROMPT))
    state.append(PROMPT[:-2])
    with pytest.raises(CacheOverflow, match="preallocated"):
        state.append(PROMPT[-2:] + [70])
    assert issubclass(CacheOverflow, BltbenchError)  # the CLI prints it as one line
    full = session(micro, capacity=len(PROMPT) + 1)
    full.append(PROMPT)
    with pytest.raises(CacheOverflow):
        draft_bytes(full, [70, 71])
    fixed = session(micro, capacity=len(PROMPT), fixed_steps=True)
    fixed.append(PROMPT)
    with pytest.raises(CacheOverflow):
        draft_bytes(fixed, [70])


@torch.inference_mode()
@pytest.mark.parametrize("fixed_steps", [False, True])
def test_fixed_step_rollback_hides_a_rejected_draft(micro, fixed_steps):
    """Static caches keep a rejected draft's entries past the rolled-back length; fixed-shape steps
    read the whole buffer, so only their masks keep those entries out."""
    ids = encode_prompt(b"Rollback under fixed shapes: stale keys stay in the buffer, masked.")
    state = session(micro, len(ids) + 12, fixed_steps=fixed_steps)
    state.append(ids[:30])
    state.append([200 + i for i in range(10)])  # a verify pass over a bad draft, then rejected
    draft_bytes(state, [90, 91, 92])
    state.truncate(30)
    resumed = torch.cat([state.append([x]) for x in ids[30:]])
    fresh = session(micro, len(ids)).append(ids)[30:]
    torch.testing.assert_close(resumed, fresh, atol=1e-4, rtol=0)


def test_the_registry_names_every_method_and_refuses_others():
    assert {"blt", "blt-recompute", "blt-s", "blt-d", "blt-dv"} <= set(REGISTRY)
    assert lookup("blt-s").weights == "blt" and lookup("blt-d").weights == "blt-d"
    assert not lookup("blt-d").lossless and lookup("blt-dv").lossless
    with pytest.raises(BltbenchError, match="choose from blt, blt-d, blt-dv, blt-recompute, blt-s"):
        lookup("blt-x")
    with pytest.raises(BltbenchError, match="step mode"):
        DecodeContext(None, None, None, steps="graphs")


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.mark.slow
def test_compiled_steps_compile_once_per_size_and_never_inside_a_decode(micro, monkeypatch):
    """A session compiles every step before its prefill (BLT-S and BLT-D also their entropy span), so
    nothing compiles inside a decode, whatever it meets (a first patch, a draft, a block), and a later
    decode of the same size compiles nothing at all; a larger request in between changes nothing."""
    at_session: list[int] = []
    opened = DecodeContext.session

    def session(ctx, *args, **kwargs):
        state = opened(ctx, *args, **kwargs)
        at_session.append(_graphs())
        return state

    monkeypatch.setattr(DecodeContext, "session", session)
    prompt = PROMPT[:20]  # 20 + 8 and 20 + 60 positions share one 256-position buffer; 300 needs 512
    for method in ("blt", "blt-s-4", "blt-d-4@confidence=1.0"):
        decode(micro, method, prompt, 8, steps="compiled")
        assert _graphs() == at_session[-1], method  # nothing compiled after the session was set up
    after_first = _graphs()
    for method in ("blt-s-4", "blt", "blt-d-4@confidence=1.0"):
        decode(micro, method, prompt, 60, steps="compiled")
    assert _graphs() == after_first
    decode(micro, "blt", prompt, 300, steps="compiled")
    after_larger = _graphs()
    decode(micro, "blt", prompt, 60, steps="compiled")
    assert _graphs() == after_larger


def test_a_stop_string_leaves_the_round_only_the_bytes_it_kept():
    from bltbench.decoding.core import DecodeRequest, Output
    from bltbench.decoding.stopping import StopStrings

    out = Output(DecodeRequest(encode_prompt(b"x"), 10, Sampler(SamplingConfig()), StopStrings(["b"])))
    out.commit(encode_prompt(b"abcd")[1:])
    assert out.ids == encode_prompt(b"a")[1:] and out.committed == [1] and out.stopped


@pytest.mark.parametrize("method", ["blt", "blt-s-4", "blt-d-4@confidence=0.5", "blt-dv-4"])
def test_a_prompt_prefilled_in_chunks_decodes_as_one_prefilled_whole(micro, monkeypatch, method):
    """Long prompts prefill in chunks (attention masks [chunk, length], not [T, T]); the caches they
    leave are the ones a single call leaves."""
    import bltbench.decoding.core as core

    prompt = encode_prompt(bytes(range(32, 127)) * 3)  # 286 positions: chunks of 64 end mid-patch
    whole = decode(micro, method, prompt, 24)
    monkeypatch.setattr(core, "PREFILL_CHUNK", 64)
    calls: list = []
    chunked = decode(micro, method, prompt, 24, observer=calls.append)
    assert chunked.output_ids == whole.output_ids and chunked.patch_lengths == whole.patch_lengths
    prefill = [c for c in calls if c.role == "prefill" and c.component == "encoder"]
    assert [c.positions for c in prefill] == [64, 64, 64, 64, len(prompt) - 1 - 256]


def test_a_request_too_large_for_memory_is_one_line_before_any_allocation(micro, monkeypatch):
    import bltbench.model.incremental as incremental

    monkeypatch.setattr(incremental, "available_bytes", lambda device: 50_000_000)
    with pytest.raises(CacheOverflow, match=r"needs .* GB of caches, but 0.1 GB is free"):
        decode(micro, "blt", encode_prompt(b"x" * 20_000), 8)
