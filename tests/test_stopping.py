"""Stop strings inside decoding: every method stops where the unstopped output first shows the
string, keeps exactly the bytes before it, and spends fewer decoder calls than running to budget."""

from __future__ import annotations

import pytest

from bltbench.decoding.methods import generate, parse_method
from bltbench.decoding.sampling import Sampler, SamplingConfig
from bltbench.decoding.stopping import StopStrings
from bltbench.errors import BltbenchError
from bltbench.model.ids import OFFSET, encode_prompt

METHODS = ["blt", "blt-recompute", "blt-s-4", "blt-d-4@confidence=0.5", "blt-dv-4"]


def ids(text: bytes) -> list[int]:
    return [b + OFFSET for b in text]


def test_first_hit_is_the_earliest_start_among_strings_ending_in_new_bytes():
    stop = StopStrings(["cd", b"bcx", "\n"])
    assert stop.first_hit(ids(b"abcde"), 0) == 2
    assert stop.first_hit(ids(b"abcde"), 4) is None  # "cd" ended before the new bytes
    assert stop.first_hit(ids(b"abcd"), 3) == 2  # spans old and new bytes
    assert stop.first_hit(ids(b"ab\nbcx"), 3) == 3  # "\n" ended before new_from=3; "bcx" starts at 3
    assert stop.first_hit(ids(b"a\ncd"), 1) == 1  # both end in new bytes: the earlier start wins
    out = ids(b"xx\nyy")
    assert stop.cut(out, 0) and out == ids(b"xx")
    assert not StopStrings() and StopStrings().first_hit(ids(b"abc"), 0) is None


def test_empty_stop_string_is_an_error():
    with pytest.raises(BltbenchError):
        StopStrings([""])


def _decoder_calls(spec, bundle, prompt, budget, stop=()):
    calls = []
    gen = generate(spec, bundle, prompt, budget, Sampler(SamplingConfig()), observer=calls.append, stop=stop)
    return gen, sum(1 for c in calls if c.component == "decoder" and c.role != "prefill")


@pytest.mark.parametrize("name", METHODS)
def test_every_method_stops_at_the_first_occurrence(micro, name):
    spec = parse_method(name.replace("-recompute", ""), recompute=name.endswith("-recompute"))
    prompt = encode_prompt(b"stop strings: ")
    budget = 32
    full, full_calls = _decoder_calls(spec, micro, prompt, budget)
    assert len(full.output_ids) >= 20, "the fixture model should run to the budget"
    text = full.output_bytes
    needle = text[8:11]  # a 3-byte stop string that occurs in the unstopped output
    first = text.find(needle)
    stopped, stopped_calls = _decoder_calls(spec, micro, prompt, budget, stop=[needle])
    assert stopped.output_bytes == text[:first]
    assert stopped.stopped_at_string and not stopped.stopped_at_eos
    assert stopped_calls < full_calls
    assert len(stopped.patch_lengths) >= 1 and sum(stopped.patch_lengths) == len(prompt) + first


@pytest.mark.parametrize("name", METHODS)
def test_a_stop_string_that_never_occurs_changes_nothing(micro, name):
    spec = parse_method(name.replace("-recompute", ""), recompute=name.endswith("-recompute"))
    prompt = encode_prompt(b"never: ")
    full, calls = _decoder_calls(spec, micro, prompt, 20)
    never = bytes([0xFF, 0xFE, 0xFD, 0xFC])
    assert never not in full.output_bytes
    same, same_calls = _decoder_calls(spec, micro, prompt, 20, stop=[never])
    assert same.output_ids == full.output_ids and same_calls == calls and not same.stopped_at_string
