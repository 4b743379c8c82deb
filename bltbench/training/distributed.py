"""Training past one process: torchrun's environment, the process group, and the launcher.

`torchrun --nproc_per_node N -m bltbench train ...` (or `bltbench train --nproc N`, which runs torchrun
on loopback) starts N ranks. Each draws the same global batch from the same generator and trains on its
own rows of it; DistributedDataParallel averages the gradients, so a step is the single-process step at
the same global batch, and every rank's generator stays where a single process's would be. Rank 0
alone evaluates and writes checkpoints and the bundle; a checkpoint holds no rank state, so a run
resumes on any number of processes.

With `--fsdp`, parameters, gradients and optimizer state are sharded over the ranks instead (FSDP2,
`fully_shard`): for models whose hash tables do not fit one device. Each hash table and the global
transformer are units of their own, all-gathered one at a time; checkpoints are sharded
(torch.distributed.checkpoint), every rank writing its shards, and load on any number of processes,
sharded or not.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bltbench.errors import BltbenchError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that evaluates, logs and writes."""
        return self.rank == 0

    def rows(self, batch: int) -> slice:
        """This rank's rows of a global batch."""
        share = batch // self.world
        return slice(self.rank * share, (self.rank + 1) * share)


def from_environment(device: torch.device) -> Ranks:
    """The ranks torchrun set (one process without it); joins the process group: gloo on a CPU, NCCL on
    CUDA (each rank on its local GPU). On a CPU each rank runs torch at its share of the cores."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group(backend)
    if device.type == "cpu":  # the launcher's OMP_NUM_THREADS, else an even share of the cores
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 1) // local))
    return ranks


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 over the process group: each hash-embedding table and the global transformer one unit (they
    are the bulk of the weights and are only ever called as modules), everything else the root unit.
    Fused inference weights are never cached on a sharded model (its storage is freed between calls)."""
    import warnings

    from torch.distributed.fsdp import fully_shard

    # Our forwards return slices of the logits; nothing modifies them in place, which is what this warns of.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")

    from bltbench.model.blt import GlobalTransformer
    from bltbench.model.hashing import HashEmbeddings

    for module in list(model.modules()):
        if isinstance(module, HashEmbeddings):
            for table in module:
                fully_shard(table)
        elif isinstance(module, GlobalTransformer):
            fully_shard(module)
        if getattr(module, "FUSED", ()):
            module._no_fused_cache = True
    fully_shard(model)
    return model


def mean_over_ranks(value: float, ranks: Ranks, device: torch.device) -> float:
    """A per-rank scalar averaged over ranks (a loss: the global batch's mean, shards being equal)."""
    if ranks.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / ranks.world


def agreed(value: int, ranks: Ranks, device: torch.device) -> int:
    """Rank 0's value on every rank (a step count fitted to a time budget must not differ by rank)."""
    if ranks.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, 0)
    return int(t.item())


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def finish(ranks: Ranks) -> None:
    if ranks.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, argv: list[str], threads: int | None = None, quiet: bool = False) -> int:
    """Run `bltbench <argv>` under torchrun with `nproc` processes on this machine (loopback only), each
    at `threads` torch threads (default: an even share of the cores); returns its exit status. `quiet`
    keeps the ranks' output back unless they fail (then its last lines go to stderr)."""
    if nproc < 1:
        raise BltbenchError(f"--nproc must be >= 1, got {nproc}")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--nnodes", "1",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "bltbench", *argv]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads or max(1, (os.cpu_count() or 1) // nproc)))
    if not quiet:
        return subprocess.run(command, env=env).returncode
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:  # a rank's own error line, else the launcher's last words
        lines = (done.stdout + done.stderr).splitlines()
        said = [line for line in lines if line.startswith("error: ")]
        sys.stderr.write("\n".join(said[:1] or lines[-20:]) + "\n")
    return done.returncode
