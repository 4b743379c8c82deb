"""Documents split at EOS, as the official block-causal masks split them: where documents are cut
(against the official tokens_to_seqlen's output), the masks (xformers' block-diagonal causal, with and
without a local window), what the entropy model and the BLT then cannot see, BLT-D's training mask, the
official settings that turn it on, and cached decoding's refusal of a prompt it cannot split."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from bltbench.errors import BltbenchError
from bltbench.model.formats.official import config_from_official, official_attention
from bltbench.model.config import PatchingConfig
from bltbench.model.entropy import EntropyModel
from bltbench.model.ids import BOS, EOS, OFFSET
from bltbench.model.init import init_weights
from bltbench.model.layers import Rotary, causal_plan, eos_documents
from conftest import decode, make_bundle, micro_config

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "official_documents.json").read_text())


def _runs(docs: torch.Tensor) -> list[int]:
    """Run lengths of each row's document ids, rows one after another (the official seqlens' order)."""
    out = []
    for row in docs.tolist():
        count = 1
        for a, b in zip(row, row[1:]):
            if a == b:
                count += 1
            else:
                out.append(count)
                count = 1
        out.append(count)
    return out


def _block_causal(seqlens: list[int], length: int, window: int | None) -> torch.Tensor:
    """xformers' BlockDiagonalCausalMask.from_seqlens(seqlens) (.make_local_attention(window)) as a dense
    boolean mask per row: the rows are consecutive stretches of `length` tokens of the block sequence."""
    block = torch.cat([torch.full((n,), i) for i, n in enumerate(seqlens)])
    position = torch.arange(block.numel())
    keep = (block[:, None] == block[None, :]) & (position[:, None] >= position[None, :])
    if window is not None:
        keep &= position[:, None] - position[None, :] < window
    rows = block.numel() // length
    return torch.stack([keep[r * length:(r + 1) * length, r * length:(r + 1) * length] for r in range(rows)])


@pytest.mark.parametrize("case", range(len(FIXTURE["cases"])))
def test_documents_are_cut_where_the_official_code_cuts_them(case):
    c = FIXTURE["cases"][case]
    tokens = torch.tensor(c["tokens"])
    assert FIXTURE["eos_id"] == EOS
    assert _runs(eos_documents(tokens)) == c["seqlens"]  # an EOS ends (and belongs to) its document


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("case", range(len(FIXTURE["cases"])))
def test_document_masks_are_block_diagonal_causal(case, window):
    c = FIXTURE["cases"][case]
    tokens = torch.tensor(c["tokens"])
    length = tokens.shape[1]
    plan = causal_plan(Rotary(8, 10000.0), 0, length, window, "cpu", docs=eos_documents(tokens))
    assert torch.equal(plan.mask[:, 0], _block_causal(c["seqlens"], length, window))


def _ids(*docs: bytes) -> torch.Tensor:
    ids = [BOS]
    for i, d in enumerate(docs):
        ids += [b + OFFSET for b in d] + ([EOS] if i < len(docs) - 1 else [])
    return torch.tensor([ids])


def test_the_entropy_model_sees_only_its_document():
    """RoPE makes attention depend on offsets alone, so a document's logits in a packed row are those of
    the document run alone; without the split they are not."""
    config = dataclasses.replace(micro_config().entropy, eos_documents=True, window=None)
    model = EntropyModel(config).eval()
    init_weights(model, 5)
    first, second = b"the first document, rather long", b"and a second one"
    packed = _ids(first, second)
    alone = torch.tensor([[b + OFFSET for b in second]])
    with torch.no_grad():
        tail = model(packed)[0, -len(second):]
        assert torch.allclose(tail, model(alone)[0], atol=1e-5)
        model.config = dataclasses.replace(config, eos_documents=False)
        assert not torch.allclose(model(packed)[0, -len(second):], model(alone)[0], atol=1e-3)


def _static_bundle(**split):
    config = dataclasses.replace(micro_config(window=None), patching=PatchingConfig(mode="static", static_length=3), **split)
    return make_bundle(config, seed=7)


def _components(model, ids, starts, kv_from=None):
    """Encoder states, latents and decoder logits of the full forward, piece by piece (the decoder reads
    the latents of `kv_from`'s run when given, so only its own self-attention sees `ids`)."""
    from bltbench.model.blt import patch_ids_from_starts, patch_window

    patch_ids, dec_patch_ids = patch_ids_from_starts(starts)
    n = int(patch_ids.max()) + 1
    docs, patch_docs = model.documents(ids, patch_ids, n)
    h = model.local_encoder(model.embed(ids), docs=docs)
    latents = model.global_transformer(model.local_encoder.pool(h, patch_ids, n), docs=patch_docs)
    kv = model.local_decoder.latent_kv(latents if kv_from is None else kv_from)
    slot = torch.arange(n).repeat_interleave(model.config.cross_attn_k)
    mask = patch_window(dec_patch_ids[:, :, None], slot[None, None, :], None).unsqueeze(1)
    return h[0], latents, model.local_decoder(h, kv.__getitem__, mask, docs=docs)[0]


def test_the_blt_past_an_eos_does_not_see_the_document_before_it():
    """A changed first document leaves the next one's encoder states (past the hash n-grams' reach), the
    latents of the patches after the one holding the EOS, and the decoder's self-attention alone, once
    the local and global models split at EOS; without the split it reaches them all. (The decoder's first
    bytes after the EOS read the latent of the patch holding it, as in the official code, so the logits
    of the whole next document still depend on that one latent.)"""
    first, changed, second = b"a first document of some length", b"A FIRST DOCUMENT of some length", b"then the next one goes on"
    a, b = _ids(first, second), _ids(changed, second)
    starts = torch.zeros(1, a.shape[1] + 1, dtype=torch.bool)
    starts[0, ::3] = True  # static patches of 3: the EOS (position 32) ends patch 10
    eos = len(first) + 1
    for split, same in (({"eos_documents_local": True, "eos_documents_global": True}, True), ({}, False)):
        model = _static_bundle(**split).blt
        with torch.no_grad():
            ha, la, da = _components(model, a, starts)
            hb, lb, db = _components(model, b, starts, kv_from=la)
        assert torch.allclose(ha[eos + 1:], hb[eos + 1:], atol=1e-6) == same, split
        assert torch.allclose(la[0, 11:], lb[0, 11:], atol=1e-6) == same, split
        assert torch.allclose(da[eos + 1:], db[eos + 1:], atol=1e-6) == same, split  # same latents, own h


def test_global_documents_end_at_each_patch_holding_an_eos():
    model = _static_bundle(eos_documents_global=True).blt
    ids = torch.tensor([[BOS, 10, 11, EOS, 12, 13, 14, EOS, EOS, 15]])
    patch_ids = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 2, 3, 4]])
    _, patch_docs = model.documents(ids, patch_ids, 5)
    assert patch_docs.tolist() == [[0, 0, 1, 2, 3]]  # patch 1 holds the first EOS, 2 and 3 the next two


