"""Sweeps on Ray: work units, the executor's records against the serial run's, killed workers and
drivers, placement and per-device timings, a missing Ray."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bltbench.errors import BltbenchError
from bltbench.instrumentation.costs import method_costs
from bltbench.runner.executors import make_executor
from bltbench.runner.suite import Timing, load_suite, parse_suite
from bltbench.runner.units import WorkItem, balanced_shards, make_units
from bltbench.runner.bench import comparable
from bltbench.suites.tasks.base import Sample
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BLTBENCH_DATA", ROOT.parent / "shared" / "data"))
SMOKE = ROOT / "suites" / "smoke.yaml"


def _smoke():
    """The smoke suite at one torch thread, as each Ray worker runs it (thread counts change float sums)."""
    return dataclasses.replace(load_suite(SMOKE), timing=Timing(1, 1))


def _records(folder: Path) -> dict[tuple, dict]:
    """A run's records keyed by (method, task, sample), less timing and placement: what a serial and a
    Ray run of one suite must agree on."""
    keys = [(r["method"], r["task"], r["sample_id"])
            for r in map(json.loads, (folder / "records.jsonl").read_text().splitlines())]
    assert len(keys) == len(set(keys)), "a record was written twice"
    return comparable(folder)


# -- units -----------------------------------------------------------------------------------------


def _items(n: int) -> list[list[WorkItem]]:
    return [[WorkItem(Sample(f"s{i}", "x" * i), ("blt",))] for i in range(n)]


def test_shards_balance_sizes_keep_order_and_lose_nothing():
    atoms = _items(10)
    costs = [float(len(a[0].sample.prompt)) + 1 for a in atoms]
    shards = balanced_shards(atoms, costs, 3)
    assert len(shards) == 3
    ids = [item.sample.id for items, _ in shards for item in items]
    assert sorted(ids) == sorted(f"s{i}" for i in range(10))  # each sample in exactly one shard
    for items, cost in shards:
        order = [int(item.sample.id[1:]) for item in items]
        assert order == sorted(order)  # a shard keeps the task's order
        assert cost == sum(len(item.sample.prompt) + 1 for item in items)
    loads = [cost for _, cost in shards]
    assert max(loads) - min(loads) <= max(costs)  # longest-first dealing: within one sample of even
    assert len(balanced_shards(atoms[:2], costs[:2], 8)) == 2  # never more shards than atoms


def test_a_unit_less_what_is_written_keeps_only_the_missing_methods():
    unit = make_units("generation", 0, [[WorkItem(Sample("a", ""), ("blt", "blt-s-8"))],
                                        [WorkItem(Sample("b", ""), ("blt",))]], [1.0, 1.0], 1)[0]
    done = {("blt", "a"), ("blt", "b")}
    rest = unit.remaining(lambda label, sid: (label, sid) in done)
    assert [(i.sample.id, i.labels) for i in rest.items] == [("a", ("blt-s-8",))]
    done.add(("blt-s-8", "a"))
    assert unit.remaining(lambda label, sid: (label, sid) in done) is None


def test_likelihood_atoms_are_the_evaluator_chunks_of_one_subtask():
    from bltbench.suites.tasks.registry import get_task

    task = get_task("mmlu")
    samples = [Sample(f"{sub}/{i}", "", meta={"subtask": sub, "doc_id": i}) for sub in ("a", "b") for i in range(20)]
    atoms = task.atoms(samples)
    assert [len(a) for a in atoms] == [task.chunk, 20 - task.chunk, task.chunk, 20 - task.chunk]
    assert all(len({s.meta["subtask"] for s in a}) == 1 for a in atoms)
    assert [s for a in atoms for s in a] == samples


# -- choosing an executor ---------------------------------------------------------------------------


def test_suite_executor_key_and_its_errors(tmp_path):
    base = {"name": "t", "model": "random:tiny", "methods": ["blt"], "tasks": [{"name": "flores-fr-en", "limit": 1}]}
    suite = parse_suite({**base, "executor": {"name": "ray", "workers": 2, "gpus_per_worker": 0.5}}, "t.yaml")
    assert (suite.executor.name, suite.executor.workers, suite.executor.gpus_per_worker) == ("ray", 2, 0.5)
    assert parse_suite({**base, "executor": "ray"}, "t.yaml").executor.name == "ray"
    for bad, said in (({"name": "slurm"}, "executor.name"), ({"name": "ray", "workers": 0}, "executor.workers"),
                      ({"name": "ray", "nodes": 2}, "unknown executor fields nodes"),
                      ({"name": "serial", "workers": 2}, "apply to ray only")):
        with pytest.raises(BltbenchError, match=said):
            parse_suite({**base, "executor": bad}, "t.yaml")


def test_ray_options_without_ray_executor_are_refused():
    with pytest.raises(BltbenchError, match="--workers only apply with --executor ray"):
        make_executor("serial", workers=2)
    with pytest.raises(BltbenchError, match="unknown executor 'dask'.*serial, ray"):
        make_executor("dask")


def test_a_missing_ray_is_one_error_line_naming_the_extra(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code, out, err = run_cli(capsys, "run", str(SMOKE), "--out", str(tmp_path / "run"), "--executor", "ray")
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "bltbench[ray]" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# -- timings by device -------------------------------------------------------------------------------


def _timed(device: str, name: str, ms: float) -> dict:
    return {"bytes_generated": 10, "decode_s": ms / 100,  # ms per byte
            "ttft_s": 0.01, "bandwidth_gb": 1.0, "bandwidth_gb_ext": 1.0,
            "bandwidth_gb_kv": 1.0, "nfe": {c: 1 for c in ("entropy", "encoder", "global", "decoder")},
            "device": device, "device_name": name}


def test_timings_from_different_devices_are_never_pooled():
    cpu = [_timed("cpu", "Xeon", ms) for ms in (10.0, 12.0, 14.0)]
    gpu = [_timed("cuda:0", "H200", ms) for ms in (1.0, 1.5)]
    alone = method_costs(cpu)
    assert alone["ms_per_byte"] == pytest.approx(12.0) and alone["timing_by_device"] is None
    mixed = method_costs(cpu + gpu)
    assert math.isnan(mixed["ms_per_byte"]) and math.isnan(mixed["bytes_per_s"])
    split = mixed["timing_by_device"]
    assert split["cpu (Xeon)"]["ms_per_byte"] == pytest.approx(12.0)
    assert split["cuda:0 (H200)"]["ms_per_byte"] == pytest.approx(1.25)
    assert mixed["gb_per_byte"] == pytest.approx(0.1)  # bandwidth is the method's, wherever it ran: pooled


# -- Ray runs (a local Ray, or a `ray start` one on this machine; make setup installs Ray) ----------------------------------------


@pytest.fixture(scope="module")
def serial_smoke(tmp_path_factory):
    from bltbench.runner.sweep import run_suite

    folder = tmp_path_factory.mktemp("serial") / "run"
    run_suite(_smoke(), folder, data_dir=str(DATA))
    return _records(folder)


def _ray_run(folder: Path, on_sample=None, shards_per_task: int | None = None):
    from bltbench.runner.ray_executor import RayExecutor
    from bltbench.runner.sweep import run_suite

    return run_suite(_smoke(), folder, data_dir=str(DATA), on_sample=on_sample,
                     executor=RayExecutor(workers=2, shards_per_task=shards_per_task))


@pytest.mark.slow
def test_ray_run_of_smoke_with_two_workers_equals_the_serial_run(tmp_path, serial_smoke):
    folder = tmp_path / "ray"
    result = _ray_run(folder)
    assert result.written == len(serial_smoke) and result.skipped == 0
    assert _records(folder) == serial_smoke  # ids, outputs, scores, NFEs, bandwidth, roofline predictions
    rows = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    assert {r["worker"] for r in rows} == {"ray-0", "ray-1"}  # both workers ran units
    assert all(r["host"] and r["device"] == "cpu" and r["device_name"] and r["pid"] != os.getpid() for r in rows)
    env = json.loads((folder / "environment.json").read_text())[-1]
    assert env["executor"] == "ray" and len(env["workers"]) == 2 and env["threads_total"] == 2


@pytest.mark.slow
def test_a_worker_killed_mid_shard_is_replaced_and_nothing_is_lost_or_doubled(tmp_path, serial_smoke):
    folder = tmp_path / "ray"
    killed: list[int] = []

    def kill_once(_: str) -> None:
        if not killed:  # the worker of the first record is on its unit's second sample now
            killed.append(json.loads((folder / "records.jsonl").read_text().splitlines()[-1])["pid"])
            os.kill(killed[0], signal.SIGKILL)

    _ray_run(folder, on_sample=kill_once, shards_per_task=1)  # one unit per task: two flores samples in one
    assert killed
    assert _records(folder) == serial_smoke
    env = json.loads((folder / "environment.json").read_text())[-1]
    assert env["worker_deaths"] == 1 and len(env["workers"]) == 3  # two, and the replacement


@pytest.mark.slow
def test_a_driver_killed_mid_run_resumes_to_the_same_records(tmp_path, serial_smoke):
    folder = tmp_path / "ray"
    env = {**os.environ, "BLTBENCH_DATA": str(DATA)}
    cmd = [sys.executable, "-m", "bltbench", "run", str(SMOKE), "--out", str(folder), "--executor", "ray",
           "--workers", "2", "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    records = folder / "records.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if records.exists() and len(records.read_bytes().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    written = len(records.read_bytes().splitlines())
    assert 4 <= written < len(serial_smoke)
    result = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _records(folder) == serial_smoke


@pytest.mark.slow
def test_scoring_tasks_shard_across_ray_workers_and_equal_the_serial_run(tmp_path):
    """Likelihood documents in evaluator chunks and bits-per-byte texts, split over two workers; methods
    sharing weights reuse one scoring run either way."""
    from bltbench.runner.ray_executor import RayExecutor
    from bltbench.runner.sweep import run_suite

    suite = parse_suite({"name": "scoring", "model": "random:tiny", "methods": ["blt", "blt-s-8", "blt-d-8"],
                         "timing": {"threads": 1},
                         "tasks": [{"name": "arc-easy", "limit": 20}, {"name": "bpb-flores-eng", "limit": 4}]}, "s.yaml")
    run_suite(suite, tmp_path / "serial", data_dir=str(DATA))
    run_suite(suite, tmp_path / "ray", data_dir=str(DATA), executor=RayExecutor(workers=2))
    assert _records(tmp_path / "ray") == _records(tmp_path / "serial")
    rows = [json.loads(line) for line in (tmp_path / "ray" / "records.jsonl").read_text().splitlines()]
    scored = [r for r in rows if "reused_from" not in r]
    assert {r["worker"] for r in scored} == {"ray-0", "ray-1"}
    assert {r["method"] for r in scored} == {"blt", "blt-d-8@confidence=0.7"}  # blt-s-8 reuses blt's likelihoods
    assert sum(r["method"] == "blt-s-8" for r in rows) == 24


def test_an_address_nobody_answers_on_is_one_line_within_seconds(capsys, tmp_path):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    code, _, err = run_cli(capsys, "run", str(SMOKE), "--out", str(tmp_path / "run"), "--executor", "ray",
                           "--address", f"127.0.0.1:{port}")
    assert code == 2 and time.monotonic() - started < 30
    assert err.strip().startswith(f"error: no Ray cluster answers at 127.0.0.1:{port}") and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_ray_start_cluster_given_by_address_runs_the_sweep(tmp_path, serial_smoke):
    """`ray start --head` turns token authentication on; the driver joins with its token."""
    import socket

    ray_cli = Path(sys.executable).with_name("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([str(ray_cli), "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True, timeout=120)
    try:
        env = {**os.environ, "BLTBENCH_DATA": str(DATA)}
        env.pop("RAY_AUTH_MODE", None)
        done = subprocess.run([sys.executable, "-m", "bltbench", "run", str(SMOKE), "--out", str(tmp_path / "run"),
                               "--executor", "ray", "--address", f"127.0.0.1:{port}", "--workers", "2", "--threads", "1"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], capture_output=True, timeout=120)
    assert _records(tmp_path / "run") == serial_smoke
    env_json = json.loads((tmp_path / "run" / "environment.json").read_text())[-1]
    assert env_json["address"] == f"127.0.0.1:{port}" and len(env_json["workers"]) == 2


def test_the_python_api_takes_the_executor_as_the_cli_does(tmp_path):
    import bltbench

    with pytest.raises(BltbenchError, match="--workers only apply with --executor ray"):
        bltbench.run_suite(SMOKE, out=tmp_path / "run", executor="serial", workers=2)
    with pytest.raises(BltbenchError, match="unknown executor 'slurm'"):
        bltbench.run_suite(SMOKE, out=tmp_path / "run", executor="slurm")
    assert not (tmp_path / "run").exists()


def test_a_suites_ray_options_apply_only_to_ray_and_gpus_must_exist():
    from bltbench.runner.executors import SerialExecutor, WorkerArgs, executor_for
    from bltbench.runner.ray_executor import RayExecutor

    base = {"name": "t", "model": "random:tiny", "methods": ["blt"], "tasks": [{"name": "flores-fr-en", "limit": 1}],
            "executor": {"name": "ray", "workers": 4}}
    suite = parse_suite(base, "t.yaml")
    assert isinstance(executor_for(suite, "serial"), SerialExecutor)  # --executor serial over a Ray suite
    ray_executor = executor_for(suite)
    assert isinstance(ray_executor, RayExecutor) and ray_executor.workers == 4
    if not torch_cuda_available():
        with pytest.raises(BltbenchError, match="need 2 GPUs; this machine has 0"):
            RayExecutor(workers=2, gpus_per_worker=1).start(WorkerArgs(suite))


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_records_from_before_placement_do_not_split_a_runs_timings():
    old = [{k: v for k, v in _timed("cpu", "Xeon", 10.0).items() if k not in ("device", "device_name")}]
    mixed = method_costs(old + [_timed("cpu", "Xeon", 14.0)])
    assert mixed["ms_per_byte"] == pytest.approx(12.0) and mixed["timing_by_device"] is None


@pytest.mark.slow
def test_bench_sweep_times_serial_and_ray_side_by_side_and_compares_their_records(capsys):
    code, out, err = run_cli(capsys, "bench", "sweep", str(SMOKE), "--workers", "2", "--data-dir", str(DATA))
    assert code == 0, err
    rows = {line.split("│")[1].strip(): line.split("│")[2:] for line in out.splitlines() if line.startswith("│")}
    assert set(rows) == {"serial", "ray x2"} and all(float(r[0]) > 0 and r[1].strip() == "18" for r in rows.values())
    assert "records identical apart from timing and placement: yes" in out
