"""Sweeps: resume after a kill, suite validation, and the bandwidth regression check."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from bltbench.errors import BltbenchError
from bltbench.reporting.check import check
from bltbench.runner.suite import load_suite, parse_suite
from bltbench.runner.sweep import run_suite
from conftest import Killed, die_after, run_cli, stable_records

DATA = Path(os.environ.get("BLTBENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(not (DATA / "flores101").is_dir(), reason="needs the shared data directory")

SUITE = {
    "name": "t",
    "model": "random:tiny",
    "methods": ["blt", "blt-s-4"],
    "sampling": {"temperature": 0.0},
    "tasks": [{"name": "flores-fr-en", "limit": 1, "max_bytes": 6}, {"name": "diversity", "limit": 3, "max_bytes": 6}],
}



@pytest.mark.slow  # several seconds; make test-slow and CI run it
def test_a_killed_sweep_resumes_to_the_samestable_records(tmp_path):
    suite = parse_suite(SUITE, "t.yaml")
    whole = run_suite(suite, tmp_path / "whole", data_dir=str(DATA))
    assert whole.written == 8

    with pytest.raises(Killed):
        run_suite(suite, tmp_path / "cut", data_dir=str(DATA), on_sample=die_after(5))
    with open(tmp_path / "cut" / "records.jsonl", "ab") as f:
        f.write(b'{"method": "blt", "task": "flores')  # a write torn by the kill
    resumed = run_suite(suite, tmp_path / "cut", resume=True, data_dir=str(DATA))
    assert resumed.skipped == 5 and resumed.written == 3
    assert stable_records(tmp_path / "cut") == stable_records(tmp_path / "whole")
    again = run_suite(suite, tmp_path / "cut", resume=True, data_dir=str(DATA))
    assert again.written == 0 and len(stable_records(tmp_path / "cut")) == 8
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    spec_row = next(r for r in summary if r["method"] == "blt-s-4" and r["task"] == "flores-fr-en")
    assert spec_row["exact_match"] == 1.0 and spec_row["complete"]


def test_check_passes_on_its_own_run_and_fails_on_a_stricter_baseline(tmp_path):
    run_suite(parse_suite(SUITE, "t.yaml"), tmp_path / "run", data_dir=str(DATA))
    summary = tmp_path / "run" / "summary.json"
    assert check(tmp_path / "run", summary) == []
    rows = json.loads(summary.read_text())
    for r in rows:
        if r["method"] == "blt-s-4":
            r["gb_per_byte"] *= 0.9
    stricter = tmp_path / "stricter.json"
    stricter.write_text(json.dumps(rows))
    problems = check(tmp_path / "run", stricter)
    assert len(problems) == 1 and problems[0].startswith("blt-s-4: bandwidth per byte rose")
    assert check(tmp_path / "run", stricter, tolerance=0.2) == []
    for r in rows:
        r["exact_match"] = 0.5 if r["method"] == "blt-s-4" else r["exact_match"]
    lossy = tmp_path / "lossy_run.json"
    lossy.write_text(json.dumps(rows))
    assert any("exact match" in p for p in check(lossy, summary))


@pytest.mark.parametrize("content, fragment", [
    ("name: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "a suite is a YAML mapping"),
    (yaml.safe_dump({**SUITE, "colour": "red"}), "unknown fields colour"),
    (yaml.safe_dump({**SUITE, "tasks": [{"name": "squad"}]}), "unknown task"),
    (yaml.safe_dump({**SUITE, "methods": ["blt", "blt-x"]}), "unknown method"),
    (yaml.safe_dump({**SUITE, "tasks": [{"name": "mbpp", "limit": 0}]}), "positive integer"),
    (yaml.safe_dump({**SUITE, "tasks": [{"name": "mbpp", "shots": 3}]}), "unknown fields shots"),
    (yaml.safe_dump({k: v for k, v in SUITE.items() if k != "model"}), "missing field 'model'"),
])
def test_bad_suites_fail_with_one_line_and_write_nothing(capsys, tmp_path, content, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    code, out, err = run_cli(capsys, "run", str(path), "--out", str(tmp_path / "out"))
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_missing_data_fails_before_writing(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    empty = tmp_path / "empty"
    empty.mkdir()
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    code, out, err = run_cli(capsys, "run", str(path), "--out", str(tmp_path / "out"), "--data-dir", str(empty))
    assert code == 2 and "not found" in err and "BLTBENCH_DATA" in err
    assert not (tmp_path / "out").exists()


def test_shipped_suites_parse():
    root = Path(__file__).resolve().parents[1] / "suites"
    for path in root.glob("*.yaml"):
        load_suite(path)
    with pytest.raises(BltbenchError, match="repeat"):
        parse_suite({**SUITE, "methods": ["blt", "blt"]}, "x")


def test_check_command_exit_codes(capsys, tmp_path):
    baseline = Path(__file__).resolve().parents[1] / "suites" / "baselines" / "smoke.json"
    rows = json.loads(baseline.read_text())
    (tmp_path / "summary.json").write_text(json.dumps(rows))
    code, out, err = run_cli(capsys, "check", str(tmp_path), "--baseline", str(baseline))
    assert code == 0 and "check passed" in out
    for r in rows:
        r["gb_per_byte"] *= 1.5
    (tmp_path / "summary.json").write_text(json.dumps(rows))
    code, out, err = run_cli(capsys, "check", str(tmp_path), "--baseline", str(baseline))
    assert code == 1 and "check failed: blt:" in err
    code, out, err = run_cli(capsys, "check", str(tmp_path / "nope"), "--baseline", str(baseline))
    assert code == 2 and err.startswith("error: cannot read run summary")


def test_sweeps_stop_inside_decoding_at_the_task_stop_strings(tmp_path, monkeypatch):
    from bltbench.suites.tasks import registry
    from bltbench.suites.tasks.base import GenerationTask, Sample

    class Echo(GenerationTask):
        name, metric, max_bytes = "echo", "n", 24

        def samples(self, data, limit=None):
            return [Sample("0", "stop here: ")]

        def score(self, sample, completion):
            return {"n": float(len(completion))}

    def sweep(folder: str, stop: tuple[str, ...]) -> dict:
        monkeypatch.setitem(registry.TASKS, "echo", lambda: type("E", (Echo,), {"stop": stop})())
        suite = parse_suite({"name": "s", "model": "random:tiny", "methods": ["blt"], "tasks": [{"name": "echo"}]}, "s.yaml")
        run_suite(suite, tmp_path / folder, data_dir=str(DATA))
        return json.loads((tmp_path / folder / "records.jsonl").read_text().splitlines()[0])

    full = sweep("full", ())
    assert full["bytes_generated"] == 24 and not full["stopped_at_string"]
    out = bytes.fromhex(full["output_hex"])
    needle = next(out[i : i + 2] for i in range(1, len(out) - 1) if out[i : i + 2].isascii())  # seeded: always found
    stopped = sweep("stopped", (needle.decode("ascii"),))
    assert stopped["stopped_at_string"] and stopped["bytes_generated"] == out.find(needle)
    assert bytes.fromhex(stopped["output_hex"]) == out[: out.find(needle)]
    assert stopped["nfe"]["decoder"] < full["nfe"]["decoder"]


@pytest.mark.slow  # 11 s: measures a device profile at one thread
def test_timing_repeats_interleave_methods_fix_threads_and_record_the_environment(tmp_path, monkeypatch):
    """Also: the report says where the run was timed, and warns when the load exceeded the threads."""
    import torch

    import bltbench.runner.worker as sweep_module

    order, real = [], sweep_module.measure

    def recording(spec, *args, **kwargs):
        order.append((spec.label, torch.get_num_threads()))
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "measure", recording)
    threads = torch.get_num_threads()
    suite = parse_suite({**SUITE, "tasks": [SUITE["tasks"][0]], "timing": {"repeats": 3, "threads": 1}}, "t.yaml")
    run_suite(suite, tmp_path / "run", data_dir=str(DATA))
    assert order == [("blt", 1), ("blt-s-4", 1)] * 3  # one sample: A B A B A B, at one thread
    assert torch.get_num_threads() == threads  # restored after the run
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert [r["method"] for r in records] == ["blt", "blt-s-4"]
    assert all(r["timing_repeats"] == 3 and r["threads"] == 1 and r["decode_s"] > 0 for r in records)
    env = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert len(env) == 1 and env[0]["threads"] == 1 and env[0]["torch"] == torch.__version__
    assert env[0]["dtype"] == "float32" and "load_end" in env[0]
    assert env[0]["device_profile"]["threads"] == 1 and env[0]["device_profile"]["dtype"] == "float32"  # at the run's threads
    for bad, fragment in [({"repeats": 0}, "timing.repeats must be a positive integer"),
                          ({"threads": "two"}, "timing.threads must be a positive integer"),
                          ({"warmup": 1}, "unknown timing fields warmup"), ([3], "timing must be a mapping")]:
        with pytest.raises(BltbenchError, match=fragment):
            parse_suite({**SUITE, "timing": bad}, "t.yaml")
    _report_warns_when_the_load_exceeded_the_threads(tmp_path)


def _report_warns_when_the_load_exceeded_the_threads(tmp_path):
    from bltbench.reporting.report import timing_warnings, write_report
    from bltbench.reporting.rundata import load_run

    path = tmp_path / "run" / "environment.json"
    env = json.loads(path.read_text())
    quiet = {**env[0], "threads": 1, "load_start": 0.9, "load_end": 1.2}
    path.write_text(json.dumps([quiet]))
    assert not any(w.startswith("Warning") for w in timing_warnings(load_run(tmp_path / "run")))
    path.write_text(json.dumps([quiet, {**quiet, "load_end": 2.7}]))  # a resumed session beside a busy process
    warnings = timing_warnings(load_run(tmp_path / "run"))
    assert sum(w.startswith("Warning: the machine's load exceeded the run's 1 thread") for w in warnings) == 1
    html = next(p for p in write_report(tmp_path / "run", ("html",), tmp_path / "rep") if p.suffix == ".html")
    section = html.read_text().split('<section id="wallclock">')[1].split("</section>")[0]
    assert '<p class="warning">Warning: the machine' in section
    path.unlink()
    assert timing_warnings(load_run(tmp_path / "run"))[0].startswith("No environment was recorded")


def test_check_guards_decode_time_only_against_the_same_device_profile(tmp_path):
    """--decode-tolerance: a slower decode fails it; a baseline from another device profile, or none, is
    said to be incomparable; bad tolerances are errors."""
    profile = {"device": "cpu", "device_name": "X", "dtype": "float32", "threads": 1, "model": "abc"}

    def run_folder(name: str, ms: float, profile: dict | None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"method": "blt", "task": "t", "kind": "generation", "bytes": 100, "gb_per_byte": 1.0,
                 "exact_match": None, "ms_per_byte": ms},
                {"method": "blt", "task": "u", "kind": "generation", "bytes": 300, "gb_per_byte": 1.0,
                 "exact_match": None, "ms_per_byte": ms / 2}]
        (folder / "summary.json").write_text(json.dumps(rows))
        (folder / "environment.json").write_text(json.dumps([{"device_profile": profile}]))
        return folder

    base = run_folder("base", 4.0, profile)  # byte-weighted: (100 x 4 + 300 x 2) / 400 = 2.5 ms
    slower = run_folder("slower", 4.8, profile)  # 3.0 ms: +20%
    assert check(slower, base / "summary.json") == []  # off by default
    problems = check(slower, base / "summary.json", decode_tolerance=0.1)
    assert len(problems) == 1 and "decode time per byte rose to 3 ms from 2.5 ms (+20.0%" in problems[0]
    assert check(slower, base, decode_tolerance=0.25) == []
    other = run_folder("other", 4.0, {**profile, "threads": 2})
    assert "different device profiles (threads 2 vs 1)" in check(other, base, decode_tolerance=0.1)[0]
    none = run_folder("none", 4.0, None)
    assert "need a device profile" in check(none, base, decode_tolerance=0.1)[0]
    for bad in (float("nan"), float("inf"), -0.1):
        with pytest.raises(BltbenchError, match="finite number"):
            check(slower, base, tolerance=bad)
        with pytest.raises(BltbenchError, match="finite number"):
            check(slower, base, decode_tolerance=bad)


def test_check_refuses_a_baseline_of_another_suite_model_or_tasks(capsys, tmp_path):
    import yaml

    baseline = Path(__file__).resolve().parents[1] / "suites" / "baselines" / "smoke.json"
    rows = json.loads(baseline.read_text())
    run, base = tmp_path / "run", tmp_path / "base"
    for folder, suite in ((run, {"name": "smoke", "model": "random:tiny"}), (base, {"name": "smoke", "model": "random:tiny"})):
        folder.mkdir()
        (folder / "summary.json").write_text(json.dumps(rows))
        (folder / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert run_cli(capsys, "check", str(run), "--baseline", str(base))[0] == 0
    (base / "suite.yaml").write_text(yaml.safe_dump({"name": "smoke", "model": "tiny"}))
    code, out, err = run_cli(capsys, "check", str(run), "--baseline", str(base))
    assert code == 2 and "from model 'tiny', the run from 'random:tiny'" in err and "--allow-other" in err
    assert run_cli(capsys, "check", str(run), "--baseline", str(base), "--allow-other")[0] == 0
    (base / "suite.yaml").write_text(yaml.safe_dump({"name": "default", "model": "random:tiny"}))
    assert "from suite 'default'" in run_cli(capsys, "check", str(run), "--baseline", str(base))[2]
    (run / "suite.yaml").unlink()  # a bare summary: its tasks still say what it measured
    fewer = [r for r in rows if r["task"] != rows[0]["task"]]
    (run / "summary.json").write_text(json.dumps(fewer))
    code, out, err = run_cli(capsys, "check", str(run), "--baseline", str(baseline))
    assert code == 2 and "covers tasks" in err


@pytest.mark.slow  # three small sweeps; make test-slow and CI run it
def test_a_suites_entropy_model_patches_its_run_and_is_part_of_what_resumes(tmp_path, capsys, micro, micro_variants):
    """`entropy_model:` (or run --entropy-model) patches with another model's entropy model; a resume
    with another entropy model, or another --dtype, would mix two models' records and is refused."""
    import torch

    from bltbench.model.checkpoint import save_bundle

    model = save_bundle(micro, tmp_path / "model", dtype=torch.float32)
    other = save_bundle(micro_variants[0], tmp_path / "other", dtype=torch.float32)
    suite = dict(SUITE, model=str(model), methods=["blt"], tasks=[SUITE["tasks"][0]], entropy_model=str(other))
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert load_suite(path).entropy_model == str(other)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "run", str(path), "--out", str(out), "--data-dir", str(DATA), "--device-profile", "off")
    assert code == 0, err
    mine = stable_records(out)
    plain = tmp_path / "plain"
    path.write_text(yaml.safe_dump({k: v for k, v in suite.items() if k != "entropy_model"}))
    assert run_cli(capsys, "run", str(path), "--out", str(plain), "--data-dir", str(DATA), "--device-profile", "off")[0] == 0
    assert [r["patches"] for r in mine] != [r["patches"] for r in stable_records(plain)]  # the named model patched
    for extra in (["--entropy-model", str(model)], ["--dtype", "bf16"]):
        code, _, err = run_cli(capsys, "run", str(path), "--out", str(plain), "--resume", "--data-dir", str(DATA),
                               "--device-profile", "off", *extra)
        assert code != 0 and "cannot resume" in err, err
    path.write_text(yaml.safe_dump(dict(suite, entropy_model=3)))
    with pytest.raises(BltbenchError, match="entropy_model must be a string"):
        load_suite(path)