def test_blt_d_training_mask_keeps_cells_in_their_document():
    """A block's cells belong to the document its start continues: they see that document's bytes before
    the block and each other, never an earlier document; a (masked) EOS inside the block does not split
    it, since that would show where the hidden EOS is."""
    model = _static_bundle(eos_documents_local=True).blt_d
    docs = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])  # the EOS at 3 ends document 0
    valid = torch.ones(1, 4, dtype=torch.bool)
    blocks = torch.zeros(1, 4, dtype=torch.long)
    after = model._training_mask(8, torch.tensor([[5, 6, 7, 7]]), valid, blocks, torch.full((1, 4), 5), docs)[0, 0]
    assert after[8:, 4].all() and not after[8:, :4].any() and after[8:, 8:].all()  # document 1's byte 4 only
    across = model._training_mask(8, torch.tensor([[2, 3, 4, 5]]), valid, blocks, torch.full((1, 4), 2), docs)[0, 0]
    assert across[8:, :2].all() and not across[8:, 2:8].any() and across[8:, 8:].all()  # one block, EOS inside
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    assert not after[4:8, :4].any() and torch.equal(after[:4, :4], causal) and torch.equal(after[4:8, 4:8], causal)


def test_official_attention_settings_map_as_the_official_masks_do():
    assert official_attention("xformers", "local_block_causal", "x") == (True, True)
    assert official_attention(None, "block_causal", "x") == (False, True)  # released models: xformers
    assert official_attention("xformers", "causal", "x") == (False, False)
    assert official_attention("flex_attention", "local_block_causal", "x") == (False, False)  # plain causal
    with pytest.raises(BltbenchError, match="attn_impl: 'sdpa'"):
        official_attention("sdpa", "local_block_causal", "the local models'")
    from test_checkpoints import _official_params

    params = _official_params(micro_config())
    params["model"].update(attn_impl="xformers", attn_bias_type="block_causal")
    config = config_from_official(params, None)
    assert config.eos_documents_local and config.eos_documents_global and config.local_window == 24
    params["model"].update(attn_impl="flex_attention")
    config = config_from_official(params, None)
    assert not config.eos_documents_local and not config.eos_documents_global and config.local_window is None
    params["model"].update(attn_impl="xformers", attn_bias_type="local_block_causal")
    with pytest.raises(BltbenchError, match="local_block_causal"):
        config_from_official(params, None)


