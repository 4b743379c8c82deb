"""The `bltbench` command line. Every user error ends as one line on stderr and exit status 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from bltbench.errors import BltbenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure what byte-level generation with BLT, BLT-D, BLT-S and BLT-DV costs.")
bench_app = typer.Typer(no_args_is_help=True, help="Speed benchmarks, measured side by side in one run.")
app.add_typer(bench_app, name="bench")


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BltbenchError(f"device {device!r} asked for, but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise BltbenchError(f"unknown device {device!r} (cpu, cuda, cuda:N or auto)")
    return device


@app.command("generate")
def generate_cmd(
    model: str = typer.Option(..., "--model", help="random:PRESET[:SEED], a bundled model name, or a checkpoint folder."),
    method: str = typer.Option("blt", "--method", help="blt, blt-s (with --k), or blt-s-K."),
    recompute: bool = typer.Option(False, "--recompute", help="Official-style: re-patch and rerun the whole model per byte."),
    k: Optional[int] = typer.Option(None, "--k", help="BLT-S draft length (default 8)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Prompt text (UTF-8)."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="Read the prompt's raw bytes from a file."),
    max_bytes: int = typer.Option(256, "--max-bytes", help="Byte budget; generation also stops at EOS."),
    seed: int = typer.Option(0, "--seed"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    top_k: Optional[int] = typer.Option(None, "--top-k"),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    project: Optional[str] = typer.Option(None, "--project", help="Also price the NFE trace as these presets (comma-separated, e.g. blt-1b,blt-7b)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Generate bytes from a prompt, metered."""
    from bltbench.cli.prompts import read_prompt
    from bltbench.decoding.methods import parse_method
    from bltbench.decoding.sampling import SamplingConfig
    from bltbench.instrumentation.measure import measure
    from bltbench.instrumentation.params import profile
    from bltbench.model.checkpoint import load_model
    from bltbench.model.ids import encode_prompt

    spec = parse_method(method, k, recompute)
    if max_bytes < 0:
        raise BltbenchError(f"--max-bytes must be >= 0, got {max_bytes}")
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    sampling.validate()
    projections = _projections(project)
    data = read_prompt(prompt, prompt_file)
    dev = _device(device)
    bundle = load_model(model, dev)
    result = measure(spec, bundle, encode_prompt(data), max_bytes, sampling, dev, projections)
    if as_json:
        record = {"model": bundle.source, "recompute": recompute, **result.to_json()}
        typer.echo(json.dumps(record, ensure_ascii=False))
    else:
        sys.stdout.write(result.generation.text + "\n")


def _projections(project: str | None) -> tuple[str, ...]:
    from bltbench.instrumentation.params import profile

    names = tuple(n.strip() for n in (project or "").split(",") if n.strip())
    for name in names:
        profile(name)  # fails with one line on an unknown name
    return names


@bench_app.command("decode")
def bench_decode(
    model: str = typer.Option("random:tiny", "--model"),
    lengths: str = typer.Option("64,256,1024", "--lengths", help="Comma-separated numbers of new bytes."),
    recompute_max: int = typer.Option(1024, "--recompute-max", help="Skip recompute above this many bytes."),
    prompts: str = typer.Option("short,few-shot", "--prompts", help="Built-in prompts to run: short, few-shot."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="A prompt of your own instead of the built-in ones."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Cached vs --recompute BLT decoding: bytes/s and ratios at several lengths (greedy, EOS suppressed)."""
    from rich.console import Console
    from rich.table import Table

    from bltbench.cli.prompts import read_prompt
    from bltbench.instrumentation.bench import PROMPTS, decode_benchmark
    from bltbench.model.checkpoint import load_model

    try:
        sizes = [int(x) for x in lengths.split(",") if x.strip()]
    except ValueError:
        raise BltbenchError(f"--lengths must be comma-separated integers, got {lengths!r}") from None
    if not sizes or min(sizes) < 1:
        raise BltbenchError("--lengths needs at least one positive length")
    if prompt is not None:
        chosen = {"custom": read_prompt(prompt, None)}
    else:
        names = [n.strip() for n in prompts.split(",") if n.strip()]
        unknown = [n for n in names if n not in PROMPTS]
        if unknown or not names:
            raise BltbenchError(f"unknown prompt set {', '.join(unknown) or prompts!r} (choose from {', '.join(PROMPTS)})")
        chosen = {n: PROMPTS[n].encode() for n in names}
    dev = _device(device)
    bundle = load_model(model, dev)
    console = Console()
    for name, data in chosen.items():
        with console.status(f"benchmarking ({name} prompt)") as status:
            rows = decode_benchmark(bundle, sizes, data, recompute_max, dev, progress=lambda m: status.update(m))
        table = Table(title=f"BLT decode, {bundle.source}, {dev}, {name} prompt ({len(data)} bytes)")
        for col in ("new bytes", "cached B/s", "recompute B/s", "cached / recompute", "same output"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(
                str(r.new_bytes),
                f"{r.cached_bytes_per_s:.1f}",
                "-" if r.recompute_bytes_per_s is None else f"{r.recompute_bytes_per_s:.1f}",
                "-" if r.speedup is None else f"{r.speedup:.1f}x",
                "-" if r.same_output is None else ("yes" if r.same_output else "NO"),
            )
        console.print(table)
        first, last = rows[0], rows[-1]
        console.print(
            f"per-byte cost, {name} prompt: cached B/s at {last.new_bytes} / at {first.new_bytes} = "
            f"{last.cached_bytes_per_s / first.cached_bytes_per_s:.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
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
