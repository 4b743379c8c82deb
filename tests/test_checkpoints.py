"""Loading every checkpoint format, and the one-line errors for broken ones."""

from __future__ import annotations

import json

import pytest
import torch

from bltbench.decoding.blt import recompute_logits
from bltbench.decoding.core import DecodeContext
from bltbench.errors import BltbenchError
from bltbench.model.checkpoint import load_model, random_bundle, save_bundle
from bltbench.model.ids import encode_prompt

IDS = encode_prompt(b"A checkpoint must give back the same logits.")


def logits(bundle):
    return recompute_logits(DecodeContext(bundle.blt, bundle.entropy, bundle.config.patching), IDS)


def test_random_spec_is_deterministic_and_seeded():
    a, b, c = load_model("random:tiny"), load_model("random:tiny:0"), load_model("random:tiny:5")
    assert torch.equal(logits(a), logits(b))
    assert not torch.allclose(logits(a), logits(c))


def test_bltbench_folder_roundtrip(tmp_path, micro):
    save_bundle(micro, tmp_path / "fp32", dtype=torch.float32)
    loaded = load_model(str(tmp_path / "fp32"))
    assert loaded.format == "bltbench" and loaded.config == micro.config
    assert torch.equal(logits(loaded), logits(micro))
    save_bundle(micro, tmp_path / "bf16")  # the default: 16-bit on disk, fp32 in memory
    assert torch.allclose(logits(load_model(str(tmp_path / "bf16"))), logits(micro), atol=0.2)


def _official_params(c) -> dict:
    return {
        "model": {
            "dim_global": c.d_global, "n_layers_global": c.n_layers_global, "n_heads_global": c.n_heads_global,
            "dim_local_encoder": c.d_local, "dim_local_decoder": c.d_local,
            "n_layers_local_encoder": c.n_layers_encoder, "n_layers_local_decoder": c.n_layers_decoder,
            "n_heads_local_encoder": c.n_heads_local, "n_heads_local_decoder": c.n_heads_local,
            "cross_attn_k": c.cross_attn_k, "cross_attn_nheads": c.n_cross_heads,
            "cross_attn_decoder": True, "cross_attn_all_layers_decoder": True,
            "encoder_hash_byte_group_size": list(c.hash_sizes), "encoder_hash_byte_group_vocab": c.hash_buckets,
            "encoder_hash_byte_group_nb_functions": 1, "local_attention_window_len": c.local_window,
            "rope_theta": c.rope_theta, "multiple_of": 256, "ffn_dim_multiplier": 1.0,
            # what the released checkpoints set where the official class defaults differ
            "vocab_size": 260, "attn_impl": "xformers", "attn_bias_type": "causal", "use_local_encoder_transformer": True,
            "cross_attn_encoder": True, "cross_attn_init_by_pooling": True, "downsampling_by_pooling": "max",
        },
        "data": {"patcher_args": {"patching_mode": "entropy", "threshold": c.patching.threshold,
                                  "max_patch_length": c.patching.max_patch_length},
                 "tokenizer_args": {"name": "blt"}},
    }


def _entropy_args(e, **extra) -> dict:
    return {"dim": e.dim, "n_layers": e.n_layers, "n_heads": e.n_heads, "sliding_window": e.window,
            "ffn_dim_multiplier": 1.0, "max_seqlen": 8192, "vocab_size": 260, "attn_impl": "xformers",
            "attn_bias_type": "local_block_causal", **extra}


