"""The surface a user meets: version and help, shipped suites from any folder, run folders that cannot be
mixed or written twice at once, progress when output is piped, and bad input as one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bltbench.errors import BltbenchError
from bltbench.runner.store import RunStore
from bltbench.runner.suite import load_suite, resolve_suite, shipped_suites
from conftest import run_cli


def _one_error_line(code: int, out: str, err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


def test_version_and_short_help(capsys):
    from bltbench import __version__

    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"bltbench {__version__}"
    for args in (["-h"], ["run", "-h"], ["bench", "-h"]):
        code, out, _ = run_cli(capsys, *args)
        assert code == 0 and "Usage: " in out and "Options" in out, args


def test_shipped_suites_are_found_from_any_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert {"default", "smoke", "paper"} <= set(shipped_suites())
    for name in ("default", "smoke.yaml", "suites/default.yaml"):
        assert resolve_suite(name).resolve() == shipped_suites()[name.split("/")[-1].removesuffix(".yaml")].resolve()
    assert load_suite(Path("default")).name == "default"
    (tmp_path / "default").mkdir()  # a folder of that name is not a suite file
    with pytest.raises(BltbenchError, match="folder"):
        load_suite(Path("default"))
    code, out, _ = run_cli(capsys, "suites")
    assert code == 0 and all(name in out for name in ("default", "smoke", "paper"))
    code, out, err = run_cli(capsys, "run", "nosuch")
    _one_error_line(code, out, err, "shipped: default, paper, smoke")


SUITE = "name: s\nmodel: random:tiny\nmethods: [blt]\ntasks: [{name: arc-easy, limit: 1}]\n"


@pytest.mark.parametrize("case", ["binary", "empty name", "name with a slash", "model not a string", "a list",
                                  "a temperature that is a word"])
def test_bad_suite_files_are_one_error_line(capsys, tmp_path, case):
    path = tmp_path / "suite.yaml"
    text, fragment = {
        "binary": (b"\x00\xff\xfe\x89PNG", "not UTF-8"),
        "empty name": (SUITE.replace("name: s", "name:").encode(), "name must be a non-empty string"),
        "name with a slash": (SUITE.replace("name: s", "name: ../up").encode(), "letters, digits"),
        "model not a string": (SUITE.replace("model: random:tiny", "model: [tiny]").encode(), "model must be"),
        "a list": (b"- name: s\n", "YAML mapping"),
        "a temperature that is a word": ((SUITE + "sampling: {temperature: hot}\n").encode(),
                                         "sampling: temperature must be a finite number >= 0, got 'hot'"),
    }[case]
    path.write_bytes(text)
    code, out, err = run_cli(capsys, "run", str(path), "--out", str(tmp_path / "run"))
    _one_error_line(code, out, err, fragment)
    assert not (tmp_path / "run").exists()


def test_out_must_be_a_new_folder_or_a_run(capsys, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    code, out, err = run_cli(capsys, "run", str(suite), "--out", str(a_file))
    _one_error_line(code, out, err, "is a file")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"\xff\xd8")
    code, out, err = run_cli(capsys, "run", str(suite), "--out", str(other))
    _one_error_line(code, out, err, "holds no bltbench run")
    assert a_file.read_text() == "mine" and sorted(p.name for p in other.iterdir()) == ["holiday.jpg"]


def test_a_run_folder_is_written_by_one_sweep_at_a_time(capsys, tmp_path):
    folder = tmp_path / "run"
    holder = RunStore(folder, {"name": "s"}, resume=False)
    try:
        with pytest.raises(BltbenchError, match=f"pid {os.getpid()}"):
            RunStore(folder, {"name": "s"}, resume=True)
        suite = tmp_path / "suite.yaml"
        suite.write_text(SUITE)
        (folder / "suite.yaml").write_text(suite.read_text())
        code, out, err = run_cli(capsys, "run", str(suite), "--out", str(folder), "--resume")
        _one_error_line(code, out, err, f"another bltbench run (pid {os.getpid()})")
    finally:
        holder.close()
    import yaml

    RunStore(folder, yaml.safe_load(SUITE), resume=True).close()  # released: the next one may open it


def test_a_second_process_cannot_take_a_held_run_folder(tmp_path):
    folder = tmp_path / "run"
    holder = RunStore(folder, {"name": "s"}, resume=False)
    try:
        code = ("from pathlib import Path\nfrom bltbench.runner.store import RunStore\n"
                f"RunStore(Path({str(folder)!r}), {{'name': 's'}}, resume=True)\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and f"pid {os.getpid()}" in proc.stderr
    finally:
        holder.close()


def test_piped_progress_is_periodic_lines_with_an_eta():
    from bltbench.cli.app import ProgressLog

    now = [0.0]
    lines: list[str] = []
    log = ProgressLog("run s", lines.append, every_s=10.0)
    log.clock = lambda: now[0]
    log.start = log.last_line = 0.0
    log.plan(40)
    for i in range(40):
        now[0] = 3.0 * (i + 1)  # 3 s per sample
        log.advance(f"blt task {i}")
    log.finish()
    assert lines[0] == "run s: 40 samples to go through"
    progress = lines[1:-1]
    assert 10 <= len(progress) <= 13  # one line per ~10 s of a 120 s run, not one per sample
    assert progress[0] == "run s: 4/40 (10%), 0m12s elapsed, ETA 1m48s; last: blt task 3"
    assert lines[-1] == "run s: 40 done in 2m00s"


@pytest.mark.parametrize("args,fragment", [
    (["--temperature", "nan"], "temperature must be a finite number >= 0, got nan"),
    (["--temperature", "inf"], "temperature must be a finite number >= 0, got inf"),
    (["--top-p", "nan"], "top-p must be in (0, 1], got nan"),
    (["--method", "blt-s-8", "--k", "4"], "blt-s-8 already sets what the options change (blt-s-8)"),
    (["--method", "blt-d-16@entropy=1.5", "--block", "4"], "already sets what the options change (blt-d-16@entropy=1.5)"),
    (["--method", "blt-d-4@eb=1", "--gamma", "2"], "already sets what the options change (blt-d-4@eb=1)"),
    (["--method", "blt-d-4@eb=1", "--alpha", "0.5"], "--alpha applies to the confidence sampler"),
    (["--method", "blt-d", "--gamma", "2"], "--gamma applies to the entropy and eb samplers"),
    (["--method", "blt-d", "--sampler", "bogus"], "unknown sampler"),
    (["--method", "blt", "--k", "3"], "--k does not apply to blt"),
    (["--method", "blt-dv-4", "--alpha", "0.5"], "--alpha does not apply to blt-dv"),
])
def test_conflicting_method_options_and_non_finite_sampling_are_refused(capsys, args, fragment):
    code, out, err = run_cli(capsys, "generate", "--model", "random:tiny", "--prompt", "x", *args)
    _one_error_line(code, out, err, fragment)


def test_agreeing_method_options_are_applied(capsys):
    for args, label in ((["--method", "blt-s", "--k", "4"], "blt-s-4"), (["--method", "blt-s-4", "--k", "4"], "blt-s-4"),
                        (["--method", "blt-d", "--block", "4", "--alpha", "0.9"], "blt-d-4@confidence=0.9")):
        code, out, err = run_cli(capsys, "generate", "--model", "random:tiny", "--prompt", "x", "--max-bytes", "2",
                                 "--json", "--device-profile", "off", *args)
        assert code == 0 and json.loads(out)["method"] == label, err


def test_a_run_that_fails_before_writing_leaves_no_folder(capsys, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.replace("model: random:tiny", "model: random:huge"))
    data = os.environ.get("BLTBENCH_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    code, out, err = run_cli(capsys, "run", str(suite), "--out", str(tmp_path / "new" / "run"), "--data-dir", data)
    _one_error_line(code, out, err, "unknown preset")
    assert not (tmp_path / "new" / "run").exists()


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.update(d_local="wide"), "d_local must be an integer, got 'wide'"),
    (lambda c: c.update(hash_sizes="345"), "hash_sizes must be a list of integers"),
    (lambda c: c["patching"].update(threshold="high"), "patching.threshold must be a finite number"),
    (lambda c: c["patching"].update(monotonic=1), "patching.monotonic must be true or false"),
    (lambda c: c.update(local_window=1.5), "local_window must be an integer or null"),
    (lambda c: c.update(d_global=-4), "d_global must be at least 1"),
    (lambda c: c.update(entropy=[1, 2]), "entropy must be a mapping"),
])
def test_a_config_field_of_the_wrong_type_is_one_line(capsys, tmp_path, micro, edit, fragment):
    from bltbench.model.checkpoint import save_bundle

    folder = save_bundle(micro, tmp_path / "model")
    manifest = json.loads((folder / "bltbench.json").read_text())
    edit(manifest["config"])
    (folder / "bltbench.json").write_text(json.dumps(manifest))
    code, out, err = run_cli(capsys, "generate", "--model", str(folder), "--prompt", "x")
    _one_error_line(code, out, err, fragment)


def test_the_readme_python_example_runs(capsys):
    """The README's Python API example, exactly as written there."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Python API"):]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "'blt-s-8'" in out[1] and out[2].startswith("a prompt is a str")


def test_measure_takes_text_and_refuses_other_prompts(micro):
    from bltbench.decoding.methods import parse_method
    from bltbench.decoding.sampling import SamplingConfig
    from bltbench.instrumentation.measure import measure
    from bltbench.model.ids import encode_prompt

    as_text = measure(parse_method("blt"), micro, "Grüße", 8, SamplingConfig())
    as_ids = measure(parse_method("blt"), micro, encode_prompt("Grüße".encode()), 8, SamplingConfig())
    assert as_text.generation.output_ids == as_ids.generation.output_ids
    for bad in (3.5, [70, 71], "", [999, 3], [True, 70]):
        with pytest.raises(BltbenchError):
            measure(parse_method("blt"), micro, bad, 8, SamplingConfig())
