"""The Python API: load a model, generate with any method, compare methods, run a suite.

    import bltbench

    model = bltbench.load_model("tiny")
    m = bltbench.generate(model, "The capital of France is", method="blt-s-8", max_bytes=32)
    print(m.generation.text, m.nfe, m.bandwidth.paper_gb)

Every user error is a `bltbench.BltbenchError`, with the message the command line prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bltbench.errors import BltbenchError


def _model(model):
    from bltbench.model.bundle import ModelBundle

    if isinstance(model, ModelBundle):
        return model
    if isinstance(model, (str, Path)):
        return load_model(str(model))
    raise BltbenchError(f"model must be a name, a folder or a loaded model, got {type(model).__name__}")


def load_model(spec: str = "tiny", device: str = "cpu", dtype: str = "fp32", hash_buckets: int | None = None,
               entropy_model: str | None = None):
    """A model bundle: a bundled name (`tiny`), `random:PRESET[:SEED]`, or a checkpoint folder (bltbench,
    official BLT download or Hub layout); `entropy_model` names the entropy model to patch with."""
    from bltbench.model.checkpoint import load_model as load

    if not isinstance(spec, (str, Path)):
        raise BltbenchError(f"a model is named by a string, got {type(spec).__name__}")
    return load(str(spec), device, dtype, hash_buckets, None, None if entropy_model is None else str(entropy_model))


def generate(model, prompt: str | bytes | Sequence[int], method: str = "blt", max_bytes: int = 256,
             temperature: float = 0.0, top_p: float | None = None, top_k: int | None = None, seed: int = 0,
             stop: Sequence[str] = (), device: str = "cpu", compile: bool = False):
    """One metered generation (a `Measurement`: `.generation.text`, `.nfe`, `.bandwidth`, `.to_json()`)."""
    from bltbench.decoding.methods import parse_method
    from bltbench.decoding.sampling import SamplingConfig
    from bltbench.instrumentation.measure import measure

    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
        raise BltbenchError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
    if isinstance(stop, str):
        stop = (stop,)
    bundle = _model(model)
    spec = parse_method(method)
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    sampling.validate()
    return measure(spec, bundle, prompt, max_bytes, sampling, device, stop=tuple(stop),
                   steps="compiled" if compile else "eager")


def compare(model, methods: str | Sequence[str], prompts: Sequence[str], max_bytes: int = 128,
            device: str = "cpu", repeats: int = 1):
    """Methods side by side on the same prompts (`CompareRow`s: NFEs and GB per byte, reduction
    against blt, exact match against the causal path, decode speed)."""
    from bltbench.decoding.sampling import SamplingConfig
    from bltbench.instrumentation.compare import compare as run, parse_methods

    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise BltbenchError("prompts is a non-empty list of non-empty strings")
    names = methods if isinstance(methods, str) else ",".join(methods)
    return run(_model(model), parse_methods(names), list(prompts), max_bytes, SamplingConfig(), device,
               repeats=repeats)


def run_suite(suite: str | Path = "default", out: str | Path | None = None, limit: int | None = None,
              resume: bool = False, device: str = "cpu", data_dir: str | Path | None = None,
              executor: str | None = None, workers: int | None = None, address: str | None = None):
    """A suite (a file, or a shipped suite's name) swept into a run folder (`SweepResult`: folder,
    records written and skipped, summary rows); `executor="ray"` (or the suite's `executor:`) runs it on
    Ray with `workers` workers, on a local Ray or the cluster at `address`."""
    import time

    from bltbench.runner.executors import executor_for
    from bltbench.runner.suite import load_suite
    from bltbench.runner.sweep import run_suite as sweep

    loaded = load_suite(Path(suite))
    runner = executor_for(loaded, executor, address, workers)
    folder = Path(out) if out is not None else Path("results") / f"{loaded.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return sweep(loaded, folder, limit, resume, device, str(data_dir) if data_dir else None, executor=runner)