def _write_official(folder, micro, entropy_folder, entropy_file="consolidated.pth", **entropy_extra):
    """An official checkpoint as the facebook/blt download lays it out: consolidated.pth + params.json,
    and an entropy model folder (inside it or beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": micro.blt.state_dict()}, folder / "consolidated.pth")
    (folder / "params.json").write_text(json.dumps(_official_params(micro.config)))
    path = entropy_folder / entropy_file
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": micro.entropy.state_dict()}, path)
    (entropy_folder / "params.json").write_text(json.dumps(
        {"entropy_model": _entropy_args(micro.config.entropy, **entropy_extra)}))


@pytest.fixture
def micro_512(micro):
    """The micro bundle with the entropy window the official loader always applies (512)."""
    import dataclasses

    from bltbench.model.entropy import EntropyModel

    config = dataclasses.replace(micro.config.entropy, window=512)
    entropy = EntropyModel(config)
    entropy.load_state_dict(micro.entropy.state_dict())
    return dataclasses.replace(micro, config=dataclasses.replace(micro.config, entropy=config), entropy=entropy.eval())


def test_official_folder_loads(tmp_path, micro, micro_512):
    _write_official(tmp_path, micro, tmp_path / "entropy_model")
    loaded = load_model(str(tmp_path))
    assert loaded.format == "official" and loaded.config.entropy.window == 512
    assert torch.equal(logits(loaded), logits(micro_512))


def test_official_layouts_load_the_same_weights(tmp_path, micro, micro_512):
    """The facebook/blt download (blt_1b/ beside entropy_model/), the patcher's preferred
    entropy_model/consolidated/consolidated.pth, and Hub folders written by the official save_pretrained
    (model.safetensors + config.json {"args": ...}, blt-1b/ beside blt-entropy/): the same logits."""
    from safetensors.torch import save_file

    expected = logits(micro_512)
    _write_official(tmp_path / "hf-weights" / "blt_1b", micro, tmp_path / "hf-weights" / "entropy_model")
    download = load_model(str(tmp_path / "hf-weights" / "blt_1b"))
    assert download.entropy is not None and torch.equal(logits(download), expected)
    _write_official(tmp_path / "nested", micro, tmp_path / "nested" / "entropy_model", "consolidated/consolidated.pth")
    assert torch.equal(logits(load_model(str(tmp_path / "nested"))), expected)
    hub, entropy_hub = tmp_path / "hub" / "blt-1b", tmp_path / "hub" / "blt-entropy"
    hub.mkdir(parents=True)
    entropy_hub.mkdir()
    params = _official_params(micro.config)
    save_file({k: v.contiguous() for k, v in micro.blt.state_dict().items()}, str(hub / "model.safetensors"))
    (hub / "config.json").write_text(json.dumps({"args": params["model"]}))
    (hub / "train_args.json").write_text(json.dumps(params))
    save_file({k: v.contiguous() for k, v in micro.entropy.state_dict().items()}, str(entropy_hub / "model.safetensors"))
    (entropy_hub / "config.json").write_text(json.dumps({"args": _entropy_args(micro.config.entropy)}))
    loaded = load_model(str(hub))
    assert loaded.format == "official" and loaded.entropy is not None
    assert loaded.config.entropy.window == micro.config.entropy.window  # from_pretrained reads every argument
    assert torch.equal(logits(loaded), logits(micro))


def test_official_entropy_params_are_read_as_the_official_loader_reads_them(tmp_path, micro, micro_512):
    """load_entropy_model reads dim, layers, heads and the FFN multiplier only: a rope_theta, norm_eps,
    multiple_of or window in params.json changes nothing there, so it changes nothing here."""
    _write_official(tmp_path, micro, tmp_path / "entropy_model", rope_theta=123.0, norm_eps=0.5, multiple_of=1024,
                    sliding_window=7)
    loaded = load_model(str(tmp_path))
    e = loaded.config.entropy
    assert (e.rope_theta, e.norm_eps, e.window, e.context_restart) == (10000.0, 1e-5, 512, 8192)
    assert torch.equal(logits(loaded), logits(micro_512))


def test_missing_component_is_named(tmp_path, micro):
    bundle = random_bundle("tiny")
    bundle.entropy = None
    save_bundle(bundle, tmp_path / "no_entropy")
    loaded = load_model(str(tmp_path / "no_entropy"))
    with pytest.raises(BltbenchError, match="no entropy model"):
        loaded.require_entropy()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "blt.safetensors").write_bytes(b"\x00garbage"), "corrupt or unreadable"),
        (lambda d: (d / "bltbench.json").write_text("{not json"), "cannot read"),
        (lambda d: _edit_config(d, d_local=48, n_heads_local=2), "does not match its config"),
        (lambda d: _edit_config(d, bogus_field=1), "unknown model config fields"),
        (lambda d: (d / "blt.safetensors").unlink(), "corrupt or unreadable"),
    ],
)
def test_broken_bundles_fail_with_one_clear_error(tmp_path, micro, damage, message):
    folder = save_bundle(micro, tmp_path / "m")
    damage(folder)
    with pytest.raises(BltbenchError, match=message) as info:
        load_model(str(folder))
    assert "\n" not in str(info.value)


def _edit_config(folder, **changes):
    manifest = json.loads((folder / "bltbench.json").read_text())
    manifest["config"].update(changes)
    (folder / "bltbench.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("spec, message", [
    ("random:nope", "unknown preset"),
    ("random:tiny:x", "bad seed"),
    ("/definitely/not/here", "not found"),
])
def test_bad_model_specs(spec, message):
    with pytest.raises(BltbenchError, match=message):
        load_model(spec)


def test_official_and_large_presets_are_only_dimensions():
    from bltbench.model.config import preset

    one_b, seven_b = preset("blt-1b"), preset("blt-7b")
    assert (one_b.d_global, one_b.n_layers_global, one_b.d_local, one_b.n_layers_decoder) == (2048, 25, 1024, 9)
    assert (seven_b.d_global, seven_b.d_patch, seven_b.hidden_ffn_global, seven_b.hidden_ffn_local) == (4096, 5120, 11008, 3584)
    tiny = preset("tiny")
    assert tiny.n_layers_encoder == 1 < tiny.n_layers_decoder and tiny.d_global == tiny.d_patch == 2 * tiny.d_local


def test_large_components_are_sharded_and_reassembled(tmp_path, monkeypatch):
    import bltbench.model.formats.native as native

    monkeypatch.setattr(native, "SHARD_BYTES", 1 << 20)
    bundle = random_bundle("tiny")
    folder = save_bundle(bundle, tmp_path / "sharded")
    shards = sorted(p.name for p in folder.glob("blt-0*.safetensors"))
    assert len(shards) > 3 and all((folder / s).stat().st_size < 2 << 20 for s in shards)
    loaded = load_model(str(folder))
    assert torch.allclose(logits(loaded), logits(bundle), atol=0.2)


@pytest.mark.parametrize("setting, fragment", [
    ({"use_rope": False}, "use_rope: false"),
    ({"n_heads_local_decoder": 1}, "n_heads_local_decoder: 1"),
    ({"cross_attn_init_by_pooling": False}, "cross_attn_init_by_pooling: false"),
    ({"downsampling_by_pooling": "avg"}, 'downsampling_by_pooling: "avg"'),
    ({"eos_id": 3}, "model.eos_id: 3"),
    ({"brand_new_setting": 1}, "model.brand_new_setting"),
])
def test_official_settings_bltbench_does_not_compute_are_refused_in_one_line(tmp_path, micro, capsys, setting, fragment):
    """Each of these changes the official code's logits; loading them anyway would run another model."""
    from conftest import run_cli

    _write_official(tmp_path, micro, tmp_path / "entropy_model")
    params = json.loads((tmp_path / "params.json").read_text())
    params["model"].update(setting)
    (tmp_path / "params.json").write_text(json.dumps(params))
    code, _, err = run_cli(capsys, "generate", "--model", str(tmp_path), "--prompt", "x", "--device-profile", "off")
    assert code == 2 and fragment in err and "does not implement" in err and len(err.strip().splitlines()) == 1, err
    for key in setting:
        params["model"].pop(key)
    params["model"].update({"n_heads_local_decoder": micro.config.n_heads_local, "cross_attn_init_by_pooling": True,
                            "use_rope": True, "downsampling_by_pooling": "max"})
    (tmp_path / "params.json").write_text(json.dumps(params))
    assert load_model(str(tmp_path)).format == "official"  # the values BLT uses load