def _splitting_bundle(seed: int = 5):
    """Entropy patching with every component splitting at EOS (what official xformers checkpoints run)."""
    base = micro_config()
    config = dataclasses.replace(base, eos_documents_local=True, eos_documents_global=True,
                                 entropy=dataclasses.replace(base.entropy, eos_documents=True))
    return make_bundle(config, seed=seed)


PACKED = _ids(b"a first document, long enough to span patches", b"ok", b"and a third one that decoding continues")[0].tolist()


@torch.inference_mode()
@pytest.mark.parametrize("fixed", [False, True], ids=["eager", "fixed-shape steps"])
@pytest.mark.parametrize("chunking", ["whole", "bytes", "random"])
def test_cached_logits_past_prompted_eos_equal_the_full_forward(fixed, chunking):
    """The cache against the full forward (which splits documents as the official masks do) over a prompt
    of three documents, prefilled whole, byte by byte (one-position steps cross each EOS) or in random
    chunks: every position's logits agree, so decoding past a prompted EOS is what the official code runs."""
    import random

    from bltbench.decoding.blt import recompute_logits
    from conftest import context, session

    bundle = _splitting_bundle()
    full = recompute_logits(context(bundle), PACKED)
    rng = random.Random(3)
    sizes = {"whole": [len(PACKED)], "bytes": [1] * len(PACKED)}.get(chunking)
    if sizes is None:
        sizes, left = [], len(PACKED)
        while left:
            sizes.append(min(left, rng.randint(1, 7)))
            left -= sizes[-1]
    state = session(bundle, len(PACKED), fixed_steps=fixed)
    out, at = [], 0
    for size in sizes:
        out.append(state.append(PACKED[at : at + size]))
        at += size
    torch.testing.assert_close(torch.cat(out), full, atol=1e-4, rtol=0)
    # and the split matters: without it the same cache gives other logits after the first EOS
    c = bundle.config
    plain = make_bundle(dataclasses.replace(c, eos_documents_local=False, eos_documents_global=False,
                                            entropy=dataclasses.replace(c.entropy, eos_documents=False)), seed=5)
    unsplit = recompute_logits(context(plain), PACKED)
    assert (unsplit - full).abs().max() > 1e-2


