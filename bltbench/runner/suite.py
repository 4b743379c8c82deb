"""Suite definitions: YAML naming the model, the grid of methods and settings, the tasks and limits.

    name: default
    model: tiny                     # any --model spec
    entropy_model: PATH             # optional: patch with this entropy model (any --entropy-model spec)
    dtype: fp32                     # fp32, bf16 or fp16 (weights and activations)
    hash_buckets: 1024              # random presets only: resize the hash tables
    methods: [blt, blt-s-8, blt-d-8@confidence=0.7, blt-dv-8]
    sampling: {temperature: 0.0}    # default for every task
    project: [blt-1b, blt-7b]       # also price every trace at these sizes
    compile: false                  # run one-position steps through torch.compile (CUDA graphs on a GPU)
    timing: {repeats: 3, threads: 1}  # each sample timed 3 times, methods interleaved; torch at 1 thread
    executor: {name: ray, workers: 2}  # where units run: serial (default) or ray (address, workers, gpus_per_worker)
    tasks:
      - {name: flores-fr-en, limit: 4, max_bytes: 128}
      - {name: diversity, limit: 4, sampling: {temperature: 1.0, top_p: 0.9}}
      - {name: arc-easy, limit: 8}   # a scoring task: the method's likelihoods, no byte budget

Unknown or malformed fields are errors, reported with the suite's path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bltbench.decoding.methods import MethodSpec, parse_method
from bltbench.decoding.sampling import SamplingConfig
from bltbench.errors import BltbenchError
from bltbench.instrumentation.params import profile
from bltbench.model.build import parse_dtype
from bltbench.suites.tasks.base import ScoringTask
from bltbench.suites.tasks.registry import get_task

SUITE_FIELDS = {"name", "model", "methods", "sampling", "project", "tasks", "data_dir", "description", "compile", "timing",
                "dtype", "hash_buckets", "executor", "entropy_model"}
EXECUTOR_FIELDS = {"name", "address", "workers", "gpus_per_worker"}
NOT_RESUME_IDENTITY = ("executor",)  # where a run's units ran does not change its records
TIMING_FIELDS = {"repeats", "threads"}
TASK_FIELDS = {"name", "limit", "max_bytes", "sampling"}
SAMPLING_FIELDS = {"temperature", "top_p", "top_k", "seed"}


@dataclass(frozen=True)
class TaskEntry:
    name: str
    limit: int | None
    max_bytes: int | None
    sampling: SamplingConfig


@dataclass(frozen=True)
class Suite:
    name: str
    model: str
    methods: tuple[MethodSpec, ...]
    tasks: tuple[TaskEntry, ...]
    project: tuple[str, ...] = ()
    data_dir: str | None = None
    source: dict = field(default_factory=dict, compare=False)
    compile: bool = False
    timing: "Timing" = field(default_factory=lambda: Timing())
    dtype: str = "fp32"
    hash_buckets: int | None = None
    executor: "ExecutorChoice" = field(default_factory=lambda: ExecutorChoice())
    entropy_model: str | None = None

    @property
    def weights(self) -> set[str]:
        """The weights its methods run on (a run of blt alone never builds BLT-D)."""
        return {spec.runs_on for spec in self.methods}


@dataclass(frozen=True)
class Timing:
    """How generation samples are timed: `repeats` runs of each (sample, method), methods interleaved
    (A B C A B C), the median kept; `threads` fixes torch's thread count (None: torch's default)."""

    repeats: int = 1
    threads: int | None = None


@dataclass(frozen=True)
class ExecutorChoice:
    """Where the sweep's work units run: `serial` (this process) or `ray` (actors, local or a cluster)."""

    name: str = "serial"
    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None


