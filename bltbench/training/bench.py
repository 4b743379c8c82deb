"""Training throughput by batch size, measured side by side in one process; and by process count.

A step dispatches about the same operators whatever the batch. For a small model on a GPU, dispatching
them can take longer than the arithmetic, and then bytes per second grow with the batch until the device
is busy. This benchmark shows whether and where that happens on a given machine, and counts the
operators one step dispatches. `scaling_benchmark` runs it under torchrun at several process counts,
the per-process batch fixed, alternating the counts when repeated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from bltbench.errors import BltbenchError
from bltbench.instrumentation.timing import interleaved
from bltbench.profiling import count_ops
from bltbench.training.distributed import finish, launch
from bltbench.training.trainer import TrainConfig, Trainer


@dataclass
class TrainBenchRow:
    batch_size: int
    seconds_per_step: float
    bytes_per_s: float
    ops_per_step: int | None  # aten operators one step dispatches (counted in a separate, profiled step)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_benchmark(
    config: TrainConfig,
    batch_sizes: Sequence[int],
    steps: int = 10,
    warmup_steps: int = 3,
    ops: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[TrainBenchRow]:
    """Time `steps` training steps (after `warmup_steps`) at each batch size, on one trainer whose
    weights keep training across sizes (the time of a step does not depend on the weights' values)."""
    trainer = Trainer(replace(config, batch_size=batch_sizes[0], eval_every=10**9, checkpoint_every=10**9))
    rows = []
    for batch in batch_sizes:
        trainer.config = replace(trainer.config, batch_size=batch)
        if progress:
            progress(f"batch {batch}: {warmup_steps} warm-up and {steps} timed steps")
        for _ in range(warmup_steps):
            trainer.train_step()
        _synchronize(trainer.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        _synchronize(trainer.device)
        per_step = (time.perf_counter() - t0) / steps
        n_ops = count_ops(trainer.train_step) if ops else None
        rows.append(TrainBenchRow(batch, per_step, batch * config.seq_len / per_step, n_ops))
    finish(trainer.ranks)
    return rows


@dataclass
class ScalingRow:
    processes: int
    threads: int  # torch threads per process
    global_batch: int
    seconds_per_step: float  # median over repeats
    bytes_per_s: float  # the global batch's bytes per second


def scaling_benchmark(bench_args: list[str], counts: Sequence[int], per_process_batch: int, seq_len: int,
                      threads: int | None, repeats: int = 1,
                      progress: Callable[[str], None] | None = None) -> list[ScalingRow]:
    """`bltbench bench train <bench_args>` under torchrun at each process count (global batch = count *
    `per_process_batch` sequences of `seq_len` bytes), counts alternated over `repeats` rounds
    (`timing.interleaved`); each count keeps its median step time."""
    import itertools
    import json
    import os
    import statistics
    import tempfile

    launches = itertools.count()
    with tempfile.TemporaryDirectory() as tmp:
        def run(n: int) -> dict:
            if progress:
                progress(f"{n} process(es)")
            out = os.path.join(tmp, f"{next(launches)}.json")
            code = launch(n, ["bench", "train", *bench_args, "--seq-len", str(seq_len),
                              "--batch-sizes", str(n * per_process_batch), "--json", out], threads, quiet=True)
            if code:
                raise BltbenchError(f"the {n}-process benchmark exited with status {code}")
            with open(out, encoding="utf-8") as f:
                return json.load(f)

        timed = interleaved(list(counts), repeats, run)
    rows = []
    for n, results in timed.items():
        per_step = statistics.median(r["seconds_per_step"] for r in results)
        batch = n * per_process_batch
        rows.append(ScalingRow(n, results[-1]["threads"], batch, per_step, batch * seq_len / per_step))
    return rows
