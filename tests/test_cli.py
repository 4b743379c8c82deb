"""The command line: JSON output, and bad input ending in one error line and a non-zero exit."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
import subprocess
import sys

import pytest

from bltbench.model.checkpoint import save_bundle
from conftest import run_cli


def test_generate_json_fields(capsys):
    code, out, err = run_cli(capsys, "generate", "--model", "random:tiny", "--prompt", "Hello, bytes",
                             "--max-bytes", "24", "--json")
    assert code == 0, err
    record = json.loads(out)
    raw = bytes.fromhex(record["output_hex"])
    assert record["bytes_generated"] == len(raw) <= 24
    assert record["output"] == raw.decode("utf-8", errors="replace")
    assert sum(record["patches"]) == 1 + len(b"Hello, bytes") + len(raw)
    assert record["patches"][0] == 1
    # priced by the roofline on this machine's device profile, measured on first use and cached
    assert record["predicted_decode_s"] > 0 and record["dtype"] == "float32"
    assert record["predicted_ms_per_byte"] == pytest.approx(1e3 * record["predicted_decode_s"] / len(raw))
    assert record["roofline_fraction"] == pytest.approx(record["predicted_decode_s"] / record["decode_s"])
    assert list((Path(os.environ["BLTBENCH_CACHE"]) / "device-profiles").glob("*.json"))


def test_generate_stop_string_cuts_the_output(capsys):
    args = ["generate", "--model", "random:tiny", "--prompt", "Hello, bytes", "--max-bytes", "24", "--json"]
    code, out, err = run_cli(capsys, *args)
    raw = bytes.fromhex(json.loads(out)["output_hex"])
    needle = next(raw[i : i + 2] for i in range(1, len(raw) - 1) if raw[i : i + 2].isascii())
    code, out, err = run_cli(capsys, *args, "--stop", needle.decode("ascii"), "--stop", "never\x01")
    assert code == 0, err
    record = json.loads(out)
    assert bytes.fromhex(record["output_hex"]) == raw[: raw.find(needle)] and record["stopped_at_string"]


def test_generate_recompute_and_prompt_file_agree(capsys, tmp_path):
    prompt = tmp_path / "p.txt"
    prompt.write_bytes("Grüße\n".encode())
    outs = []
    for extra in ([], ["--recompute"]):
        code, out, err = run_cli(capsys, "generate", "--model", "random:tiny", "--prompt-file", str(prompt),
                                 "--max-bytes", "16", "--json", *extra)
        assert code == 0, err
        outs.append(json.loads(out)["output_hex"])
    assert outs[0] == outs[1]


def _mismatched(tmp_path, micro):
    folder = save_bundle(micro, tmp_path / "bad")
    manifest = json.loads((folder / "bltbench.json").read_text())
    manifest["config"]["n_layers_decoder"] = 3
    (folder / "bltbench.json").write_text(json.dumps(manifest))
    return str(folder)


def _corrupt(tmp_path, micro):
    folder = save_bundle(micro, tmp_path / "corrupt")
    (folder / "entropy.safetensors").write_bytes(b"not a tensor file")
    return str(folder)


def _non_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    return str(path)


def _empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    return str(path)


CASES = {
    "unknown preset": (lambda t, m: ["--model", "random:huge", "--prompt", "x"], "unknown preset"),
    "missing folder": (lambda t, m: ["--model", str(t / "nowhere"), "--prompt", "x"], "not found"),
    "mismatched checkpoint": (lambda t, m: ["--model", _mismatched(t, m), "--prompt", "x"], "does not match"),
    "corrupt checkpoint": (lambda t, m: ["--model", _corrupt(t, m), "--prompt", "x"], "corrupt"),
    "empty prompt": (lambda t, m: ["--model", "random:tiny", "--prompt", ""], "empty"),
    "empty prompt file": (lambda t, m: ["--model", "random:tiny", "--prompt-file", _empty_file(t)], "empty"),
    "non-UTF-8 prompt file": (lambda t, m: ["--model", "random:tiny", "--prompt-file", _non_utf8(t)], "UTF-8"),
    "negative budget": (lambda t, m: ["--model", "random:tiny", "--prompt", "x", "--max-bytes", "-1"], ">= 0"),
    "unknown method": (lambda t, m: ["--model", "random:tiny", "--prompt", "x", "--method", "blt-x"], "unknown method"),
    "bad top-p": (lambda t, m: ["--model", "random:tiny", "--prompt", "x", "--top-p", "1.5"], "top-p"),
    "not a number": (lambda t, m: ["--model", "random:tiny", "--prompt", "x", "--max-bytes", "many"], "max-bytes"),
    "empty stop string": (lambda t, m: ["--model", "random:tiny", "--prompt", "x", "--stop", ""], "stop string"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_error_line(capsys, tmp_path, micro, case):
    build, fragment = CASES[case]
    code, out, err = run_cli(capsys, "generate", *build(tmp_path, micro))
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


@pytest.mark.slow  # several seconds; make test-slow and CI run it
def test_console_script_reports_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfd")
    proc = subprocess.run(
        [sys.executable, "-m", "bltbench.cli.app", "generate", "--model", "random:tiny", "--prompt-file", str(bad)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: prompt file") and len(proc.stderr.strip().splitlines()) == 1


def test_bench_decode_runs_both_modes_side_by_side(capsys):
    code, out, err = run_cli(capsys, "bench", "decode", "--model", "random:tiny", "--lengths", "4,8",
                             "--prompt", "short prompt", "--modes", "eager,recompute")
    assert code == 0, err
    assert "eager / recompute" in out and "per-byte cost" in out and "threads" in out
    rows = [line for line in out.splitlines() if re.match(r"│\s+(4|8) │", line)]
    assert len(rows) == 2 and all("yes" in r for r in rows), out
    code, _, err = run_cli(capsys, "bench", "decode", "--modes", "eager,graphs")
    assert code == 2 and "unknown mode graphs" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # 5 s: a profiler pass over cached steps
def test_bench_decode_counts_operators_per_cached_step(capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        code, out, err = run_cli(capsys, "bench", "decode", "--model", "random:tiny", "--lengths", "4",
                                 "--prompt", "short prompt", "--modes", "eager", "--ops", "--threads", "1")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)  # the CLI ran in this process
    assert code == 0, err
    ops = re.search(r"aten operators per cached step, eager: (\d+)", out)
    assert ops and 100 < int(ops.group(1)) < 20000, out
    assert re.search(r"cpu,\s+float32, 1\s+threads", out), out


@pytest.mark.slow
def test_bench_decode_compiled_matches_eager(capsys):
    code, out, err = run_cli(capsys, "bench", "decode", "--model", "random:tiny", "--lengths", "8",
                             "--prompt", "short prompt", "--modes", "eager,compiled")
    assert code == 0, err
    rows = [line for line in out.splitlines() if re.match(r"│\s+8 │", line)]
    assert len(rows) == 1 and "yes" in rows[0], out


def test_bench_train_prints_batch_sizes_side_by_side(capsys, tmp_path):
    (tmp_path / "text.txt").write_text("a line of training text for the benchmark\n" * 40, encoding="utf-8")
    code, out, err = run_cli(capsys, "bench", "train", "--corpus", str(tmp_path), "--variant", "entropy",
                             "--batch-sizes", "1,2", "--seq-len", "32", "--steps", "1", "--warmup-steps", "0", "--ops")
    assert code == 0, err
    rows = [line for line in out.splitlines() if re.match(r"│\s+(1|2) │", line)]
    assert len(rows) == 2 and "1.00x" in rows[0], out


def test_generate_json_reports_meter_fields(capsys):
    code, out, err = run_cli(capsys, "generate", "--model", "random:tiny", "--prompt", "Speculate", "--method", "blt-s",
                             "--k", "4", "--max-bytes", "20", "--json", "--project", "blt-1b")
    assert code == 0, err
    r = json.loads(out)
    assert set(r["nfe"]) == {"entropy", "encoder", "global", "decoder"} and r["nfe"]["decoder"] >= 1
    assert r["prefill"]["decoder"] == 1
    assert r["bandwidth_gb_kv"] > r["bandwidth_gb_ext"] > 0 and r["bandwidth_gb"] > 0
    # the paper-proxy figures are 16-bit; bytes read are at the run's dtype (fp32 here: twice as many)
    assert r["dtype"] == "float32"
    assert r["bytes_read_per_byte"] == pytest.approx(2 * r["bandwidth_gb_ext"] * 1e9 / r["bytes_generated"])
    assert r["accepted_per_verify"] >= 1 and r["wall_s"] > 0
    assert r["projected"]["blt-1b"]["bandwidth_gb"] > 100 * r["bandwidth_gb"]


def test_compare_table_and_files(capsys, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("First prompt\nSecond prompt, a little longer\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "compare", "--model", "random:tiny", "--methods", "blt,blt-s-4", "--prompts",
                             str(prompts), "--max-bytes", "12", "--project", "blt-1b", "--csv", str(tmp_path / "t.csv"),
                             "--json", str(tmp_path / "t.json"))
    assert code == 0, err
    records = json.loads((tmp_path / "t.json").read_text())
    by_method = {r["method"]: r for r in records}
    assert set(by_method) == {"blt", "blt-s-4"}
    assert by_method["blt-s-4"]["exact_match"] == 1.0 and by_method["blt"]["reduction"] == pytest.approx(0.0)
    assert by_method["blt"]["nfe_per_byte_decoder"] == pytest.approx(1.0, abs=0.1)
    assert "blt-1b_gb_per_byte" in by_method["blt"]
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("method,")
    # measured, roofline-predicted and paper-proxy speedups over blt, from the one cost aggregation
    spec, base = by_method["blt-s-4"], by_method["blt"]
    assert base["measured_speedup"] == base["roofline_speedup"] == base["proxy_speedup"] == pytest.approx(1.0)
    assert spec["measured_speedup"] == pytest.approx(base["ms_per_byte"] / spec["ms_per_byte"])
    assert spec["roofline_speedup"] == pytest.approx(base["predicted_ms_per_byte"] / spec["predicted_ms_per_byte"])
    assert spec["proxy_speedup"] == pytest.approx(base["gb_per_byte"] / spec["gb_per_byte"])
    assert 0 < spec["roofline_fraction"] < 100


@pytest.mark.parametrize("args, fragment", [
    (["--methods", "blt,blt-q"], "unknown method"),
    (["--methods", "blt-s-0"], "draft length"),
    (["--project", "blt-99b"], "unknown pricing profile"),
])
def test_compare_bad_input(capsys, args, fragment):
    code, out, err = run_cli(capsys, "compare", "--model", "random:tiny", "--max-bytes", "4", *args)
    assert code == 2 and err.startswith("error: ") and fragment in err


def _no_blt_d(tmp_path, micro):
    from bltbench.model.bundle import ModelBundle

    bundle = ModelBundle(micro.config, micro.blt, micro.entropy, "m", "random")
    return str(save_bundle(bundle, tmp_path / "no_blt_d"))


DIFFUSION_CASES = {
    "block not supported": (lambda t, m: ["--method", "blt-d", "--block", "5"], "not supported"),
    "block larger than trained": (lambda t, m: ["--model", _trained_for_4(t, m), "--method", "blt-d", "--block", "8"],
                                  "larger than this model"),
    "alpha out of range": (lambda t, m: ["--method", "blt-d", "--alpha", "-0.5"], "alpha"),
    "gamma out of range": (lambda t, m: ["--method", "blt-d", "--sampler", "entropy", "--gamma", "-2"], "gamma"),
    "unknown sampler": (lambda t, m: ["--method", "blt-d", "--sampler", "greedy"], "unknown sampler"),
    "no BLT-D weights": (lambda t, m: ["--model", _no_blt_d(t, m), "--method", "blt-dv"], "no BLT-D weights"),
    "dv on BLT weights": (lambda t, m: ["--method", "blt-dv", "--weights", "blt"], "needs BLT-D weights"),
}


def _trained_for_4(tmp_path, micro):
    import dataclasses

    from bltbench.model.bundle import ModelBundle

    config = dataclasses.replace(micro.config, diffusion_blocks=(4,))
    return str(save_bundle(ModelBundle(config, micro.blt, micro.entropy, "m", "random", micro.blt_d), tmp_path / "b4"))


@pytest.mark.parametrize("case", sorted(DIFFUSION_CASES))
def test_diffusion_bad_input(capsys, tmp_path, micro, case):
    build, fragment = DIFFUSION_CASES[case]
    args = build(tmp_path, micro)
    if "--model" not in args:
        args = ["--model", "random:tiny", *args]
    code, out, err = run_cli(capsys, "generate", "--prompt", "x", "--max-bytes", "4", *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and fragment in err and len(err.strip().splitlines()) == 1, err


def test_blt_on_blt_d_weights_equals_blt_dv_greedy(capsys):
    outs = {}
    for method in (["--method", "blt", "--weights", "blt-d"], ["--method", "blt-dv", "--block", "4"]):
        code, out, err = run_cli(capsys, "generate", "--model", "random:tiny", "--prompt", "Verify", "--max-bytes", "20",
                                 "--json", *method)
        assert code == 0, err
        outs[method[1]] = json.loads(out)
    assert outs["blt"]["output_hex"] == outs["blt-dv"]["output_hex"]
    assert outs["blt-dv"]["bytes_per_decoder_pass"] > 0


def test_training_commands_reject_bad_input(capsys, tmp_path):
    cases = [
        (["train", "--variant", "gpt", "--corpus", str(tmp_path), "--steps", "1", "--out", str(tmp_path / "o")], "unknown variant"),
        (["train", "--variant", "blt", "--corpus", str(tmp_path), "--steps", "1", "--out", str(tmp_path / "o")], "needs --init"),
        (["train", "--variant", "entropy", "--corpus", str(tmp_path / "none"), "--steps", "1", "--out", str(tmp_path / "o")],
         "does not exist"),
        (["eval-bpb", "--model", "random:tiny", "--data", str(tmp_path / "missing.txt")], "does not exist"),
        (["eval-bpb", "--model", "random:tiny", "--data", __file__, "--weights", "gpt"], "unknown weights"),
        (["bench", "train", "--corpus", str(tmp_path), "--batch-sizes", "8,x"], "comma-separated integers"),
        (["bench", "train", "--corpus", str(tmp_path), "--batch-sizes", "0"], "all positive"),
        (["bench", "train", "--corpus", str(tmp_path), "--steps", "0"], "--steps must be positive"),
        (["bench", "train", "--corpus", str(tmp_path), "--variant", "gpt"], "unknown variant"),
    ]
    for args, fragment in cases:
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and err.startswith("error: ") and fragment in err, (args, err)


def test_eval_bpb_json(capsys, tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("one line\nanother line\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "eval-bpb", "--model", "random:tiny", "--data", str(data), "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["bytes"] == len("one line") + len("another line") and 6 < record["bpb"] < 12
    shares = record["confident_share"]
    assert list(shares) == ["0.5", "0.7", "0.9"] and shares["0.5"] >= shares["0.7"] >= shares["0.9"] >= 0


def test_bench_stream_interleaves_the_reference_and_quotes_medians(capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        code, out, err = run_cli(capsys, "bench", "stream", "--preset", "tiny", "--dtype", "float32", "--new-bytes",
                                 "4", "--repeats", "2", "--working-set-gb", "0.05", "--threads", "1")
    finally:
        torch.set_num_threads(threads)  # the CLI ran in this process
    assert code == 0, err
    between = re.search(r"stream ([\d.]+) GB/s \(median; measured between repeats: ([\d., ]+)\)", out)
    assert between, out
    references = [float(v) for v in between.group(2).split(", ")]
    assert len(references) == 3 and float(between.group(1)) == sorted(references)[1]
    row = re.search(r"eager: ([\d.]+) ms per byte \(median of ([\d., ]+)\), ([\d.]+) GB read per byte", out)
    assert row and len(row.group(2).split(", ")) == 2 and float(row.group(3)) > 0, out
    for args, fragment in [(["--repeats", "0"], "--repeats must be >= 1"),
                           (["--working-set-gb", "nan"], "--working-set-gb must be a positive number"),
                           (["--dtype", "int8"], "unknown dtype")]:
        code, _, err = run_cli(capsys, "bench", "stream", "--preset", "tiny", *args)
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, (args, err)