def _executor(raw: Any, where: str) -> ExecutorChoice:
    if raw is None:
        return ExecutorChoice()
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise BltbenchError(f"{where}: executor must be serial, ray, or a mapping with name, address, workers, "
                            "gpus_per_worker")
    unknown = set(raw) - EXECUTOR_FIELDS
    if unknown:
        raise BltbenchError(f"{where}: unknown executor fields {', '.join(sorted(unknown))}")
    name = raw.get("name", "serial")
    if name not in ("serial", "ray"):
        raise BltbenchError(f"{where}: executor.name must be serial or ray, got {name!r}")
    workers, gpus, address = raw.get("workers"), raw.get("gpus_per_worker"), raw.get("address")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise BltbenchError(f"{where}: executor.workers must be a positive integer, got {workers!r}")
    if gpus is not None and (not isinstance(gpus, (int, float)) or isinstance(gpus, bool) or gpus < 0):
        raise BltbenchError(f"{where}: executor.gpus_per_worker must be a number >= 0, got {gpus!r}")
    if address is not None and not isinstance(address, str):
        raise BltbenchError(f"{where}: executor.address must be a string, got {address!r}")
    if name == "serial" and (workers, gpus, address) != (None, None, None):
        raise BltbenchError(f"{where}: executor address, workers and gpus_per_worker apply to ray only")
    return ExecutorChoice(name, address, workers, None if gpus is None else float(gpus))


def _timing(raw: Any, where: str) -> Timing:
    if raw is None:
        return Timing()
    if not isinstance(raw, dict):
        raise BltbenchError(f"{where}: timing must be a mapping with repeats and/or threads")
    unknown = set(raw) - TIMING_FIELDS
    if unknown:
        raise BltbenchError(f"{where}: unknown timing fields {', '.join(sorted(unknown))}")
    for key in TIMING_FIELDS:
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise BltbenchError(f"{where}: timing.{key} must be a positive integer, got {value!r}")
    return Timing(raw.get("repeats") or 1, raw.get("threads"))


def _sampling(raw: Any, where: str, base: SamplingConfig | None = None) -> SamplingConfig:
    if raw is None:
        return base or SamplingConfig()
    if not isinstance(raw, dict):
        raise BltbenchError(f"{where}: sampling must be a mapping")
    unknown = set(raw) - SAMPLING_FIELDS
    if unknown:
        raise BltbenchError(f"{where}: unknown sampling fields {', '.join(sorted(unknown))}")
    values = {**(vars(base) if base else {}), **raw}
    try:
        config = SamplingConfig(**values)
        config.validate()
    except TypeError as exc:
        raise BltbenchError(f"{where}: {exc}") from None
    except BltbenchError as exc:
        raise BltbenchError(f"{where}: {exc}") from None
    return config