@pytest.mark.slow  # several seconds; make test-slow and CI run it
def test_an_official_max_encoder_seq_length_bounds_every_request(tmp_path, micro, capsys):
    """The official local models' rotary tables end at max_encoder_seq_length: a request past it is one
    line saying the limit, not positions the official code could never have run."""
    from conftest import decode, run_cli

    folder = tmp_path / "official"
    _write_official(folder, micro, folder / "entropy_model")
    params = json.loads((folder / "params.json").read_text())
    params["model"]["max_encoder_seq_length"] = 64
    (folder / "params.json").write_text(json.dumps(params))
    loaded = load_model(str(folder))
    assert loaded.config.max_seqlen == 64
    assert len(decode(loaded, "blt", encode_prompt(b"x" * 31), 32).output_ids) <= 32  # 32 + 32 = 64: allowed
    code, out, err = run_cli(capsys, "generate", "--model", str(folder), "--prompt", "x" * 40, "--max-bytes", "24")
    assert code == 2 and "runs at most 64 positions" in err and "need 65" in err and len(err.strip().splitlines()) == 1
    assert load_model("random:tiny").config.max_seqlen is None  # bltbench's own presets: no table to run past



def test_cross_attention_windows_are_the_official_masks():
    """bltbench's patch window against masks the official create_patch_mask_from_ids produced (fixture):
    encoder (patches query the bytes of the last W patches) and decoder (bytes query the last W latents)."""
    from pathlib import Path

    from bltbench.model.blt import patch_window

    cases = json.loads((Path(__file__).parent / "fixtures" / "official_cross_masks.json").read_text())["cases"]
    assert len(cases) == 60 and {c["window"] for c in cases} == {None, 1, 2, 3, 512}
    for c in cases:
        ids, patches = torch.tensor(c["patch_ids"]), torch.arange(c["num_patches"])
        if c["patches_as_queries"]:
            mine = patch_window(patches[:, None], ids[None, :], c["window"])
        else:
            mine = patch_window(ids[:, None], patches[None, :], c["window"])
        assert mine.int().tolist() == c["mask"], c