@pytest.mark.parametrize("steps", ["eager", "fixed", pytest.param("compiled", marks=pytest.mark.slow)])
def test_every_method_decodes_past_a_prompted_eos_as_its_oracle(steps):
    """Greedy past a prompted EOS: cached BLT == recompute (the full forward), BLT-S == BLT for several
    k, BLT-DV == BLT-D's causal greedy."""
    bundle = _splitting_bundle()
    n = 24
    reference = decode(bundle, "blt", PACKED, n, recompute=True).output_ids
    assert len(reference) >= 8
    assert decode(bundle, "blt", PACKED, n, steps=steps).output_ids == reference
    for k in (1, 4, 8):
        assert decode(bundle, f"blt-s-{k}", PACKED, n, steps=steps).output_ids == reference, k
    causal = decode(bundle, "blt", PACKED, n, weights="blt-d", steps=steps).output_ids
    assert decode(bundle, "blt", PACKED, n, weights="blt-d", recompute=True).output_ids == causal
    for block in (4, 8):
        assert decode(bundle, f"blt-dv-{block}", PACKED, n, steps=steps).output_ids == causal, block
    # BLT-D has no recompute path: its fixed-shape steps (whole-buffer document masks) must agree with its
    # eager spans (documents from the ids), and its blocks are held to the training forward below
    blt_d = decode(bundle, "blt-d-4@confidence=0.5", PACKED, n, steps=steps).output_ids
    assert blt_d and blt_d == decode(bundle, "blt-d-4@confidence=0.5", PACKED, n, steps="eager").output_ids


@torch.inference_mode()
def test_a_blt_d_block_after_a_prompted_eos_equals_the_training_forward():
    """BLT-D's cached block pass after an EOS against its training forward with documents: the block's
    cells see only the document the block continues."""
    from bltbench.model.ids import MASK
    from bltbench.model.scoring import batch_patch_starts
    from conftest import session

    bundle = _splitting_bundle()
    model = bundle.blt_d
    ids = torch.tensor([PACKED])
    starts = batch_patch_starts(bundle.entropy, bundle.config.patching, ids)
    last_eos = max(i for i, x in enumerate(PACKED) if x == EOS)
    s = min(i for i in range(last_eos + 2, len(PACKED) - 8) if starts[0, i])  # a patch start the window reaches EOS from
    cells = [MASK] * 8
    cells[2] = 90
    reference = model.forward_blocks(ids, starts, torch.tensor([[s]]), torch.tensor([[cells]]))[1][0, 0]
    state = session(bundle, len(PACKED) + 8, weights="blt-d")
    state.append(PACKED[:s])
    torch.testing.assert_close(state.extend_with_block(0, torch.tensor(cells), "step")[1], reference, atol=1e-4, rtol=0)


def test_inspect_says_what_an_official_checkpoint_runs_with_and_can_run(tmp_path, capsys, micro):
    import json as json_module

    from conftest import run_cli
    from test_checkpoints import _official_params, _write_official

    _write_official(tmp_path / "blt", micro, tmp_path / "entropy_model")
    params = _official_params(micro.config)
    params["model"].update(attn_impl="xformers", attn_bias_type="block_causal")
    (tmp_path / "blt" / "params.json").write_text(json_module.dumps(params))
    code, out, err = run_cli(capsys, "inspect", str(tmp_path / "blt"), "--json")
    assert code == 0, err
    report = json_module.loads(out)
    assert report["format"] == "official" and report["components"] == ["blt", "entropy"]
    assert report["settings"]["eos_documents_global"] and report["settings"]["entropy"]["eos_documents"]
    assert report["settings"]["entropy"]["window"] == 512 and report["settings"]["d_global"] == micro.config.d_global
    assert report["methods"] == {"blt": "runs", "blt-s": "runs", "blt-d": "needs blt-d weights",
                                 "blt-dv": "needs blt-d weights"}
    assert report["parameters"]["global"] > 0
    # every setting in the files, with what it maps to: the params.json's and the entropy model's
    rows = {row["setting"]: row for row in report["file_settings"]}
    assert rows["model.dim_global"]["value"] == micro.config.d_global and rows["model.dim_global"]["kind"] == "mapped"
    assert rows["model.attn_bias_type"]["note"] == "eos_documents_global"
    assert rows["data.patcher_args.threshold"]["note"] == "patching.threshold"
    assert rows["entropy_model.sliding_window"]["kind"] == "irrelevant"  # the consolidated loader fixes 512
    assert rows["entropy_model.dim"]["kind"] == "mapped"
    assert all(row["kind"] in ("mapped", "checked", "irrelevant") for row in rows.values())
    code, out, _ = run_cli(capsys, "inspect", str(tmp_path / "blt"))
    assert code == 0 and "official format" in out and "eos_documents_local = true" in out
    assert "data.patcher_args.threshold = " in out and "irrelevant to inference" in out
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "nothing"))
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
