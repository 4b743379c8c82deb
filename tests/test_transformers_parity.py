"""Parity with the transformers implementation on shared random weights.

The same weights, saved by `BltForCausalLM.save_pretrained`, are loaded through bltbench's converter.
Tolerance: logits agree to 1e-4 absolute (observed ~1e-5) on inputs shorter than the local window,
without EOS. transformers patches with its own entropy model (no max patch length, as its default).
Known transformers bug: its cache path is broken for BLT, so it runs with use_cache=False.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from bltbench.decoding.blt import recompute_logits  # noqa: E402
from bltbench.decoding.sampling import Sampler, SamplingConfig  # noqa: E402
from bltbench.model.checkpoint import load_model  # noqa: E402
from bltbench.model.ids import EOS  # noqa: E402
from conftest import context, decode, session  # noqa: E402

ATOL = 1e-4
THRESHOLD = 4.0


def _rope(theta: float) -> dict:
    return {"rope_type": "default", "rope_theta": theta}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    cfg = transformers.BltConfig(
        vocab_size=260,
        cross_attn_k=2,
        encoder_hash_byte_group_size=[3, 4, 5, 6, 7, 8],
        encoder_hash_byte_group_vocab=509,
        encoder_hash_byte_group_nb_functions=1,
        patching_threshold=THRESHOLD,
        max_patch_length=None,
        patch_size=4,
        local_attention_window_len=512,
        rope_parameters=_rope(500000.0),
        eos_token_id=EOS,
        patcher_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                            rope_parameters=_rope(10000.0), sliding_window=512),
        encoder_config=dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=96,
                            rope_parameters=_rope(500000.0)),
        decoder_config=dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=3, intermediate_size=96,
                            hidden_size_global=64, rope_parameters=_rope(500000.0)),
        global_config=dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=160,
                           rope_parameters=_rope(500000.0)),
    )
    torch.manual_seed(0)
    hf = transformers.BltForCausalLM(cfg).eval()
    with torch.no_grad():  # larger random weights than the default init, so every path matters
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.3)
    folder = tmp_path_factory.mktemp("hf_blt")
    hf.save_pretrained(folder)
    return hf, load_model(str(folder))


def _prompt(seed: int, n: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return [1] + torch.randint(4, 260, (n,), generator=g).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logits_match(pair, seed):
    hf, ours = pair
    ids = _prompt(seed, 80)
    with torch.no_grad():
        ref = hf(torch.tensor([ids]), use_cache=False).logits[0].float()
    got = recompute_logits(context(ours), ids)
    assert ours.config.patching.threshold == THRESHOLD
    with torch.inference_mode():
        state = session(ours, len(ids))
        cached = torch.cat([state.append(ids[:10])] + [state.append([x]) for x in ids[10:]])
    assert 4 < len(state.patches.lengths(len(ids))) < len(ids) - 4, "the entropy threshold must cut several patches"
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(cached, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("seed", [3, 4])
def test_greedy_continuation_matches(pair, seed):
    hf, ours = pair
    ids = _prompt(seed, 30)
    n = 40
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, use_cache=False,
                          pad_token_id=EOS)[0, len(ids):].tolist()
    if EOS in out:
        out = out[: out.index(EOS)]
    # transformers may emit the special ids BOE/BOS/PAD; compare without bltbench's suppression.
    ours_gen = decode(ours, "blt", ids, n, Sampler(SamplingConfig(suppress_special=False)))
    assert ours_gen.output_ids == out
    assert len(out) >= 10