def test_official_cross_attention_windows_load_and_are_honoured(tmp_path, micro):
    """An official folder with cross_attn_window_encoder/decoder loads with them, and they change the
    logits (the decoder reads several latents) in the full forward as in cached decoding."""
    from conftest import decode

    folder = tmp_path / "windows"
    _write_official(folder, micro, folder / "entropy_model")
    plain = load_model(str(folder))
    params = json.loads((folder / "params.json").read_text())
    params["model"].update(cross_attn_window_encoder=2, cross_attn_window_decoder=3)
    (folder / "params.json").write_text(json.dumps(params))
    windowed = load_model(str(folder))
    assert (windowed.config.cross_attn_window_encoder, windowed.config.cross_attn_window_decoder) == (2, 3)
    ids = encode_prompt(b"Windows let a byte read the latents of several patches before it.")
    full = recompute_logits(DecodeContext(windowed.blt, windowed.entropy, windowed.config.patching), ids)
    assert not torch.allclose(full, recompute_logits(DecodeContext(plain.blt, plain.entropy, plain.config.patching), ids), atol=1e-3)
    cached = decode(windowed, "blt", ids[:20], 30)
    assert cached.output_ids == decode(windowed, "blt", ids[:20], 30, recompute=True).output_ids
    params["model"]["cross_attn_window_decoder"] = 0
    (folder / "params.json").write_text(json.dumps(params))
    with pytest.raises(BltbenchError, match="cross_attn_window_decoder must be a positive integer"):
        load_model(str(folder))


_PEAK_ANON = r"""
import json, sys, threading, time
from bltbench.model.checkpoint import load_model

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
base = anon()
peak = [base]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anon())
        time.sleep(0.0005)
thread = threading.Thread(target=sample)
thread.start()
bundle = load_model(sys.argv[1], dtype="bf16")
done.set()
thread.join()
weights = sum(p.numel() * p.element_size() for p in bundle.blt.parameters())
print(json.dumps({"peak": peak[0] - base, "weights": weights}))
"""


