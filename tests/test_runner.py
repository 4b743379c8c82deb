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
