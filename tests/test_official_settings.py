"""Nothing in an official checkpoint's settings is silently ignored.

The walk: every field of a full official TrainArgs dump (produced by the official code, fixture) is
classified; every checked setting at a value bltbench does not compute is refused in one line naming
it; every mapped setting, changed, changes the config bltbench builds (so it is really read); and the
fields the official consolidated entropy loader does not read change nothing there either.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bltbench.errors import BltbenchError
from bltbench.model.formats.official import config_from_official
from bltbench.model.formats.official_settings import SECTIONS, SETTINGS, leaves, setting_of

FIXTURES = Path(__file__).parent / "fixtures" / "official"
DUMP = json.loads((FIXTURES / "official_train_args.json").read_text())["train_args"]
BASE = json.loads((FIXTURES / "defaults" / "blt" / "params.json").read_text())  # a runnable official params.json
ENTROPY = json.loads((FIXTURES / "defaults" / "entropy_model" / "params.json").read_text())["entropy_model"]


def test_every_field_of_a_full_official_dump_is_classified():
    paths = dict(leaves(DUMP))
    assert len(paths) > 250 and "model.dim_global" in paths and "entropy_model.sliding_window" in paths
    unclassified = [p for p in paths if setting_of(p) is None]
    assert not unclassified, unclassified
    # and the table names nothing the official classes lack (the tokenizer's keyword arguments are the
    # BLT tokenizer's, held in a field that is null in the dump)
    stale = [p for p in SETTINGS if p not in paths and not p.startswith("data.tokenizer_args.init_kwargs.")]
    assert not stale, stale
    for path, setting in SETTINGS.items():
        assert setting.kind in ("mapped", "checked", "irrelevant") and len(setting.note) > 3, path
    assert all(len(reason) > 10 for reason in SECTIONS.values())


def _section(args: dict, path: str) -> tuple[dict, str]:
    *parents, key = path.split(".")
    node = args
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    return node, key


def _set(path: str, value, entropy: bool = False) -> tuple[dict, dict]:
    args, entropy_args = copy.deepcopy(BASE), copy.deepcopy(ENTROPY)
    if path.startswith("entropy_model."):
        entropy_args[path.split(".", 1)[1]] = value
    else:
        node, key = _section(args, path)
        node[key] = value
    return args, entropy_args


# A value bltbench does not compute, for every checked setting (the base is the official defaults variant).
VIOLATIONS = {
    "model.head_dim": 7,
    "model.n_kv_heads": 1,
    "model.eos_id": 3,
    "model.vocab_size": 300,
    "model.dim_token": 20,
    "model.use_local_encoder_transformer": False,
    "model.share_encoder_decoder_emb": True,
    "model.dim_local_decoder": 64,
    "model.patching_mode": "",
    "model.encoder_enable_byte_ngrams": True,
    "model.cross_attn_encoder": False,
    "model.cross_attn_decoder": False,
    "model.cross_attn_all_layers_decoder": False,
    "model.cross_attn_all_layers_encoder": True,
    "model.cross_attn_use_flex_attention": False,
    "model.cross_attn_init_by_pooling": False,
    "model.use_rope": False,
    "model.downsampling_by_pooling": "avg",
    "model.n_heads_local_decoder": 1,
    "model.n_kv_heads_global": 2,
    "model.pm_size": 4,
    "entropy_model.head_dim": 4,
    "entropy_model.n_kv_heads": 1,
    "entropy_model.max_seqlen": 1024,
    "entropy_model.eos_id": 5,
    "entropy_model.vocab_size": 256,
    "data.patcher_args.patching_mode": "bpe",
    "data.patcher_args.patch_size": 3,
    "data.tokenizer_args.name": "bytes",
    "data.tokenizer_args.init_kwargs": "add_bos",
    "data.tokenizer_args.init_kwargs.add_bos": False,
    "data.tokenizer_args.init_kwargs.bpe_delim": True,
}
NEEDS = {  # a violation that shows only beside another value
    "model.share_encoder_decoder_emb": {"model.use_local_encoder_transformer": False},
    "model.dim_local_decoder": {"model.share_encoder_decoder_emb": False},
    "model.cross_attn_all_layers_encoder": {"model.n_layers_local_encoder": 2},
    "data.patcher_args.patch_size": {"data.patcher_args.patching_mode": "static"},
}


def test_every_checked_setting_has_a_violation_here():
    assert set(VIOLATIONS) == {p for p, s in SETTINGS.items() if s.kind == "checked"}


@pytest.mark.parametrize("path", sorted(VIOLATIONS))
def test_a_checked_setting_bltbench_does_not_compute_is_refused_naming_it(path):
    args, entropy_args = _set(path, VIOLATIONS[path])
    for other, value in NEEDS.get(path, {}).items():
        node, key = _section(args, other)
        node[key] = value
    as_written = path.startswith("entropy_model.")  # a Hub entropy config reads every argument
    with pytest.raises(BltbenchError, match=path.replace(".", r"\.")) as refused:
        config_from_official(args, entropy_args, as_written)
    assert "\n" not in str(refused.value)
    assert config_from_official(BASE, ENTROPY, as_written) is not None  # the base runs


# A changed value for every mapped setting; each must change the BLTConfig bltbench builds.
PERTURB = {
    "model.ffn_dim_multiplier": 2.0,
    "model.multiple_of": 256,
    "model.norm_eps": 1e-3,
    "model.rope_theta": 1234.0,
    "model.attn_impl": "flex_attention",
    "model.attn_bias_type": "causal",
    "model.dim_global": 64,
    "model.dim_local_encoder": 64,
    "model.n_layers_global": 3,
    "model.n_layers_local_decoder": 3,
    "model.n_layers_local_encoder": 2,
    "model.max_encoder_seq_length": 1000,
    "model.cross_attn_window_encoder": 2,
    "model.cross_attn_window_decoder": 3,
    "model.cross_attn_k": 4,
    "model.cross_attn_nheads": 4,
    "model.encoder_hash_byte_group_size": [3, 4],
    "model.encoder_hash_byte_group_vocab": 100,
    "model.encoder_hash_byte_group_nb_functions": 11,
    "model.n_heads_global": 2,
    "model.n_heads_local_encoder": 4,
    "model.local_attention_window_len": 64,
    "entropy_model.dim": 64,
    "entropy_model.n_layers": 3,
    "entropy_model.n_heads": 4,
    "entropy_model.ffn_dim_multiplier": 4.0,
    "entropy_model.multiple_of": 64,
    "entropy_model.norm_eps": 1e-3,
    "entropy_model.rope_theta": 500.0,
    "entropy_model.attn_impl": "flex_attention",
    "entropy_model.attn_bias_type": "causal",
    "entropy_model.sliding_window": 64,
    "data.patcher_args.threshold": 0.5,
    "data.patcher_args.threshold_add": 0.25,
    "data.patcher_args.max_patch_length": 3,
    "data.patcher_args.monotonicity": True,
}
ALONGSIDE = {  # a change that must keep the settings beside it consistent
    "model.dim_local_encoder": {"model.dim_local_decoder": 64},
    "model.n_heads_local_encoder": {"model.n_heads_local_decoder": 4},
}


def test_every_mapped_setting_has_a_change_here():
    assert set(PERTURB) == {p for p, s in SETTINGS.items() if s.kind == "mapped"}


@pytest.mark.parametrize("path", sorted(PERTURB))
def test_a_mapped_setting_is_read(path):
    as_written = path.startswith("entropy_model.")
    base = config_from_official(BASE, ENTROPY, as_written)
    args, entropy_args = _set(path, PERTURB[path])
    for other, value in ALONGSIDE.get(path, {}).items():
        node, key = _section(args, other)
        node[key] = value
    assert config_from_official(args, entropy_args, as_written) != base, path


@pytest.mark.parametrize("key", ["multiple_of", "norm_eps", "rope_theta", "attn_impl", "attn_bias_type", "sliding_window"])
def test_what_the_consolidated_entropy_loader_fixes_changes_nothing(key):
    """load_entropy_model reads dim, layers, heads and the FFN multiplier only (window 512, xformers
    local_block_causal, default RoPE and norms): the same change that a Hub config honours is inert here."""
    base = config_from_official(BASE, ENTROPY, False)
    args, entropy_args = _set(f"entropy_model.{key}", PERTURB[f"entropy_model.{key}"])
    assert config_from_official(args, entropy_args, False) == base
