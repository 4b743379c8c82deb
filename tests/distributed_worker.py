"""Run under torchrun by tests/test_distributed.py: trains through the Trainer on every rank and has
rank 0 write what the test compares (per-step losses, weights).

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_worker.py MODE CORPUS OUT RESULT [VARIANT [fsdp]]
"""

from __future__ import annotations

import json
import sys

import torch

from bltbench.training.distributed import finish
from bltbench.training.trainer import TrainConfig, Trainer


def config(corpus: str, out: str, variant: str, fsdp: bool = False, freeze: tuple[str, ...] = ()) -> TrainConfig:
    extra = {"init": "random:tiny:3"} if variant in ("blt", "blt-d") else {}
    return TrainConfig(variant=variant, corpus=[corpus], steps=6, out=out, seq_len=48, batch_size=4, lr=3e-3,
                       warmup=2, eval_every=3, checkpoint_every=3, eval_windows=4, heldout_fraction=0.3, fsdp=fsdp,
                       freeze=freeze, **extra)


def main(mode: str, corpus: str, out: str, result: str, variant: str = "entropy", how: str = "ddp") -> None:
    fsdp = how.startswith("fsdp")
    freeze = ("encoder", "global") if how.endswith("frozen") else ()
    trainer = Trainer(config(corpus, out, variant, fsdp, freeze))
    if mode == "straight":
        losses = [trainer.train_step()[0] for _ in range(6)]
    elif mode == "three":  # stopped after three steps of six: a checkpoint to resume elsewhere
        losses = [trainer.train_step()[0] for _ in range(3)]
    else:  # "split": three steps, a checkpoint, a fresh trainer resumed from it, three more
        losses = [trainer.train_step()[0] for _ in range(3)]
        trainer.save_checkpoint()
        torch.distributed.barrier()
        trainer = Trainer(config(corpus, out, variant, fsdp, freeze))
        trainer.load_checkpoint()
        losses += [trainer.train_step()[0] for _ in range(3)]
    trainer.save_checkpoint()
    state = trainer._gathered_bundle() if trainer.sharded else None  # every rank gathers; rank 0 keeps it
    if trainer.ranks.main:
        model = getattr(state, {"entropy": "entropy", "blt": "blt", "blt-d": "blt_d"}[variant]) if state else trainer.model
        torch.save({"losses": losses, "model": model.state_dict(), "world": trainer.ranks.world,
                    "sharded": trainer.sharded}, result)
    finish(trainer.ranks)


if __name__ == "__main__":
    main(*sys.argv[1:])
