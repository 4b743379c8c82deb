"""`bltbench train`: the entropy model, the BLT, and BLT-D (from BLT weights), on byte corpora.

AdamW with linear warmup and cosine decay to `min_lr_ratio * lr`, gradient clipping, periodic held-out
bits per byte, a checkpoint every `checkpoint_every` steps that `resume` continues bit-exactly on CPU
(model, optimizer, step and the one generator that draws data, block sizes and masks), bf16 autocast
on CUDA and plain fp32 on CPU. The output folder is a model bundle. Under torchrun the ranks split each
global batch and average gradients (`bltbench.training.distributed`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bltbench.atomic import write_text_atomic
from bltbench.errors import BltbenchError
from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.build import parse_dtype
from bltbench.model.bundle import ModelBundle
from bltbench.model.checkpoint import load_model, save_bundle
from bltbench.model.config import BLTConfig, preset
from bltbench.model.diffusion import BlockDiffusionBLT
from bltbench.model.entropy import EntropyModel
from bltbench.model.init import init_weights
from bltbench.training.corpus import read_documents
from bltbench.training.data import ByteStream, split_documents
from bltbench.training.distributed import agreed, barrier, from_environment, mean_over_ranks, shard
from bltbench.training.objective import DiffusionObjective, batch_patch_starts, diffusion_loss, next_byte_loss

VARIANTS = ("entropy", "blt", "blt-d")
CHECKPOINT = "checkpoint.pt"
SHARDED_CHECKPOINT = "checkpoint"  # a folder: every rank's shards (torch.distributed.checkpoint) + trainer.pt
TRAINER_STATE = "trainer.pt"


@dataclass
class TrainConfig:
    variant: str
    corpus: list[str]
    steps: int
    out: str
    preset: str = "tiny"
    init: str | None = None
    seq_len: int = 256
    batch_size: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_windows: int = 32
    checkpoint_every: int = 500
    heldout_fraction: float = 0.01
    doc_mode: str = "auto"
    seed: int = 0
    device: str = "cpu"
    eval_dtype: str = "fp32"  # the held-out evaluation's precision (autocast; master weights stay fp32)
    freeze: tuple[str, ...] = ()  # blt-d: components kept at their BLT values (encoder, global)
    warm_start: bool = False  # blt: start from the --init bundle's BLT weights and shape (preset unused)
    fsdp: bool = False  # under torchrun: shard weights, gradients and optimizer state (FSDP2) instead of DDP
    time_budget: float | None = None  # seconds: after `probe_steps`, `steps` shrinks to what fits
    probe_steps: int = 100  # the pace is measured over the last three quarters of these steps
    objective: DiffusionObjective = field(default_factory=DiffusionObjective)

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise BltbenchError(f"unknown variant {self.variant!r} (choose from {', '.join(VARIANTS)})")
        if self.time_budget is not None and self.time_budget <= 0:
            raise BltbenchError(f"time budget must be positive, got {self.time_budget}")
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < 16:
            raise BltbenchError("steps and batch size must be positive, and sequences at least 16 bytes")
        if self.variant in ("blt", "blt-d") and not self.init:
            need = "a trained entropy model" if self.variant == "blt" else "BLT weights"
            raise BltbenchError(f"--variant {self.variant} needs --init: a bundle with {need}")
        if self.warm_start and self.variant != "blt":
            raise BltbenchError("--warm-start continues a BLT: it needs --variant blt")
        parse_dtype(self.eval_dtype)
        unknown = set(self.freeze) - {"encoder", "global"}
        if unknown:
            raise BltbenchError(f"can only freeze encoder and global, not {', '.join(sorted(unknown))}")
        self.objective.validate()


def _drop_folder(folder: Path) -> None:
    """Remove a folder so that a kill midway leaves no half of it under its name (renamed aside first)."""
    if folder.exists():
        aside = folder.with_name(folder.name + ".old")
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)


def _replace_folder(new: Path, final: Path) -> None:
    """`new` in place of `final`: the old one renamed aside, the new one renamed in, then the old removed,
    so a kill at any point leaves a whole checkpoint under one of the two names."""
    aside = final.with_name(final.name + ".old")
    shutil.rmtree(aside, ignore_errors=True)
    if final.exists():
        final.rename(aside)
    new.rename(final)
    shutil.rmtree(aside, ignore_errors=True)


@dataclass
class EvalPoint:
    step: int
    train_loss: float
    heldout_bpb: float
    bytes_per_s: float
    extra: dict[str, float] = field(default_factory=dict)


def lr_at(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    floor = config.min_lr_ratio
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        config.validate()
        self.config = config
        self.device = torch.device(config.device)
        self.ranks = from_environment(self.device)
        if config.batch_size % self.ranks.world:
            raise BltbenchError(f"the global batch ({config.batch_size}) must split evenly over {self.ranks.world} "
                                "processes")
        if self.device.type == "cuda" and self.ranks.world > 1:
            self.device = torch.device("cuda", self.ranks.local_rank)
        docs = read_documents([Path(p) for p in config.corpus], config.doc_mode)
        train_docs, heldout_docs = split_documents(docs, config.heldout_fraction)
        if not heldout_docs:
            heldout_docs = train_docs[-1:]
        self.train_stream = ByteStream(train_docs)
        self.heldout = ByteStream(heldout_docs).windows(config.seq_len, config.eval_windows).to(self.device)
        self.init_source: str | None = None  # the resolved --init bundle (a bundled name becomes its folder)
        self.bundle, self.model = self._build()
        self.sharded = config.fsdp and self.ranks.world > 1
        if self.sharded:  # before the optimizer: it must hold the sharded parameters
            shard(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in self.params if p.dim() >= 2]
        no_decay = [p for p in self.params if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, betas=(0.9, 0.95),
        )
        self.parallel = None
        if self.ranks.world > 1 and not self.sharded:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.ranks.local_rank] if self.device.type == "cuda" else None
            self.parallel = DistributedDataParallel(self.model, device_ids=ids)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.wall_seconds = 0.0
        self.history: list[EvalPoint] = []

    # -- models ------------------------------------------------------------------------------------
    def _build(self) -> tuple[ModelBundle, torch.nn.Module]:
        c = self.config
        torch.manual_seed(c.seed)
        if c.variant == "entropy":
            config = preset(c.preset)
            model = EntropyModel(config.entropy)
            init_weights(model, c.seed)
            return ModelBundle(config, None, model, c.out, "bltbench"), model.to(self.device)
        base = load_model(c.init, "cpu")
        self.init_source = base.source
        if c.variant == "blt":
            base.require_entropy()
            if c.warm_start:  # the init bundle's BLT, its shape and patching: a new cycle from its weights
                config = base.config
                model = ByteLatentTransformer(config)
                model.load_state_dict(base.require_blt().state_dict())
            else:
                config = dataclasses.replace(preset(c.preset), patching=base.config.patching, entropy=base.config.entropy)
                model = ByteLatentTransformer(config)
                init_weights(model, c.seed)
            bundle = ModelBundle(config, model, base.entropy, c.out, "bltbench")
        else:
            blt = base.require_blt()
            model = BlockDiffusionBLT(base.config)
            missing, unexpected = model.load_state_dict(blt.state_dict(), strict=False)
            assert missing == ["mask_embedding.weight"] and not unexpected, (missing, unexpected)
            torch.nn.init.normal_(model.mask_embedding.weight, std=base.config.d_local ** -0.5)
            for name in c.freeze:
                parts = [model.local_encoder, model.encoder_hash_tok_embedding] if name == "encoder" else [model.global_transformer]
                for part in parts:
                    part.requires_grad_(False)
            bundle = ModelBundle(base.config, blt, base.entropy, c.out, "bltbench", model)
        for module in (bundle.entropy, bundle.blt):
            if module is not None and module is not model:
                module.to(self.device).eval().requires_grad_(False)
        return bundle, model.to(self.device)

    # -- one step ----------------------------------------------------------------------------------
    def _loss(self, batch: torch.Tensor, rows: slice) -> tuple[torch.Tensor, dict[str, float]]:
        """This rank's loss on its `rows` of the global `batch`."""
        c, b = self.config, self.bundle
        model = self.parallel or self.model  # across ranks, the data-parallel wrapper syncs gradients
        if c.variant == "entropy":
            ids = batch[rows]
            return next_byte_loss(model(ids), ids), {}
        if c.variant == "blt":
            ids = batch[rows]
            return next_byte_loss(model(ids, batch_patch_starts(b.entropy, b.config.patching, ids)), ids), {}
        # BLT-D draws its blocks and masks for the whole global batch on every rank (see diffusion_loss).
        starts = batch_patch_starts(b.entropy, b.config.patching, batch)
        return diffusion_loss(model, batch, starts, c.objective, self.generator,
                              rows=rows if self.ranks.world > 1 else None)

    def train_step(self) -> tuple[float, dict[str, float]]:
        c = self.config
        self.model.train()
        # Every rank draws the whole global batch (so every generator stays where one process's would)
        # and trains on its own rows.
        batch = self.train_stream.sample(c.batch_size, c.seq_len, self.generator).to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, c)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss, parts = self._loss(batch, self.ranks.rows(c.batch_size))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, c.grad_clip)
        self.optimizer.step()
        self.step += 1
        parts = {k: mean_over_ranks(v, self.ranks, self.device) for k, v in parts.items()}
        return mean_over_ranks(loss.item(), self.ranks, self.device), parts

    @torch.no_grad()
    def heldout_bpb(self) -> float:
        self.model.eval()
        b = self.bundle
        total, count = 0.0, 0
        dtype = parse_dtype(self.config.eval_dtype)
        for i in range(0, self.heldout.shape[0], self.config.batch_size):
            ids = self.heldout[i : i + self.config.batch_size]
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
                if self.config.variant == "entropy":
                    logits = self.model(ids)
                else:
                    logits = self.model(ids, batch_patch_starts(b.entropy, b.config.patching, ids))
            n = ids[:, 1:].numel()
            total += next_byte_loss(logits.float(), ids).item() * n
            count += n
        return total / count / math.log(2)

    # -- checkpoints ---------------------------------------------------------------------------------
    def _trainer_state(self) -> dict:
        return {"step": self.step, "generator": self.generator.get_state(),
                "history": [dataclasses.asdict(h) for h in self.history], "variant": self.config.variant,
                "wall_seconds": self.wall_seconds}

    def save_checkpoint(self) -> None:
        """Rank 0 writes (every rank holds the same model, optimizer and generator); a sharded model's
        ranks each write their shards. Either way the checkpoint replaces the previous one whole."""
        if self.sharded:
            self._save_sharded()
            return
        if not self.ranks.main:
            return
        out = Path(self.config.out)
        out.mkdir(parents=True, exist_ok=True)
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), **self._trainer_state()}
        tmp = out / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        tmp.replace(out / CHECKPOINT)
        _drop_folder(out / SHARDED_CHECKPOINT)  # superseded

    def _save_sharded(self) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        out = Path(self.config.out)
        tmp, final = out / (SHARDED_CHECKPOINT + ".tmp"), out / SHARDED_CHECKPOINT
        if self.ranks.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier(self.ranks)
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp)
        if self.ranks.main:
            torch.save(self._trainer_state(), tmp / TRAINER_STATE)
            _replace_folder(tmp, final)
            (out / CHECKPOINT).unlink(missing_ok=True)  # superseded
        barrier(self.ranks)

    def load_checkpoint(self) -> None:
        out = Path(self.config.out)
        # trainer.pt is written last, so a folder holding it is whole; a kill while one checkpoint replaced
        # another leaves the new one as .tmp or the previous one as .old
        sharded = [f for f in (out / SHARDED_CHECKPOINT, out / (SHARDED_CHECKPOINT + ".tmp"),
                               out / (SHARDED_CHECKPOINT + ".old")) if (f / TRAINER_STATE).is_file()]
        single = out / CHECKPOINT
        if sharded and (not single.exists() or (sharded[0] / TRAINER_STATE).stat().st_mtime > single.stat().st_mtime):
            state = self._load_sharded(sharded[0])
        else:
            path = out / CHECKPOINT
            if self.sharded and path.exists():
                raise BltbenchError(f"{path} was written without --fsdp: resume it without --fsdp (a sharded "
                                    "checkpoint resumes either way)")
            try:
                state = torch.load(path, map_location=self.device, weights_only=False)
            except (OSError, RuntimeError, EOFError) as exc:
                raise BltbenchError(f"cannot resume from {path}: {str(exc).splitlines()[0]}") from None
            self._check_variant(state, path)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step = state["step"]
        self.wall_seconds = state.get("wall_seconds", 0.0)
        self.history = [EvalPoint(**h) for h in state["history"]]

    def _check_variant(self, state: dict, path: Path) -> None:
        if state.get("variant") != self.config.variant:
            raise BltbenchError(f"{path} is a {state.get('variant')} checkpoint, not {self.config.variant}")

    def _load_sharded(self, folder: Path) -> dict:
        """A sharded checkpoint into this run's model and optimizer, sharded or not, on any number of ranks."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        try:
            state = torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError) as exc:
            raise BltbenchError(f"cannot resume from {folder}: {str(exc).splitlines()[0]}") from None
        self._check_variant(state, folder)
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        tensors = {"model": model_state, "optimizer": optimizer_state}
        with warnings.catch_warnings():  # one process reading shards is intended, not a misconfiguration
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(tensors, checkpoint_id=folder)
        set_state_dict(self.model, self.optimizer, model_state_dict=tensors["model"],
                       optim_state_dict=tensors["optimizer"])
        return state

    def export(self, dtype: torch.dtype = torch.bfloat16) -> Path:
        """Write the bundle: trained component plus what it was built on, and a training log
        (`training-<variant>.json`: the config as run, with the resolved step count, and the history;
        a warm start nests the log of the cycle it continued under "continues")."""
        self.model.eval()
        bundle = self._gathered_bundle() if self.sharded else self.bundle  # every rank takes part
        if not self.ranks.main:
            barrier(self.ranks)
            return Path(self.config.out)
        log_name = f"training-{self.config.variant}.json"
        earlier = None
        if self.config.warm_start and (Path(self.init_source) / log_name).is_file():
            earlier = json.loads((Path(self.init_source) / log_name).read_text())
        folder = save_bundle(bundle, self.config.out, dtype, keep=[CHECKPOINT, SHARDED_CHECKPOINT, log_name])
        log = {
            "config": dataclasses.asdict(self.config),
            "steps_done": self.step,
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "wall_seconds": round(self.wall_seconds, 1),
            "history": [dataclasses.asdict(h) for h in self.history],
        }
        if earlier is not None:
            log["continues"] = earlier
        write_text_atomic(folder / log_name, json.dumps(log, indent=2) + "\n")
        barrier(self.ranks)  # the others wait for the bundle before they end
        return folder

    def _gathered_bundle(self) -> ModelBundle:
        """The bundle with the trained component as one plain module, its full weights gathered from the
        ranks (on rank 0; a collective every rank calls)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.ranks.main:  # the full weights land on rank 0 only
            return self.bundle
        config = self.bundle.config
        plain = {"entropy": lambda: EntropyModel(config.entropy), "blt": lambda: ByteLatentTransformer(config),
                 "blt-d": lambda: BlockDiffusionBLT(config)}[self.config.variant]()
        plain.load_state_dict(full)
        field_name = {"entropy": "entropy", "blt": "blt", "blt-d": "blt_d"}[self.config.variant]
        return dataclasses.replace(self.bundle, **{field_name: plain})

    # -- the loop ----------------------------------------------------------------------------------
    def _fit_to_budget(self, first_step: int, started: float, probe_started: float) -> None:
        """Shrink `steps` so the run ends inside the time budget, from the pace of the probe steps.

        Measured after the first few steps (compilation and allocator warm-up are excluded) and
        no later than the end of warmup when warmup >= probe_steps, so the cosine schedule is set before it starts.
        The resolved step count is logged in the history so a rerun can name it with --steps.
        """
        c = self.config
        now = time.perf_counter()
        per_step = (now - probe_started) / max(1, self.step - first_step - c.probe_steps // 4)
        left = c.time_budget - (now - started)
        fit = self.step + int(0.9 * left / per_step)
        c.steps = agreed(max(self.step, min(c.steps, fit)), self.ranks, self.device)

    def run(self, on_step: Callable[[int, float, float], None] | None = None,
            on_eval: Callable[[EvalPoint], None] | None = None) -> list[EvalPoint]:
        c = self.config
        window_bytes, window_start = 0, time.perf_counter()
        started, probe_started, first_step = window_start, window_start, self.step
        loss = float("nan")
        parts: dict[str, float] = {}
        while self.step < c.steps:
            loss, parts = self.train_step()
            if c.time_budget is not None:
                if self.step == first_step + c.probe_steps // 4:
                    probe_started = time.perf_counter()
                elif self.step == first_step + c.probe_steps:
                    self._fit_to_budget(first_step, started, probe_started)
            window_bytes += c.batch_size * c.seq_len  # the global batch: every rank's bytes
            speed = window_bytes / max(1e-9, time.perf_counter() - window_start)
            if on_step:
                on_step(self.step, loss, speed)
            if (self.step % c.eval_every == 0 or self.step == c.steps) and (self.ranks.main or self.sharded):
                point = EvalPoint(self.step, loss, self.heldout_bpb(), speed, parts)  # sharded: every rank's forward
                self.history.append(point)
                if on_eval and self.ranks.main:
                    on_eval(point)
                window_bytes, window_start = 0, time.perf_counter()
            if self.step % c.checkpoint_every == 0 or self.step == c.steps:
                self.save_checkpoint()
        self.wall_seconds += time.perf_counter() - started
        return self.history
