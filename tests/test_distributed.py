"""Training past one process: two CPU processes under torchrun (gloo, loopback) give the loss curve of
one process at the same global batch, resume bit-exactly, resume on another number of processes, and
leave writing to rank 0."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bltbench.training.distributed import Ranks
from bltbench.training.trainer import Trainer
from distributed_worker import config

WORKER = Path(__file__).with_name("distributed_worker.py")
TOLERANCE = 1e-5  # relative, per step: two processes average two half-batch gradients, one sums them at once


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _single(corpus: str, out: str, variant: str, steps: int = 6, **options) -> tuple[Trainer, list[float]]:
    torch.set_num_threads(1)
    trainer = Trainer(config(corpus, out, variant, **options))
    return trainer, [trainer.train_step()[0] for _ in range(steps)]


def _torchrun(nproc: int, *args: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--nnodes", "1",
               "--master_addr", "127.0.0.1", "--master_port", _port(), str(WORKER), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(WORKER.parent))
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("corpus")
    lines = [f"document {i}: the entropy model learns bytes, line {j} of it" for i in range(60) for j in range(3)]
    (root / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(root)


LAYOUTS = {"ddp": ["checkpoint.pt"],  # rank 0 alone wrote
           "fsdp": ["checkpoint/.metadata", "checkpoint/__0_0.distcp", "checkpoint/__1_0.distcp", "checkpoint/trainer.pt"]}
HOW = [("entropy", "ddp"), ("blt", "fsdp")]


@pytest.mark.slow  # two torchrun launches each
@pytest.mark.parametrize("variant,how", HOW)
def test_two_processes_train_as_one_and_resume_exactly(corpus, tmp_path, variant, how):
    """DDP, or FSDP2 with each rank writing its shard of the checkpoint."""
    one, single = _single(corpus, str(tmp_path / "one"), variant)
    _torchrun(2, "straight", corpus, str(tmp_path / "two"), str(tmp_path / "two.pt"), variant, how)
    two = torch.load(tmp_path / "two.pt")
    assert two["world"] == 2 and two["sharded"] == (how == "fsdp")
    assert two["losses"] == pytest.approx(single, rel=TOLERANCE)
    for name, tensor in one.model.state_dict().items():
        assert torch.allclose(two["model"][name], tensor, atol=1e-4), name
    assert sorted(str(p.relative_to(tmp_path / "two")) for p in (tmp_path / "two").rglob("*") if p.is_file()) == LAYOUTS[how]

    _torchrun(2, "split", corpus, str(tmp_path / "split"), str(tmp_path / "split.pt"), variant, how)
    split = torch.load(tmp_path / "split.pt")
    assert split["losses"] == two["losses"]  # a resume on two processes is bit-exact
    for name, tensor in two["model"].items():
        assert torch.equal(tensor, split["model"][name]), name


@pytest.mark.slow
@pytest.mark.parametrize("variant,how", HOW)
def test_a_two_process_checkpoint_resumes_on_one_process(corpus, tmp_path, variant, how):
    straight, single = _single(corpus, str(tmp_path / "one"), variant)
    _torchrun(2, "three", corpus, str(tmp_path / "two"), str(tmp_path / "two.pt"), variant, how)
    assert torch.load(tmp_path / "two.pt")["losses"] == pytest.approx(single[:3], rel=TOLERANCE)
    resumed = Trainer(config(corpus, str(tmp_path / "two"), variant))
    resumed.load_checkpoint()
    assert resumed.step == 3 and not resumed.sharded
    assert [resumed.train_step()[0] for _ in range(3)] == pytest.approx(single[3:], rel=1e-4)
    # Adam normalises each update, so an element whose gradient is ~0 may move by up to lr either way on
    # float-level gradient differences; over the whole model the weights agree far closer than that.
    diffs = torch.cat([(tensor - resumed.model.state_dict()[name]).abs().flatten()
                       for name, tensor in straight.model.state_dict().items()])
    assert float(diffs.mean()) < 1e-5 and float(diffs.max()) <= 3 * 3e-3


def test_only_rank_0_writes_checkpoints(corpus, tmp_path):
    trainer = Trainer(config(corpus, str(tmp_path / "out"), "entropy"))
    trainer.train_step()
    trainer.ranks = Ranks(rank=1, world=2)
    trainer.save_checkpoint()
    assert not (tmp_path / "out").exists()
    trainer.ranks = Ranks()
    trainer.save_checkpoint()
    assert (tmp_path / "out" / "checkpoint.pt").exists()
    assert Ranks(1, 2).rows(8) == slice(4, 8) and Ranks(0, 4).rows(8) == slice(0, 2)


@pytest.mark.slow
def test_train_nproc_launches_torchrun_and_logs_the_single_process_curve(corpus, tmp_path, capsys):
    import json

    from conftest import run_cli

    args = ["train", "--variant", "entropy", "--corpus", corpus, "--steps", "4", "--seq-len", "48", "--batch-size", "4",
            "--warmup", "2", "--eval-every", "2", "--checkpoint-every", "2"]
    code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "one"))
    assert code == 0, err
    code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "two"), "--nproc", "2")
    assert code == 0, err
    logs = [json.loads((tmp_path / name / "training-entropy.json").read_text())["history"] for name in ("one", "two")]
    assert [h["step"] for h in logs[1]] == [2, 4]
    for a, b in zip(*logs):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=TOLERANCE)
        assert b["heldout_bpb"] == pytest.approx(a["heldout_bpb"], rel=TOLERANCE)
    code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "odd"), "--nproc", "3")
    assert code == 2 and err.strip() == "error: the global batch (4) must split evenly over 3 processes"


@pytest.mark.slow  # two torchrun launches
def test_blt_d_from_blt_with_frozen_encoder_and_global_under_ddp_and_fsdp(corpus, tmp_path):
    one, single = _single(corpus, str(tmp_path / "one"), "blt-d", freeze=("encoder", "global"))
    init = one.bundle.blt.state_dict()
    for how in ("ddp-frozen", "fsdp-frozen"):
        _torchrun(2, "straight", corpus, str(tmp_path / how), str(tmp_path / f"{how}.pt"), "blt-d", how)
        run = torch.load(tmp_path / f"{how}.pt")
        assert run["sharded"] == how.startswith("fsdp")
        assert run["losses"] == pytest.approx(single, rel=TOLERANCE)
        weights = run["model"]
        frozen = [k for k in weights if k.startswith(("local_encoder.", "encoder_hash_tok_embedding.", "global_transformer."))]
        assert frozen and all(torch.equal(weights[k], init[k]) for k in frozen)  # kept at the BLT's values
        assert not torch.equal(weights["local_decoder.output.weight"], init["local_decoder.output.weight"])
        assert torch.allclose(weights["local_decoder.output.weight"], one.model.state_dict()["local_decoder.output.weight"],
                              atol=1e-4)


@pytest.mark.slow
def test_train_nproc_fsdp_writes_the_bundle_and_resumes_on_one_process(corpus, tmp_path, capsys):
    from conftest import run_cli

    from bltbench.model.checkpoint import load_model

    args = ["train", "--variant", "entropy", "--corpus", corpus, "--seq-len", "48", "--batch-size", "4",
            "--warmup", "2", "--eval-every", "2", "--checkpoint-every", "2"]
    code, _, err = run_cli(capsys, *args, "--steps", "4", "--out", str(tmp_path / "one"))
    assert code == 0, err
    code, _, err = run_cli(capsys, *args, "--steps", "2", "--out", str(tmp_path / "two"), "--nproc", "2", "--fsdp")
    assert code == 0, err
    assert (tmp_path / "two" / "checkpoint" / "trainer.pt").exists()
    code, _, err = run_cli(capsys, *args, "--steps", "4", "--out", str(tmp_path / "two"), "--resume")  # one process
    assert code == 0, err
    a, b = (load_model(str(tmp_path / name)).entropy.state_dict() for name in ("one", "two"))
    for name, tensor in a.items():
        assert torch.allclose(b[name].float(), tensor.float(), atol=1e-2), name  # bf16 bundles
    code, _, err = run_cli(capsys, *args, "--steps", "6", "--out", str(tmp_path / "two"), "--resume", "--nproc", "2")
    assert code == 0, err  # and back on two (DDP) processes from the one-process checkpoint


@pytest.mark.slow
def test_bench_train_nproc_compares_process_counts_at_the_per_process_batch(corpus, tmp_path, capsys):
    from conftest import run_cli

    code, out, err = run_cli(capsys, "bench", "train", "--corpus", corpus, "--variant", "entropy", "--batch-sizes", "2",
                             "--seq-len", "32", "--steps", "2", "--warmup-steps", "1", "--nproc", "1,2", "--threads", "1")
    assert code == 0, err
    rows = [line.split("│")[1:-1] for line in out.splitlines() if line.startswith("│")]
    assert [[c.strip() for c in r[:3]] for r in rows] == [["1", "1", "2"], ["2", "1", "4"]]  # processes, threads, batch
    assert rows[0][5].strip() == "1.00x" and float(rows[1][5].strip().rstrip("x")) > 0
    code, _, err = run_cli(capsys, "bench", "train", "--corpus", corpus, "--batch-sizes", "2,4", "--nproc", "2")
    assert code == 2 and "one per-process batch" in err


@pytest.mark.slow
def test_blt_d_fine_tunes_an_official_checkpoint_sharded_with_frozen_parts(corpus, tmp_path, capsys, micro):
    """--init an official-format folder (consolidated.pth + params.json, the entropy model beside it),
    two FSDP2 processes, encoder and global frozen: the bundle keeps the official weights there."""
    from conftest import run_cli
    from test_checkpoints import _write_official

    from bltbench.model.checkpoint import load_model

    official = tmp_path / "blt_1b"
    _write_official(official, micro, tmp_path / "entropy_model")
    code, out, err = run_cli(capsys, "train", "--variant", "blt-d", "--init", str(official), "--freeze", "encoder,global",
                             "--corpus", corpus, "--steps", "2", "--seq-len", "48", "--batch-size", "4", "--warmup", "1",
                             "--eval-every", "2", "--checkpoint-every", "2", "--out", str(tmp_path / "blt-d"),
                             "--nproc", "2", "--fsdp")
    assert code == 0, err
    tuned = load_model(str(tmp_path / "blt-d")).blt_d.state_dict()
    stored = {k: v.to(torch.bfloat16).float() for k, v in load_model(str(official)).blt.state_dict().items()}  # bundles are bf16
    frozen = [k for k in stored if k.startswith(("local_encoder.", "encoder_hash_tok_embedding.", "global_transformer."))]
    assert frozen and all(torch.equal(tuned[k], stored[k]) for k in frozen)
    assert not torch.equal(tuned["local_decoder.output.weight"], stored["local_decoder.output.weight"])


def test_a_kill_while_a_sharded_checkpoint_replaces_another_leaves_one_to_resume(corpus, tmp_path):
    """The renames of a checkpoint replacement, stopped at each point: resume finds a whole one."""
    import shutil

    from bltbench.training.trainer import _replace_folder

    trainer = Trainer(config(corpus, str(tmp_path / "out"), "entropy"))
    trainer.train_step()
    out = tmp_path / "out"
    (out / "checkpoint.tmp").mkdir(parents=True)
    torch.save(trainer._trainer_state(), out / "checkpoint.tmp" / "trainer.pt")
    # DCP shards of a real sharded save, written by one process (no process group)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(trainer.model, trainer.optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=out / "checkpoint.tmp")
    shutil.copytree(out / "checkpoint.tmp", out / "checkpoint.old")  # killed after the old one went aside

    def resumes() -> bool:
        resumed = Trainer(config(corpus, str(out), "entropy"))
        resumed.load_checkpoint()
        return resumed.step == 1

    assert resumes()  # from the new one (.tmp), whole
    shutil.rmtree(out / "checkpoint.tmp")
    assert resumes()  # killed before the new one was written whole: the old one
    (out / "checkpoint.old").rename(out / "checkpoint")
    shutil.copytree(out / "checkpoint", out / "checkpoint.tmp")
    _replace_folder(out / "checkpoint.tmp", out / "checkpoint")  # a replacement run to its end
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint"] and resumes()
