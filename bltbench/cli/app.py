"""The `bltbench` command line. Every user error ends as one line on stderr and exit status 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from bltbench.errors import BltbenchError

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
INVOKED_WITH: list[str] = []  # the arguments `main` was given (train --nproc relaunches them under torchrun)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings=HELP_OPTIONS,
                  help="Measure what byte-level generation with BLT, BLT-D, BLT-S and BLT-DV costs.")
bench_app = typer.Typer(no_args_is_help=True, context_settings=HELP_OPTIONS,
                        help="Speed benchmarks, measured side by side in one run.")
app.add_typer(bench_app, name="bench")


def _print_version(value: bool) -> None:
    if value:
        from bltbench import __version__

        typer.echo(f"bltbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_print_version,
                                       help="Print the version and exit.")) -> None:
    """Measure what byte-level generation with BLT, BLT-D, BLT-S and BLT-DV costs."""


def _console():
    """Rich console; wide when piped, so tables are not cut to 80 columns."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def _quiet_console():
    """Ranks other than 0 of a data-parallel run print nothing."""
    import io

    from rich.console import Console

    return Console(file=io.StringIO())


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BltbenchError(f"device {device!r} asked for, but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise BltbenchError(f"unknown device {device!r} (cpu, cuda, cuda:N or auto)")
    return device


def _steps(compile: bool) -> str:
    return "compiled" if compile else "eager"


DTYPE_HELP = "fp32, bf16 or fp16: weights and activations (the paper proxy stays priced at 16 bits)."
ENTROPY_HELP = ("An entropy model to patch with, replacing the one the model folder holds or sits beside: an official "
                "entropy_model/ or blt-entropy folder, a bltbench bundle or a transformers BLT folder.")
BUCKETS_HELP = "Resize a random preset's hash tables to this many rows (dense dims stay; pricing reads no tables)."


PROFILE_HELP = ("A device profile from bench device for the roofline's predicted_decode_s (default: this machine's, "
                "measured once and cached); off: no prediction.")


def _roofline(bundle, device: str, device_profile: str | None, specs):
    """The roofline for a bundle at its dtype on this device, or None when switched off; the methods'
    weights are checked first, so a missing one is the error a user sees."""
    from bltbench.instrumentation.device_profile import profile_for
    from bltbench.instrumentation.roofline import Roofline

    for spec in specs:
        spec.validate(bundle)
        bundle.weights(spec.runs_on)
    if device_profile == "off":
        return None
    dtype = bundle.dtype
    from rich.console import Console

    with Console(stderr=True).status("measuring this machine's device profile for these shapes (once; cached)"):
        profile = profile_for(bundle, device, device_profile)
    return Roofline(bundle.config, profile, dtype)


def _load(model: str, device: str, dtype: str | None, hash_buckets: int | None = None, weights=None,
          entropy_model: str | None = None):
    """The one way commands load a bundle: in the asked dtype, only the weights the methods run on."""
    from bltbench.model.checkpoint import load_model

    return load_model(model, device, dtype, hash_buckets, weights, entropy_model)


@app.command("generate")
def generate_cmd(
    model: str = typer.Option(..., "--model", help="random:PRESET[:SEED], a bundled model name, or a checkpoint folder."),
    entropy_model: Optional[str] = typer.Option(None, "--entropy-model", help=ENTROPY_HELP),
    method: str = typer.Option("blt", "--method", help="blt, blt-s, blt-d or blt-dv (or blt-s-K, blt-d-B, blt-dv-B)."),
    recompute: bool = typer.Option(False, "--recompute", help="Official-style: re-patch and rerun the whole model per byte."),
    k: Optional[int] = typer.Option(None, "--k", help="BLT-S draft length (default 8)."),
    block: Optional[int] = typer.Option(None, "--block", help="BLT-D / BLT-DV block size: 4, 8 or 16 (default 8)."),
    sampler_name: Optional[str] = typer.Option(None, "--sampler", help="BLT-D unmasking rule: confidence (default), entropy or eb."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Confidence threshold (confidence sampler; default 0.7)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="Entropy budget in nats (entropy / eb samplers; default 1.5)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Override the weights: blt or blt-d."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Prompt text (UTF-8)."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="Read the prompt's raw bytes from a file."),
    max_bytes: int = typer.Option(256, "--max-bytes", help="Byte budget; generation also stops at EOS."),
    stop: list[str] = typer.Option([], "--stop", help="Stop string (repeatable): the output ends before it."),
    seed: int = typer.Option(0, "--seed"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    top_k: Optional[int] = typer.Option(None, "--top-k"),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    project: Optional[str] = typer.Option(None, "--project", help="Also price the NFE trace as these presets (comma-separated, e.g. blt-1b,blt-7b)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    compile: bool = typer.Option(False, "--compile", help="Run one-position steps through torch.compile (CUDA graphs on a GPU)."),
    dtype: str = typer.Option("fp32", "--dtype", help=DTYPE_HELP),
    hash_buckets: Optional[int] = typer.Option(None, "--hash-buckets", help=BUCKETS_HELP),
    device_profile: Optional[str] = typer.Option(None, "--device-profile", help=PROFILE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Generate bytes from a prompt, metered."""
    from bltbench.cli.prompts import read_prompt
    from bltbench.decoding.methods import method_with_options
    from bltbench.decoding.sampling import SamplingConfig
    from bltbench.instrumentation.measure import measure
    from bltbench.model.ids import encode_prompt

    spec = method_with_options(method, recompute, weights, k, block, sampler_name, alpha, gamma)
    if max_bytes < 0:
        raise BltbenchError(f"--max-bytes must be >= 0, got {max_bytes}")
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    sampling.validate()
    projections = _projections(project)
    data = read_prompt(prompt, prompt_file)
    dev = _device(device)
    bundle = _load(model, dev, dtype, hash_buckets, (spec.runs_on,), entropy_model)
    roofline = _roofline(bundle, dev, device_profile, [spec])
    result = measure(spec, bundle, encode_prompt(data), max_bytes, sampling, dev, projections, stop=tuple(stop),
                     steps=_steps(compile), roofline=roofline)
    if as_json:
        record = {"model": bundle.source, "hash_buckets": bundle.config.hash_buckets, "recompute": recompute,
                  **result.to_json()}
        typer.echo(json.dumps(record, ensure_ascii=False))
    else:
        sys.stdout.write(result.generation.text + "\n")


def _projections(project: str | None) -> tuple[str, ...]:
    from bltbench.instrumentation.params import profile

    names = tuple(n.strip() for n in (project or "").split(",") if n.strip())
    for name in names:
        profile(name)  # fails with one line on an unknown name
    return names


@app.command("compare")
def compare_cmd(
    model: str = typer.Option(..., "--model"),
    entropy_model: Optional[str] = typer.Option(None, "--entropy-model", help=ENTROPY_HELP),
    methods: str = typer.Option("blt,blt-s-8,blt-s-16", "--methods",
                                help="Comma-separated: blt, blt-s-K, blt-d-B[@confidence=A|@entropy=G|@eb=G], blt-dv-B."),
    sampler_name: str = typer.Option("confidence", "--sampler", help="Default BLT-D sampler for names without one."),
    alpha: float = typer.Option(0.7, "--alpha"),
    gamma: float = typer.Option(1.5, "--gamma"),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts", help="One prompt per line, or JSONL with 'prompt'."),
    max_bytes: int = typer.Option(128, "--max-bytes"),
    temperature: float = typer.Option(0.0, "--temperature"),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    seed: int = typer.Option(0, "--seed"),
    project: Optional[str] = typer.Option(None, "--project", help="Also price as these presets, e.g. blt-1b,blt-7b."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write the table as CSV."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the table as JSON."),
    device: str = typer.Option("cpu", "--device"),
    compile: bool = typer.Option(False, "--compile", help="Run one-position steps through torch.compile (CUDA graphs on a GPU)."),
    repeats: int = typer.Option(1, "--repeats", help="Time each (prompt, method) this many times, interleaved; medians."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Fix torch's thread count (default: torch's)."),
    dtype: str = typer.Option("fp32", "--dtype", help=DTYPE_HELP),
    hash_buckets: Optional[int] = typer.Option(None, "--hash-buckets", help=BUCKETS_HELP),
    device_profile: Optional[str] = typer.Option(None, "--device-profile", help=PROFILE_HELP),
) -> None:
    """Run several methods on the same prompts and compare NFEs, bandwidth, exact match and decode speed
    (prefill apart; methods interleaved A B C A B C, each sample the median of its repeats)."""
    from bltbench.decoding.sampling import SamplingConfig
    from bltbench.instrumentation.compare import DEFAULT_PROMPTS, compare, parse_methods, read_prompts

    from bltbench.decoding.diffusion import DiffusionConfig

    specs = parse_methods(methods, DiffusionConfig(8, sampler_name, alpha, gamma))
    if max_bytes < 1:
        raise BltbenchError(f"--max-bytes must be >= 1, got {max_bytes}")
    if repeats < 1:
        raise BltbenchError(f"--repeats must be >= 1, got {repeats}")
    n_threads = _threads(threads)
    sampling = SamplingConfig(temperature=temperature, top_p=top_p, seed=seed)
    sampling.validate()
    projections = _projections(project)
    prompts = read_prompts(prompts_file) if prompts_file is not None else list(DEFAULT_PROMPTS)
    dev = _device(device)
    bundle = _load(model, dev, dtype, hash_buckets, {spec.runs_on for spec in specs}, entropy_model)
    for spec in specs:
        roofline = _roofline(bundle, dev, device_profile, [spec])
    console = _console()
    with console.status("comparing") as status:
        rows = compare(bundle, specs, prompts, max_bytes, sampling, dev, projections, status.update, _steps(compile),
                       repeats, roofline)
    console.print(_compare_table(rows, bundle.source, len(prompts), max_bytes, projections))
    console.print(f"decode speed: prefill apart, median over prompts (IQR beside it), each prompt the median of "
                  f"{repeats} interleaved repeat{'s' if repeats > 1 else ''}; {dev}, {n_threads} threads, "
                  f"{_dtype_of(bundle)}")
    _write_rows(rows, csv_path, json_path, console)


def _compare_table(rows, source: str, n_prompts: int, max_bytes: int, projections: tuple[str, ...]):
    from rich.table import Table

    def fmt(value, spec: str, none: str = "-") -> str:
        return none if value is None else format(value, spec)

    table = Table(title=f"{source}: {n_prompts} prompts, up to {max_bytes} bytes each")
    for col in ("method", "bytes", "NFE/B ent", "NFE/B enc", "NFE/B glob", "NFE/B dec", "MB/B paper",
                "MB/B ext", "MB/B +KV", "vs blt", "exact", "B/s", "ms/B (IQR)", "TTFT ms", "roofline ms/B",
                "roofline / measured", "speedup: measured", "roofline", "proxy", "B/dec pass", "B/verify"):
        table.add_column(col, justify="right")
    for name in projections:
        table.add_column(f"GB/B {name}", justify="right")
        table.add_column(f"vs blt {name}", justify="right")
    for r in rows:
        cells = [r.method, str(r.bytes)] + [fmt(r.nfe_per_byte[c], ".3f") for c in ("entropy", "encoder", "global", "decoder")]
        cells += [fmt(r.gb_per_byte * 1e3, ".3f"), fmt(r.gb_per_byte_ext * 1e3, ".3f"), fmt(r.gb_per_byte_kv * 1e3, ".3f"),
                  fmt(None if r.reduction is None else -r.reduction, "+.1%"), fmt(r.exact_match, ".0%"),
                  fmt(r.bytes_per_s, ".1f"), f"{r.ms_per_byte:.2f} ({r.ms_per_byte_iqr:.2f})", fmt(r.ttft_ms, ".1f"),
                  fmt(r.predicted_ms_per_byte, ".2f"), fmt(r.roofline_fraction, ".2f"), fmt(r.measured_speedup, ".2f"), fmt(r.roofline_speedup, ".2f"),
                  fmt(r.proxy_speedup, ".2f"), fmt(r.bytes_per_decoder_pass, ".2f"), fmt(r.accepted_per_verify, ".2f")]
        for name in projections:
            p = r.projected[name]
            cells += [fmt(p["gb_per_byte"], ".3f"), fmt(None if p["reduction"] is None else -p["reduction"], "+.1%")]
        table.add_row(*cells)
    return table


def _write_rows(rows, csv_path: Path | None, json_path: Path | None, console) -> None:
    import csv
    import io

    from bltbench.atomic import write_text_atomic
    from bltbench.instrumentation.compare import rows_as_records

    records = rows_as_records(rows)
    if csv_path is not None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
        console.print(f"wrote {write_text_atomic(csv_path, buffer.getvalue())}")
    if json_path is not None:
        console.print(f"wrote {write_text_atomic(json_path, json.dumps(records, indent=2) + chr(10))}")


def _data_dir(data_dir: Optional[Path]) -> Path:
    import os

    chosen = data_dir or (Path(os.environ["BLTBENCH_DATA"]) if os.environ.get("BLTBENCH_DATA") else None)
    if chosen is None:
        raise BltbenchError("no data directory: set BLTBENCH_DATA or pass --data-dir")
    if not chosen.is_dir():
        raise BltbenchError(f"data directory {chosen} does not exist")
    return chosen


@app.command("prepare-corpus")
def prepare_corpus_cmd(
    out: Path = typer.Option(Path("build/corpus"), "--out"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Defaults to $BLTBENCH_DATA."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Lay out the bundled models' training corpus (news, translation pairs, stdlib code, MBPP train)."""
    from bltbench.training.corpus import build_corpus

    counts = build_corpus(_data_dir(data_dir), out, seed)
    typer.echo(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@app.command("train")
def train_cmd(
    variant: str = typer.Option(..., "--variant", help="entropy, blt or blt-d."),
    corpus: list[Path] = typer.Option(..., "--corpus", help="Text folders or files (repeat the option)."),
    steps: int = typer.Option(..., "--steps"),
    out: Path = typer.Option(..., "--out", help="Output bundle folder (checkpoints go there too)."),
    preset_name: str = typer.Option("tiny", "--preset"),
    init: Optional[str] = typer.Option(None, "--init", help="Bundle to start from (entropy model for blt, BLT for blt-d)."),
    seq_len: int = typer.Option(256, "--seq-len"),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = typer.Option(2e-3, "--lr"),
    warmup: int = typer.Option(100, "--warmup"),
    eval_every: int = typer.Option(250, "--eval-every"),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every"),
    doc_mode: str = typer.Option("auto", "--doc-mode", help="auto (.txt/.jsonl per line, else per file), line or file."),
    freeze: str = typer.Option("", "--freeze", help="blt-d: comma-separated parts kept at BLT values (encoder,global)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint in --out."),
    warm_start: bool = typer.Option(
        False, "--warm-start", help="blt: start from the --init bundle's BLT weights and shape (--preset is not "
        "used), with a new optimizer and schedule. A --resume of such a run passes --warm-start again."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device"),
    dtype: str = typer.Option("fp32", "--dtype", help="The held-out evaluation's precision (autocast); training keeps fp32 weights."),
    time_budget: Optional[float] = typer.Option(
        None, "--time-budget", help="Seconds: fewer steps than --steps if their measured pace needs it."),
    nproc: int = typer.Option(1, "--nproc", help="Data-parallel processes on this machine (runs torchrun on "
                              "loopback; --batch-size is the global batch, split over them)."),
    fsdp: bool = typer.Option(False, "--fsdp", help="Over several processes, shard weights, gradients and optimizer "
                              "state (FSDP2) instead of replicating them; checkpoints are then sharded."),
) -> None:
    """Train the entropy model, a BLT, or BLT-D (from BLT weights)."""
    import os

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from bltbench.training.distributed import finish, launch
    from bltbench.training.trainer import TrainConfig, Trainer

    if nproc < 1:
        raise BltbenchError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 and batch_size % nproc:
        raise BltbenchError(f"the global batch ({batch_size}) must split evenly over {nproc} processes")
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        argv = list(INVOKED_WITH)
        i = next(j for j, a in enumerate(argv) if a == "--nproc" or a.startswith("--nproc="))
        del argv[i : i + (1 if "=" in argv[i] else 2)]
        code = launch(nproc, argv)
        if code:
            raise BltbenchError(f"torchrun with {nproc} processes exited with status {code}")
        return

    config = TrainConfig(
        variant=variant, corpus=[str(p) for p in corpus], steps=steps, out=str(out), preset=preset_name, init=init,
        seq_len=seq_len, batch_size=batch_size, lr=lr, warmup=warmup, eval_every=eval_every,
        checkpoint_every=checkpoint_every, doc_mode=doc_mode, seed=seed, device=_device(device), eval_dtype=dtype,
        freeze=tuple(x.strip() for x in freeze.split(",") if x.strip()), time_budget=time_budget,
        warm_start=warm_start, fsdp=fsdp,
    )
    trainer = Trainer(config)
    if resume:
        trainer.load_checkpoint()
    console = _console() if trainer.ranks.main else _quiet_console()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[speed]:.0f} B/s"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"train {variant}", total=steps, completed=trainer.step, loss=float("nan"), speed=0.0)
        trainer.run(
            on_step=lambda step, loss, speed: progress.update(
                task, completed=step, total=config.steps, loss=loss, speed=speed),
            on_eval=lambda p: progress.console.print(
                f"step {p.step}: train loss {p.train_loss:.4f}, held-out {p.heldout_bpb:.4f} bpb, {p.bytes_per_s:.0f} B/s"
                + "".join(f", {k} {v:.4f}" for k, v in p.extra.items())),
        )
    if config.steps != steps:
        console.print(f"the time budget fitted {config.steps} steps (of --steps {steps})")
    folder = trainer.export()
    console.print(f"wrote {folder}" + (f" ({trainer.ranks.world} processes)" if trainer.ranks.world > 1 else ""))
    finish(trainer.ranks)


@app.command("calibrate")
def calibrate_cmd(
    model: str = typer.Option(..., "--model", help="A bltbench bundle folder (its config is updated in place)."),
    target_mean: float = typer.Option(4.0, "--target-mean"),
    max_patch: Optional[int] = typer.Option(8, "--max-patch"),
    corpus: list[Path] = typer.Option(..., "--corpus"),
    limit_bytes: int = typer.Option(200_000, "--limit-bytes", help="Calibrate on at most this much held-out text."),
    heldout_fraction: float = typer.Option(0.01, "--heldout-fraction"),
) -> None:
    """Set the entropy threshold so the mean patch length on held-out text hits the target."""
    import dataclasses

    from bltbench.model.checkpoint import load_model, save_bundle
    from bltbench.training.calibrate import calibrate_threshold, document_entropies
    from bltbench.training.corpus import read_documents
    from bltbench.training.data import split_documents

    bundle = load_model(model)
    if bundle.format != "bltbench":
        raise BltbenchError("calibrate writes the threshold into a bltbench bundle folder")
    entropy = bundle.require_entropy()
    if entropy is None:
        raise BltbenchError("calibration needs an entropy model")
    _, heldout = split_documents(read_documents(corpus), heldout_fraction)
    docs, total = [], 0
    for doc in heldout:
        if total >= limit_bytes:
            break
        docs.append(doc[: limit_bytes - total])
        total += len(docs[-1])
    threshold, achieved = calibrate_threshold(document_entropies(entropy, docs), target_mean, max_patch,
                                              bundle.config.patching.monotonic)
    bundle.config.patching = dataclasses.replace(bundle.config.patching, threshold=threshold, max_patch_length=max_patch)
    save_bundle(bundle, model, keep=["checkpoint.pt", *(p.name for p in Path(model).glob("training-*.json"))])
    typer.echo(f"threshold {threshold:.6f}: mean patch length {achieved:.3f} on {total} held-out bytes (target {target_mean})")


@app.command("eval-bpb")
def eval_bpb_cmd(
    model: str = typer.Option(..., "--model"),
    entropy_model: Optional[str] = typer.Option(None, "--entropy-model", help=ENTROPY_HELP),
    data: list[Path] = typer.Option(..., "--data", help="Text files or folders (.txt/.jsonl: a document per line; else per file)."),
    weights: str = typer.Option("blt", "--weights", help="blt, blt-d (its causal path) or entropy."),
    window: int = typer.Option(512, "--window"),
    as_json: bool = typer.Option(False, "--json"),
    device: str = typer.Option("cpu", "--device"),
    dtype: str = typer.Option("fp32", "--dtype", help=DTYPE_HELP),
) -> None:
    """Bits per byte of a bundle's BLT or BLT-D causal path (or of its entropy model), the mean patch
    length its patcher cuts on the same text, and the share of bytes predicted with top-1 probability
    above 0.5 / 0.7 / 0.9 (what a confidence sampler at that alpha can commit without a fallback)."""
    from bltbench.training.calibrate import document_entropies, mean_patch_length
    from bltbench.training.corpus import read_documents
    from bltbench.training.evaluate import score_text

    for path in data:
        if not path.exists():
            raise BltbenchError(f"data file {path} does not exist")
    if weights not in ("blt", "blt-d", "entropy"):
        raise BltbenchError(f"unknown weights {weights!r} (blt, blt-d or entropy)")
    bundle = _load(model, _device(device), dtype, None, () if weights == "entropy" else (weights,), entropy_model)
    docs = read_documents(data)
    entropy = bundle.require_entropy()
    if weights == "entropy":
        if entropy is None:
            raise BltbenchError(f"model {bundle.source} holds no entropy model")
        score = score_text(entropy, None, None, docs, window)
    else:
        score = score_text(bundle.weights(weights), entropy, bundle.config.patching, docs, window)
    mean_patch = None
    if entropy is not None and bundle.config.patching.mode == "entropy":
        mean_patch = mean_patch_length(bundle.config.patching, document_entropies(entropy, docs, window))
    shares = {str(level): share for level, share in score.confident_share.items()}
    if as_json:
        typer.echo(json.dumps({"bpb": score.bpb, "bytes": score.bytes, "mean_patch_length": mean_patch,
                               "confident_share": shares}))
    else:
        patch = "" if mean_patch is None else f", mean patch length {mean_patch:.2f}"
        confident = ", ".join(f"p > {level}: {share:.1%}" for level, share in shares.items())
        typer.echo(f"{score.bpb:.4f} bits per byte over {score.bytes} bytes{patch}; top-1 {confident} of bytes")


@app.command("inspect")
def inspect_cmd(
    model: str = typer.Argument(..., help="random:PRESET[:SEED], a bundled model name, or a checkpoint folder."),
    entropy_model: Optional[str] = typer.Option(None, "--entropy-model", help=ENTROPY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the inspection as JSON."),
) -> None:
    """What a model is as bltbench runs it: the format detected, every setting it runs with, parameters per
    component as the bandwidth model prices them, and which methods it can run (and what the others lack)."""
    import dataclasses
    import json

    from bltbench.instrumentation.params import component_params

    bundle = _load(model, "cpu", None, entropy_model=entropy_model)
    config = bundle.config
    params = component_params(config, bundle.source)
    present = {"blt": bundle.blt is not None, "blt-d": bundle.blt_d is not None, "entropy": bundle.entropy is not None}
    needs_entropy = config.patching.mode == "entropy"
    methods = {}
    for method, weights in (("blt", "blt"), ("blt-s", "blt"), ("blt-d", "blt-d"), ("blt-dv", "blt-d")):
        missing = [what for what, ok in ((f"{weights} weights", present[weights]),
                                         ("an entropy model", present["entropy"] or not needs_entropy)) if not ok]
        methods[method] = "runs" if not missing else "needs " + " and ".join(missing)
    report = {
        "source": bundle.source,
        "format": bundle.format,
        "components": [name for name, ok in present.items() if ok],
        "entropy_model": bundle.entropy_source or (bundle.source if present["entropy"] else None),
        "settings": dataclasses.asdict(config),
        "file_settings": bundle.file_settings,
        "parameters": {"entropy": params.entropy, "encoder": params.encoder, "global": params.global_,
                       "decoder": params.decoder, "per_call": params.per_call},
        "methods": methods,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return

    def flat(prefix: str, value) -> list[tuple[str, str]]:
        if isinstance(value, dict):
            return [row for k, v in value.items() for row in flat(f"{prefix}{k}.", v)]
        return [(prefix[:-1], json.dumps(value) if isinstance(value, (list, tuple, bool)) or value is None else str(value))]

    typer.echo(f"{bundle.source}: {bundle.format} format, components {', '.join(report['components'])}")
    if bundle.entropy_source:
        typer.echo(f"entropy model from {bundle.entropy_source}")
    typer.echo("settings it runs with:")
    for key, value in flat("", report["settings"]):
        typer.echo(f"  {key} = {value}")
    if bundle.file_settings:
        honoured = [row for row in bundle.file_settings if row["kind"] in ("mapped", "checked")]
        typer.echo(f"settings in the checkpoint's files: {len(bundle.file_settings)}, {len(honoured)} of them change "
                   "inference and are honoured as the official code honours them:")
        for row in honoured:
            how = "read into" if row["kind"] == "mapped" else "runs when"
            typer.echo(f"  {row['setting']} = {json.dumps(row['value'])}  ({how} {row['note']})")
        rest = len(bundle.file_settings) - len(honoured)
        typer.echo(f"  and {rest} irrelevant to inference (training, logging, parallelism; --json gives each reason)")
    typer.echo("dense parameters per component (what the bandwidth model prices; embedding tables apart):")
    for key in ("entropy", "encoder", "global", "decoder"):
        typer.echo(f"  {key}: {report['parameters'][key]:,} (read per call: {params.per_call[key]:,})")
    typer.echo("methods:")
    for method, state in methods.items():
        typer.echo(f"  {method}: {state}")


@app.command("run")
def run_cmd(
    suite_path: Path = typer.Argument(Path("default"), metavar="[SUITE]",
                                      help="A suite file, or a shipped suite's name (bltbench suites lists them)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default results/<suite>-<time>)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many samples per task."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Defaults to $BLTBENCH_DATA."),
    device: str = typer.Option("cpu", "--device"),
    compile: bool = typer.Option(False, "--compile", help="Run one-position steps through torch.compile (CUDA graphs on a GPU)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Time each (sample, method) this many times, interleaved (overrides the suite's timing)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Fix torch's thread count (overrides the suite's timing)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help=DTYPE_HELP + " Overrides the suite's dtype."),
    hash_buckets: Optional[int] = typer.Option(None, "--hash-buckets", help=BUCKETS_HELP + " Overrides the suite's."),
    entropy_model: Optional[str] = typer.Option(None, "--entropy-model", help=ENTROPY_HELP + " Overrides the suite's."),
    device_profile: Optional[str] = typer.Option(None, "--device-profile", help=PROFILE_HELP),
    executor: Optional[str] = typer.Option(None, "--executor", help="Where work units run: serial (this process; default) or ray."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join, HOST:PORT (default: a local Ray started for the run)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray workers, each loading the model once (default: cores / threads, or the cluster's GPUs)."),
    gpus_per_worker: Optional[float] = typer.Option(None, "--gpus-per-worker", help="GPUs each Ray worker takes (default 1 with --device cuda, else 0)."),
) -> None:
    """Sweep a suite's methods over its tasks; records, summary and where they went."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import dataclasses

    from bltbench.model.build import parse_dtype
    from bltbench.runner.executors import executor_for
    from bltbench.runner.suite import Timing, load_suite
    from bltbench.runner.sweep import run_suite

    if limit is not None and limit < 1:
        raise BltbenchError(f"--limit must be positive, got {limit}")
    if resume and out is None:
        raise BltbenchError("--resume needs --out: the run folder to continue")
    for name, value in (("--repeats", repeats), ("--threads", threads)):
        if value is not None and value < 1:
            raise BltbenchError(f"{name} must be >= 1, got {value}")
    suite = load_suite(suite_path)
    if dtype is not None:
        parse_dtype(dtype)
    if hash_buckets is not None and hash_buckets < 1:
        raise BltbenchError(f"--hash-buckets must be >= 1, got {hash_buckets}")
    # what changes the model changes the run: an override of what the suite says is part of the suite a
    # resume must match (one restating the suite's value, or its default, changes nothing)
    same_dtype = dtype is not None and parse_dtype(dtype) == parse_dtype(suite.dtype)
    overrides = {k: v for k, v in (("dtype", None if same_dtype else dtype), ("hash_buckets", hash_buckets),
                                   ("entropy_model", entropy_model))
                 if v is not None and v != getattr(suite, k)}
    if overrides:
        suite = dataclasses.replace(suite, **overrides, source={**suite.source, **overrides})
    if repeats is not None or threads is not None:
        suite = dataclasses.replace(suite, timing=Timing(repeats or suite.timing.repeats, threads or suite.timing.threads))
    runner = executor_for(suite, executor, address, workers, gpus_per_worker)
    folder = out or Path("results") / f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    console = _console()
    sweep = lambda on_sample, on_plan: run_suite(  # noqa: E731
        suite, folder, limit, resume, _device(device), str(data_dir) if data_dir else None,
        on_sample=on_sample, on_plan=on_plan, compile=compile, device_profile=device_profile, executor=runner)
    if console.is_terminal:
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[last]}"))
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task(f"run {suite.name}", total=None, last="")
            result = sweep(lambda what: progress.update(bar, advance=1, last=what),
                           lambda total: progress.update(bar, total=total))
    else:  # piped or logged: a line now and then, with an ETA, instead of a bar nobody sees
        log = ProgressLog(f"run {suite.name}", lambda line: print(line, file=sys.stderr, flush=True))
        result = sweep(log.advance, log.plan)
        log.finish()
    console.print(f"{result.written} samples written, {result.skipped} already done")
    console.print(f"results: {folder / 'records.jsonl'}")
    console.print(f"summary: {folder / 'summary.json'} and {folder / 'summary.csv'}")
    console.print(f"report: bltbench report {folder}")


class ProgressLog:
    """Progress as periodic log lines (at most one per `every_s`, and the last), each with an ETA."""

    def __init__(self, title: str, emit, every_s: float = 10.0) -> None:
        import time

        self.title, self.emit, self.every_s = title, emit, every_s
        self.clock = time.monotonic
        self.start = self.last_line = self.clock()
        self.total: int | None = None
        self.done = 0

    def plan(self, total: int) -> None:
        self.total = total
        self.emit(f"{self.title}: {total} samples to go through")

    def advance(self, what: str) -> None:
        self.done += 1
        now = self.clock()
        if now - self.last_line >= self.every_s:
            self.last_line = now
            self.emit(self.line(what, now))

    def line(self, what: str, now: float) -> str:
        elapsed = now - self.start
        if self.total:
            eta = elapsed / max(self.done, 1) * (self.total - self.done)
            return (f"{self.title}: {self.done}/{self.total} ({self.done / self.total:.0%}), "
                    f"{_clock(elapsed)} elapsed, ETA {_clock(eta)}; last: {what}")
        return f"{self.title}: {self.done} done, {_clock(elapsed)} elapsed; last: {what}"

    def finish(self) -> None:
        self.emit(f"{self.title}: {self.done} done in {_clock(self.clock() - self.start)}")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


@app.command("lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                          "help_option_names": []}, add_help_option=False)
def lm_eval_cmd(ctx: typer.Context) -> None:
    """lm-eval's own command line with the bltbench model registered and bltbench's local task configs
    on its include path (a task with a local config, such as arc_easy, reads the data directory:
    nothing is downloaded). Example: bltbench lm-eval --model bltbench --model_args
    model=tiny,method=blt-d-8,device=cpu --tasks arc_easy --limit 8"""
    from bltbench.suites.lm_eval_local import lm_eval_argv

    import bltbench.suites.lm_eval_model  # noqa: F401  (registers "bltbench" with lm-eval)
    from lm_eval.__main__ import cli_evaluate

    argv = lm_eval_argv(list(ctx.args), lambda note: typer.echo(note, err=True))
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise BltbenchError(f"lm-eval exited with status {exc.code}") from None
    except BltbenchError:
        raise
    except Exception as exc:  # lm-eval's own complaints (no tasks, a bad argument): one line, not its traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BltbenchError(f"lm-eval: {first}") from None
    finally:
        sys.argv = saved


@app.command("suites")
def suites_cmd() -> None:
    """List the suites bltbench ships (run one by name from any folder: bltbench run smoke)."""
    from bltbench.runner.suite import shipped_suites, suite_description

    for name, path in shipped_suites().items():
        typer.echo(f"{name:10s} {suite_description(path)}  ({path.resolve()})")


@app.command("check")
def check_cmd(
    run: Path = typer.Argument(..., help="A run folder (or its summary.json)."),
    baseline: Path = typer.Option(..., "--baseline"),
    tolerance: float = typer.Option(0.02, "--tolerance"),
    decode_tolerance: Optional[float] = typer.Option(
        None, "--decode-tolerance", help="Also fail when decode ms per byte rose beyond this (only against a baseline "
        "measured with the same device profile; off by default, timings move across machines)."),
    allow_other: bool = typer.Option(False, "--allow-other", help="Compare against a baseline of another suite, "
                                     "model or task set (refused otherwise)."),
) -> None:
    """Fail when any method's bandwidth per byte rose beyond tolerance or a lossless method lost exactness."""
    from bltbench.reporting.check import check

    problems = check(run, baseline, tolerance, decode_tolerance, allow_other)
    if problems:
        for p in problems:
            typer.echo(f"check failed: {p}", err=True)
        raise typer.Exit(1)
    typer.echo(f"check passed: {run} against {baseline} (tolerance {tolerance:.0%})")


@app.command("report")
def report_cmd(
    run: Path = typer.Argument(..., help="A run folder (or a run id under results/)."),
    formats: str = typer.Option("html,pdf", "--format", help="Comma-separated: html, pdf."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the report files (default reports/<run-id>)."),
) -> None:
    """Render a run's report: one self-contained HTML file and a PDF, tables and plots."""
    from bltbench.reporting.report import parse_formats, write_report

    for path in write_report(run, parse_formats(formats), out):
        typer.echo(f"wrote {path}")


def _positive_ints(text: str, option: str) -> list[int]:
    """A comma-separated list of positive integers, or one error line naming the option."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BltbenchError(f"{option} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise BltbenchError(f"{option} needs at least one value, all positive, got {text!r}")
    return values


@bench_app.command("decode")
def bench_decode(
    model: str = typer.Option("random:tiny", "--model"),
    entropy_model: Optional[str] = typer.Option(None, "--entropy-model", help=ENTROPY_HELP),
    lengths: str = typer.Option("64,256,1024", "--lengths", help="Comma-separated numbers of new bytes."),
    recompute_max: int = typer.Option(1024, "--recompute-max", help="Skip recompute above this many bytes."),
    prompts: str = typer.Option("short,few-shot", "--prompts", help="Built-in prompts to run: short, few-shot."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="A prompt of your own instead of the built-in ones."),
    modes: str = typer.Option("eager,compiled,recompute", "--modes",
                              help="Comma-separated: eager (cached steps), compiled (cached, torch.compile), recompute."),
    ops: bool = typer.Option(False, "--ops", help="Also count aten operators per cached step (eager and compiled)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Fix torch's thread count (default: torch's)."),
    repeats: int = typer.Option(1, "--repeats", help="Time every mode this many times per length, interleaved; medians."),
    device: str = typer.Option("cpu", "--device"),
    dtype: str = typer.Option("fp32", "--dtype", help=DTYPE_HELP),
    hash_buckets: Optional[int] = typer.Option(None, "--hash-buckets", help=BUCKETS_HELP),
) -> None:
    """Cached (eager and compiled steps) vs --recompute BLT decoding: bytes/s and ratios at several
    lengths, side by side in one process (greedy, EOS suppressed; modes interleaved when repeated)."""
    from rich.table import Table

    from bltbench.cli.prompts import read_prompt
    from bltbench.instrumentation.bench import MODES, PROMPTS, decode_benchmark, ops_per_step

    sizes = _positive_ints(lengths, "--lengths")
    if repeats < 1:
        raise BltbenchError(f"--repeats must be >= 1, got {repeats}")
    chosen_modes = tuple(m.strip() for m in modes.split(",") if m.strip())
    bad = [m for m in chosen_modes if m not in MODES]
    if bad or not chosen_modes:
        raise BltbenchError(f"unknown mode {', '.join(bad) or repr(modes)} (choose from {', '.join(MODES)})")
    if prompt is not None:
        chosen = {"custom": read_prompt(prompt, None)}
    else:
        names = [n.strip() for n in prompts.split(",") if n.strip()]
        unknown = [n for n in names if n not in PROMPTS]
        if unknown or not names:
            raise BltbenchError(f"unknown prompt set {', '.join(unknown) or prompts!r} (choose from {', '.join(PROMPTS)})")
        chosen = {n: PROMPTS[n].encode() for n in names}
    n_threads = _threads(threads)
    dev = _device(device)
    bundle = _load(model, dev, dtype, hash_buckets, ("blt",), entropy_model)
    console = _console()
    cached = [m for m in chosen_modes if m != "recompute"]
    for name, data in chosen.items():
        with console.status(f"benchmarking ({name} prompt)") as status:
            rows = decode_benchmark(bundle, sizes, data, recompute_max, dev, lambda m: status.update(m), chosen_modes,
                                    repeats)
        table = Table(title=f"BLT decode, {bundle.source}, {dev}, {_dtype_of(bundle)}, {n_threads} threads, "
                            f"{name} prompt ({len(data)} bytes), median of {repeats} interleaved")
        table.add_column("new bytes", justify="right")
        for mode in chosen_modes:
            table.add_column(f"{mode} B/s", justify="right")
        for mode in cached:
            if "recompute" in chosen_modes:
                table.add_column(f"{mode} / recompute", justify="right")
        table.add_column("same output", justify="right")
        for r in rows:
            speeds = [f"{r.bytes_per_s[m]:.1f}" if m in r.bytes_per_s else "-" for m in chosen_modes]
            ratios = [f"{r.speedup(m):.1f}x" if r.speedup(m) else "-" for m in cached if "recompute" in chosen_modes]
            same = "-" if r.same_output is None else ("yes" if r.same_output else "NO")
            table.add_row(str(r.new_bytes), *speeds, *ratios, same)
        console.print(table)
        first, last = rows[0], rows[-1]
        for mode in cached:
            console.print(f"per-byte cost, {name} prompt, {mode}: B/s at {last.new_bytes} / at {first.new_bytes} = "
                          f"{last.bytes_per_s[mode] / first.bytes_per_s[mode]:.2f}")
    if ops:
        for mode in cached:
            console.print(f"aten operators per cached step, {mode}: {ops_per_step(bundle, mode):.0f}")


def _dtype_of(bundle) -> str:
    from bltbench.model.build import dtype_name

    return dtype_name(bundle.dtype)


def _threads(threads: Optional[int]) -> int:
    """Fix torch's intra-op thread count (CPU pools fighting for cores distort timings); returns it."""
    import torch

    if threads is not None:
        if threads < 1:
            raise BltbenchError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@bench_app.command("stream")
def bench_stream(
    preset_name: str = typer.Option("blt-1b", "--preset", help="Random weights of this preset's dims."),
    dtype: str = typer.Option("bf16", "--dtype", help=DTYPE_HELP),
    hash_buckets: int = typer.Option(1024, "--hash-buckets", help=BUCKETS_HELP),
    new_bytes: int = typer.Option(32, "--new-bytes", help="Bytes decoded per timed run (the prefill is timed apart)."),
    modes: str = typer.Option("eager", "--modes", help="Comma-separated: eager, fixed, compiled."),
    repeats: int = typer.Option(3, "--repeats", help="Interleaved repeats (reference, modes, ...); medians are quoted."),
    working_set: float = typer.Option(2.0, "--working-set-gb", help="GB of distinct matrices the GEMV reference reads."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Fix torch's thread count (default: torch's)."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Plain BLT decode as weight streaming: GB/s read per generated byte against a large GEMV's GB/s
    on the same machine (decode only, prefill excluded)."""
    from bltbench.decoding.core import STEP_MODES
    from bltbench.instrumentation.bench import streaming_benchmark
    from bltbench.model.config import PRESETS

    if preset_name not in PRESETS:
        raise BltbenchError(f"unknown preset {preset_name!r} (choose from {', '.join(PRESETS)})")
    if new_bytes < 1 or repeats < 1:
        raise BltbenchError("--new-bytes and --repeats must be >= 1")
    if not (working_set > 0 and working_set < float("inf")):
        raise BltbenchError(f"--working-set-gb must be a positive number, got {working_set}")
    chosen = tuple(m.strip() for m in modes.split(",") if m.strip())
    bad = [m for m in chosen if m not in STEP_MODES]
    if bad or not chosen:
        raise BltbenchError(f"unknown mode {', '.join(bad) or repr(modes)} (choose from {', '.join(STEP_MODES)})")
    n_threads = _threads(threads)
    dev = _device(device)
    console = _console()
    with console.status(f"building random {preset_name} ({dtype}, {hash_buckets} hash buckets)"):
        bundle = _load(f"random:{preset_name}", dev, dtype, hash_buckets, ("blt",))
    dtype = _dtype_of(bundle)
    with console.status("timing"):
        report = streaming_benchmark(bundle, new_bytes, chosen, device=dev, repeats=repeats, working_set_gb=working_set)
    spread = ", ".join(f"{g:.1f}" for g in report.reference_gb_s)
    console.print(f"{preset_name} dims, {dtype}, {dev}, {n_threads} threads: large GEMVs over {working_set:g} GB of "
                  f"weights stream {report.reference:.1f} GB/s (median; measured between repeats: {spread})")
    for r in report.rows:
        times = ", ".join(f"{t * 1e3:.1f}" for t in r.seconds_per_byte)
        console.print(f"  {r.mode}: {r.median_seconds * 1e3:.1f} ms per byte (median of {times}), {r.gb_per_byte:.3f} GB "
                      f"read per byte, {r.gb_per_s:.1f} GB/s = {r.gb_per_s / report.reference:.0%} of the GEMVs'")


@bench_app.command("device")
def bench_device(
    model: str = typer.Option("tiny", "--model", help="Whose shapes and calls to measure (random:PRESET, a bundled name or a folder)."),
    entropy_model: Optional[str] = typer.Option(None, "--entropy-model", help=ENTROPY_HELP),
    dtype: str = typer.Option("fp32", "--dtype", help=DTYPE_HELP),
    hash_buckets: Optional[int] = typer.Option(None, "--hash-buckets", help=BUCKETS_HELP),
    device: str = typer.Option("cpu", "--device"),
    threads: Optional[int] = typer.Option(None, "--threads", help="Fix torch's thread count (default: torch's)."),
    working_set: float = typer.Option(0.5, "--working-set-gb", help="GB of distinct weights each shape is read from (more than the caches hold)."),
    repeats: int = typer.Option(3, "--repeats", help="Timed repeats of every measurement (medians)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the profile here (default: this machine's cache, where runs find it)."),
) -> None:
    """Measure a device profile for a model: memory bandwidth (copy, GEMV), each weight matrix at 1-64
    rows, attention over a cache, the fixed cost of each component's call; written as JSON."""
    from bltbench.instrumentation.device_profile import cache_path, measure_profile

    if not (working_set > 0 and working_set < float("inf")):
        raise BltbenchError(f"--working-set-gb must be a positive number, got {working_set}")
    if repeats < 1:
        raise BltbenchError(f"--repeats must be >= 1, got {repeats}")
    n_threads = _threads(threads)
    dev = _device(device)
    console = _console()
    with console.status("building the model"):
        bundle = _load(model, dev, dtype, hash_buckets, None, entropy_model)
    with console.status("measuring") as status:
        profile = measure_profile(bundle, dev, working_set, repeats, progress=lambda m: status.update(m))
    path = profile.write(out or cache_path(bundle.config, bundle.dtype, dev))
    console.print(f"{profile.device_name} ({dev}, {profile.dtype}, {n_threads} threads): copy {profile.copy_gb_s:.1f} GB/s, "
                  f"GEMV {profile.gemv_gb_s:.1f} GB/s, KV cache {profile.kv_gb_s:.1f} GB/s")
    calls = ", ".join(f"{c} {1e6 * s:.0f}" for c, s in sorted(profile.call_s.items()))
    console.print(f"fixed cost per call (us): {calls}")
    console.print(f"wrote {path}")


@bench_app.command("roofline")
def bench_roofline(
    preset_name: str = typer.Option("blt-1b", "--preset", help="Random weights of this preset's dims."),
    dtype: str = typer.Option("bf16", "--dtype", help=DTYPE_HELP),
    hash_buckets: int = typer.Option(1024, "--hash-buckets", help=BUCKETS_HELP),
    methods: str = typer.Option(",".join(("blt", "blt-s-4", "blt-d-4@confidence=0", "blt-d-16@confidence=0", "blt-dv-8")),
                                "--methods", help="Comma-separated methods (BLT-D at alpha 0: one pass per block)."),
    new_bytes: int = typer.Option(32, "--new-bytes"),
    repeats: int = typer.Option(3, "--repeats", help="Interleaved repeats; the median decode time is quoted."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Fix torch's thread count (default: torch's)."),
    device_profile: Optional[Path] = typer.Option(None, "--device-profile", help="A profile from bench device (default: this machine's, measured if missing)."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Measured decode ms per byte against the roofline's prediction for the same calls, and the
    speedups over blt that the clock, the roofline and the paper proxy give."""
    from rich.table import Table

    from bltbench.instrumentation.bench import roofline_benchmark
    from bltbench.instrumentation.device_profile import profile_for
    from bltbench.instrumentation.roofline import Roofline
    from bltbench.model.build import parse_dtype
    from bltbench.model.config import PRESETS

    if preset_name not in PRESETS:
        raise BltbenchError(f"unknown preset {preset_name!r} (choose from {', '.join(PRESETS)})")
    if new_bytes < 2 or repeats < 1:
        raise BltbenchError("--new-bytes must be >= 2 and --repeats >= 1")
    names = tuple(m.strip() for m in methods.split(",") if m.strip())
    if not names:
        raise BltbenchError("--methods names no method")
    from bltbench.decoding.methods import parse_method

    weights = {parse_method(name).runs_on for name in names}
    torch_dtype = parse_dtype(dtype)
    n_threads = _threads(threads)
    dev = _device(device)
    console = _console()
    with console.status(f"building random {preset_name} ({dtype}, {hash_buckets} hash buckets)"):
        bundle = _load(f"random:{preset_name}", dev, dtype, hash_buckets, weights)
    with console.status("device profile") as status:
        profile = profile_for(bundle, dev, device_profile, lambda m: status.update(f"device profile: {m}"))
    with console.status("timing"):
        rows = roofline_benchmark(bundle, Roofline(bundle.config, profile, torch_dtype), names, new_bytes,
                                  repeats=repeats, device=dev)
    base = next((r for r in rows if r.method == "blt"), rows[0])
    table = Table(title=f"roofline vs clock: random {preset_name} dims, {profile.dtype}, {dev}, {n_threads} threads, "
                        f"{new_bytes} new bytes, median of {repeats} interleaved")
    for col in ("method", "measured ms/B", "roofline ms/B", "error", "of which fixed", f"speedup vs {base.method}: measured",
                "roofline", "paper proxy"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r.method, f"{r.measured_ms:.2f}", f"{r.predicted_ms:.2f}", f"{r.error:+.0%}",
                      f"{r.predicted_fixed_ms / r.predicted_ms:.0%}", f"{base.measured_ms / r.measured_ms:.2f}x",
                      f"{base.predicted_ms / r.predicted_ms:.2f}x", f"{base.proxy_gb / r.proxy_gb:.2f}x")
    console.print(table)
    console.print(f"device profile: {profile.device_name}, GEMV {profile.gemv_gb_s:.1f} GB/s, measured {profile.measured_at}")


@bench_app.command("meter")
def bench_meter(
    model: str = typer.Option("random:tiny", "--model"),
    entropy_model: Optional[str] = typer.Option(None, "--entropy-model", help=ENTROPY_HELP),
    methods: str = typer.Option("blt,blt-s-8", "--methods"),
    new_bytes: int = typer.Option(256, "--bytes"),
    repeats: int = typer.Option(5, "--repeats"),
    dtype: str = typer.Option("fp32", "--dtype", help=DTYPE_HELP),
) -> None:
    """What the meter costs: decode time with it on vs off, alternating runs, best of repeats."""
    from rich.table import Table

    from bltbench.instrumentation.bench import meter_overhead

    if new_bytes < 1 or repeats < 1:
        raise BltbenchError("--bytes and --repeats must be positive")
    bundle = _load(model, "cpu", dtype, None, None, entropy_model)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    console = _console()
    with console.status("timing"):
        rows = meter_overhead(bundle, names, new_bytes, repeats)
    table = Table(title=f"meter overhead, {bundle.source}, {new_bytes} bytes, best of {repeats}")
    for col in ("method", "meter off (s)", "meter on (s)", "overhead (side by side)", "records", "us/record",
                "overhead (records x cost)"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r.method, f"{r.off_s:.3f}", f"{r.on_s:.3f}", f"{r.overhead:+.1%}", str(r.calls),
                      f"{r.per_call_s * 1e6:.2f}", f"{r.estimated_overhead:.3%}")
    console.print(table)


@bench_app.command("train")
def bench_train(
    corpus: list[Path] = typer.Option(..., "--corpus", help="Text folders or files (repeat the option)."),
    variant: str = typer.Option("blt", "--variant", help="entropy, blt or blt-d."),
    init: Optional[str] = typer.Option("tiny", "--init", help="Bundle to start from (as for train)."),
    batch_sizes: str = typer.Option("8,64,256", "--batch-sizes"),
    seq_len: int = typer.Option(512, "--seq-len"),
    steps: int = typer.Option(10, "--steps", help="Timed steps per batch size."),
    warmup_steps: int = typer.Option(3, "--warmup-steps"),
    ops: bool = typer.Option(False, "--ops", help="Also count the operators one step dispatches."),
    device: str = typer.Option("cpu", "--device"),
    nproc: Optional[str] = typer.Option(None, "--nproc", help="Comma-separated process counts: run under torchrun "
                                        "at each, --batch-sizes (one) being the per-process batch, and compare."),
    threads: Optional[int] = typer.Option(None, "--threads", help="With --nproc: torch threads per process "
                                          "(default: an even share of the cores)."),
    repeats: int = typer.Option(1, "--repeats", help="With --nproc: alternate the counts this many rounds; medians."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the first row as JSON here."),
) -> None:
    """Training step time and bytes/s at several batch sizes, side by side (where a small model's step is
    bound by operator dispatch, a larger batch costs about the same time per step); with --nproc, at
    several process counts under torchrun."""
    import json
    import os

    import torch
    from rich.table import Table

    from bltbench.atomic import write_text_atomic
    from bltbench.training.bench import scaling_benchmark, train_benchmark
    from bltbench.training.trainer import TrainConfig

    sizes = _positive_ints(batch_sizes, "--batch-sizes")
    if steps < 1 or warmup_steps < 0:
        raise BltbenchError("--steps must be positive and --warmup-steps >= 0")
    for name, value in (("--threads", threads), ("--repeats", repeats)):
        if value is not None and value < 1:
            raise BltbenchError(f"{name} must be >= 1, got {value}")
    if nproc is not None and "WORLD_SIZE" not in os.environ:
        counts = _positive_ints(nproc, "--nproc")
        if len(sizes) != 1:
            raise BltbenchError("with --nproc, --batch-sizes is one per-process batch")
        argv = [*[a for p in corpus for a in ("--corpus", str(p))], "--variant", variant,
                "--init", str(init), "--steps", str(steps), "--warmup-steps", str(warmup_steps), "--device", device]
        console = _console()
        with console.status("benchmarking") as status:
            scaled = scaling_benchmark(argv, counts, sizes[0], seq_len, threads, repeats,
                                       progress=lambda m: status.update(m))
        table = Table(title=f"{variant} training under torchrun, {init}, {device}, {sizes[0]} sequences of {seq_len} "
                            f"bytes per process, median of {repeats} alternated")
        for col in ("processes", "threads each", "global batch", "s/step", "bytes/s", f"vs {counts[0]} process(es)"):
            table.add_column(col, justify="right")
        for r in scaled:
            table.add_row(str(r.processes), str(r.threads), str(r.global_batch), f"{r.seconds_per_step:.4f}",
                          f"{r.bytes_per_s:,.0f}", f"{r.bytes_per_s / scaled[0].bytes_per_s:.2f}x")
        console.print(table)
        return
    config = TrainConfig(variant=variant, corpus=[str(p) for p in corpus], steps=10**9, out="", init=init,
                         seq_len=seq_len, device=_device(device),
                         freeze=("encoder", "global") if variant == "blt-d" else ())
    main_rank = os.environ.get("RANK", "0") == "0"
    console = _console() if main_rank else _quiet_console()
    with console.status("benchmarking") as status:
        rows = train_benchmark(config, sizes, steps, warmup_steps, ops, progress=lambda m: status.update(m))
    if json_out is not None and main_rank:
        r = rows[0]
        write_text_atomic(json_out, json.dumps({"seconds_per_step": r.seconds_per_step, "bytes_per_s": r.bytes_per_s,
                                                "threads": torch.get_num_threads()}) + "\n")
    table = Table(title=f"{variant} training steps, {init}, {config.device}, sequences of {seq_len} bytes")
    for col in ("batch", "s/step", "bytes/s", f"bytes/s vs batch {sizes[0]}", "ops/step"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r.batch_size), f"{r.seconds_per_step:.4f}", f"{r.bytes_per_s:,.0f}",
                      f"{r.bytes_per_s / rows[0].bytes_per_s:.2f}x", "-" if r.ops_per_step is None else str(r.ops_per_step))
    console.print(table)


@bench_app.command("sweep")
def bench_sweep(
    suite_path: Path = typer.Argument(Path("default"), metavar="[SUITE]", help="A suite file or a shipped suite's name."),
    workers: int = typer.Option(2, "--workers", help="Ray workers (a local Ray started for each Ray run)."),
    repeats: int = typer.Option(1, "--repeats", help="Alternate serial and Ray this many rounds; medians."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Defaults to $BLTBENCH_DATA."),
) -> None:
    """A whole sweep serially and on Ray, side by side: seconds per run (Ray's start-up included), the
    speedup, and whether the records agree apart from timing and placement."""
    from rich.table import Table

    from bltbench.runner.bench import sweep_benchmark
    from bltbench.runner.suite import load_suite, resolve_suite

    for name, value in (("--workers", workers), ("--repeats", repeats)):
        if value < 1:
            raise BltbenchError(f"{name} must be >= 1, got {value}")
    suite = load_suite(suite_path)  # refused here, in one line, before any run starts
    console = _console()
    with console.status("benchmarking") as status:
        rows, same = sweep_benchmark(resolve_suite(suite_path), workers, suite.timing.threads or 1, repeats,
                                     str(data_dir) if data_dir else None, progress=lambda m: status.update(m))
    table = Table(title=f"suite {suite.name}: whole sweeps, {suite.timing.threads or 1} torch thread(s) per "
                        f"worker, median of {repeats} alternated")
    for col in ("executor", "seconds", "records", "vs serial"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r.executor, f"{r.seconds:.1f}", str(r.records), f"{rows[0].seconds / r.seconds:.2f}x")
    console.print(table)
    console.print("records identical apart from timing and placement: " + ("yes" if same else "NO"))


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
    global INVOKED_WITH
    INVOKED_WITH = list(args)
    try:
        code = app(args=args or ["--help"], standalone_mode=False)
    except BltbenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: bad option value, unknown option, missing argument
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(message, err=True)
        else:
            typer.echo("error: " + " ".join(message.split()), err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