@pytest.mark.slow  # builds and saves a 212 MB checkpoint twice; make test-slow and CI run it
@pytest.mark.parametrize("layout", ["official", "bltbench"])
def test_loading_into_bf16_never_holds_an_fp32_copy(tmp_path, layout):
    """A 212 MB fp32 checkpoint (53M parameters, hash tables 6 x 60000 x 128) loaded in bf16: the
    process's anonymous memory (what cannot be paged back to the file) grows by the bf16 model plus at
    most one fp32 tensor in flight, never by the fp32 state (which would add 2x the bf16 weights)."""
    import subprocess
    import sys

    bundle = random_bundle("tiny", hash_buckets=60000, weights=["blt"])
    largest = max(p.numel() * 4 for p in bundle.blt.parameters())
    if layout == "official":
        folder = tmp_path / "official"
        _write_official(folder, bundle, folder / "entropy_model")
    else:
        folder = save_bundle(bundle, tmp_path / "native", dtype=torch.float32)
    del bundle
    out = subprocess.run([sys.executable, "-c", _PEAK_ANON, str(folder)], capture_output=True, text=True, check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    fp32_state = 2 * measured["weights"]
    slack = 48 << 20  # allocator and interpreter noise
    assert measured["peak"] < measured["weights"] + largest + slack < measured["weights"] + fp32_state, measured


def test_an_entropy_model_named_explicitly_replaces_the_one_found(tmp_path, micro, micro_512, micro_variants, capsys):
    """--entropy-model: an official BLT folder with no entropy model near it patches with the one named
    (download layout, Hub layout or a bltbench bundle's), exactly as if it sat beside it."""
    from conftest import run_cli
    from safetensors.torch import save_file

    from bltbench.model.checkpoint import load_entropy_model

    _write_official(tmp_path / "weights" / "blt", micro, tmp_path / "elsewhere" / "entropy_model")
    assert load_model(str(tmp_path / "weights" / "blt")).entropy is None
    named = load_model(str(tmp_path / "weights" / "blt"), entropy_model=str(tmp_path / "elsewhere" / "entropy_model"))
    assert named.entropy_source.endswith("entropy_model") and named.config.entropy.window == 512
    assert torch.equal(logits(named), logits(micro_512))
    hub = tmp_path / "hub-entropy"
    hub.mkdir()
    save_file({k: v.contiguous() for k, v in micro.entropy.state_dict().items()}, str(hub / "model.safetensors"))
    (hub / "config.json").write_text(json.dumps({"args": _entropy_args(micro.config.entropy)}))
    assert torch.equal(logits(load_model(str(tmp_path / "weights" / "blt"), entropy_model=str(hub))), logits(micro))
    # a bltbench bundle patching with another bundle's entropy model: its patches follow that model
    other = micro_variants[0]
    theirs = save_bundle(other, tmp_path / "other", dtype=torch.float32)
    mine = save_bundle(micro, tmp_path / "mine", dtype=torch.float32)
    swapped = load_model(str(mine), entropy_model=str(theirs))
    for name, tensor in other.entropy.state_dict().items():
        assert torch.equal(swapped.entropy.state_dict()[name], tensor)
    expected = recompute_logits(DecodeContext(micro.blt, other.entropy, micro.config.patching), IDS)
    assert torch.equal(logits(swapped), expected) and not torch.equal(expected, logits(micro))
    config, module = load_entropy_model(str(hub))
    assert config.dim == micro.config.entropy.dim and config.context_restart == 8192
    assert all(torch.equal(module.state_dict()[k], v) for k, v in micro.entropy.state_dict().items())
    # every command with --model takes it; inspect says where the entropy model came from
    code, out, err = run_cli(capsys, "inspect", str(tmp_path / "weights" / "blt"), "--entropy-model", str(hub), "--json")
    assert code == 0, err
    assert json.loads(out)["entropy_model"] == str(hub) and "entropy" in json.loads(out)["components"]
    code, out, err = run_cli(capsys, "generate", "--model", str(tmp_path / "weights" / "blt"), "--entropy-model", str(hub),
                             "--prompt", "abc", "--max-bytes", "4", "--json", "--device-profile", "off")
    assert code == 0, err


@pytest.mark.parametrize("entropy, fragment", [
    ("missing-folder", "entropy model 'missing-folder' not found"),
    ("FILE", "is a file"),
    ("EMPTY", "is not an entropy model folder"),
    ("STATIC", "patches statically, so no entropy model would be used"),
])
def test_bad_entropy_models_are_one_error_line(tmp_path, micro, micro_variants, capsys, entropy, fragment):
    from conftest import run_cli

    model = save_bundle(micro_variants[3] if entropy == "STATIC" else micro, tmp_path / "m", dtype=torch.float32)
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "EMPTY").mkdir()
    target = {"FILE": str(tmp_path / "FILE"), "EMPTY": str(tmp_path / "EMPTY"), "STATIC": "random:tiny"}.get(entropy, entropy)
    code, out, err = run_cli(capsys, "generate", "--model", str(model), "--entropy-model", target, "--prompt", "a",
                             "--max-bytes", "2")
    assert code != 0 and fragment in err and len(err.strip().splitlines()) == 1, err