def parse_suite(raw: Any, where: str) -> Suite:
    if not isinstance(raw, dict):
        raise BltbenchError(f"{where}: a suite is a YAML mapping")
    unknown = set(raw) - SUITE_FIELDS
    if unknown:
        raise BltbenchError(f"{where}: unknown fields {', '.join(sorted(unknown))}")
    for key in ("name", "model", "methods", "tasks"):
        if key not in raw:
            raise BltbenchError(f"{where}: missing field {key!r}")
    for key in ("name", "model"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise BltbenchError(f"{where}: {key} must be a non-empty string, got {raw[key]!r}")
    if not all(c.isalnum() or c in "-_." for c in raw["name"]):
        raise BltbenchError(f"{where}: name {raw['name']!r} may hold letters, digits, '-', '_' and '.' only "
                            "(it names the run's folder)")
    for key in ("description", "data_dir", "entropy_model"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise BltbenchError(f"{where}: {key} must be a string, got {raw[key]!r}")
    if not isinstance(raw["methods"], list) or not raw["methods"]:
        raise BltbenchError(f"{where}: methods must be a non-empty list")
    if not isinstance(raw["tasks"], list) or not raw["tasks"]:
        raise BltbenchError(f"{where}: tasks must be a non-empty list")
    try:
        methods = tuple(parse_method(str(m)) for m in raw["methods"])
    except BltbenchError as exc:
        raise BltbenchError(f"{where}: {exc}") from None
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise BltbenchError(f"{where}: methods repeat ({', '.join(labels)})")
    base = _sampling(raw.get("sampling"), f"{where}: sampling")
    tasks = []
    for i, entry in enumerate(raw["tasks"]):
        at = f"{where}: tasks[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise BltbenchError(f"{at}: a task is a name or a mapping with a name")
        unknown = set(entry) - TASK_FIELDS
        if unknown:
            raise BltbenchError(f"{at}: unknown fields {', '.join(sorted(unknown))}")
        try:
            task = get_task(str(entry["name"]))
        except BltbenchError as exc:
            raise BltbenchError(f"{at}: {exc}") from None
        if isinstance(task, ScoringTask):
            for key in ("max_bytes", "sampling"):
                if key in entry:
                    raise BltbenchError(f"{at}: {key} applies to generation tasks; {task.name} scores likelihoods")
        for key in ("limit", "max_bytes"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise BltbenchError(f"{at}: {key} must be a positive integer, got {value!r}")
        tasks.append(TaskEntry(str(entry["name"]), entry.get("limit"), entry.get("max_bytes"),
                               _sampling(entry.get("sampling"), f"{at}: sampling", base)))
    project = raw.get("project") or []
    if not isinstance(project, list):
        raise BltbenchError(f"{where}: project must be a list of preset names")
    try:
        for name in project:
            profile(str(name))
    except BltbenchError as exc:
        raise BltbenchError(f"{where}: {exc}") from None
    compile = raw.get("compile", False)
    if not isinstance(compile, bool):
        raise BltbenchError(f"{where}: compile must be true or false, got {compile!r}")
    dtype = raw.get("dtype", "fp32")
    try:
        parse_dtype(str(dtype))
    except BltbenchError as exc:
        raise BltbenchError(f"{where}: {exc}") from None
    buckets = raw.get("hash_buckets")
    if buckets is not None and (not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 1):
        raise BltbenchError(f"{where}: hash_buckets must be a positive integer, got {buckets!r}")
    return Suite(str(raw["name"]), str(raw["model"]), methods, tuple(tasks), tuple(map(str, project)),
                 raw.get("data_dir"), raw, compile, _timing(raw.get("timing"), where), str(dtype), buckets,
                 _executor(raw.get("executor"), where), raw.get("entropy_model"))


SHIPPED = Path(__file__).resolve().parent.parent / "suites" / "shipped"  # the repository's suites/, as package data


def shipped_suites() -> dict[str, Path]:
    """The suites bltbench ships, by name (file stem)."""
    return {p.stem: p for p in sorted(SHIPPED.glob("*.yaml"))}


def suite_description(path: Path) -> str:
    """A suite's `description:` field, else its first comment line."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ""
    if isinstance(raw, dict) and isinstance(raw.get("description"), str):
        return raw["description"].strip()
    comments = [line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")]
    return comments[0] if comments else ""


def resolve_suite(name_or_path: str | Path) -> Path:
    """A suite file: the path when it exists, else a shipped suite's name (`default`, `smoke.yaml`),
    found from any working directory."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = shipped_suites()
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if path.parent in (Path("."), Path("suites")) and stem in shipped:
        return shipped[stem]
    raise BltbenchError(f"no suite {str(name_or_path)!r}: not a file, nor a shipped suite "
                        f"(shipped: {', '.join(shipped) or 'none'})")


def load_suite(path: Path) -> Suite:
    path = resolve_suite(path)
    if path.is_dir():
        raise BltbenchError(f"cannot read suite {path}: it is a folder")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BltbenchError(f"cannot read suite {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BltbenchError(f"suite {path} is not UTF-8 text (a suite is a YAML file)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise BltbenchError(f"suite {path} is not valid YAML{at}") from None
    return parse_suite(raw, str(path))
