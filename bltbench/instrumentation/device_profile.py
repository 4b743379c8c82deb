"""A device profile: what this machine does with a model's shapes, measured once (DESIGN.md section 12).

The roofline prices a call from four measured things: how fast weights stream (a large copy and a
large GEMV, for the record), how long each of the model's weight matrices takes at 1..64 rows read
from memory (its memory time at one row, its compute time at more), how fast attention reads a KV
cache, and the fixed cost of one call of each component: what a call's bytes and FLOPs do not explain
(operator dispatch, elementwise work, the host's bookkeeping), measured through the real decoding core
with a timing observer on calibration decodes of blt, blt-s-8 and blt-d-8.

Profiles are JSON, cached per (machine, device, dtype, threads, torch, model shapes) under
$BLTBENCH_CACHE (default ~/.cache/bltbench), or given as a file.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bltbench.atomic import write_text_atomic
from bltbench.errors import BltbenchError
from bltbench.instrumentation.environment import environment
from bltbench.instrumentation.params import component_matrices
from bltbench.instrumentation.timing import timed
from bltbench.model.build import dtype_name
from bltbench.model.config import BLTConfig
from bltbench.model.incremental import Call
from bltbench.model.layers import attention, project

FORMAT = "bltbench-device-profile"
ROWS = (1, 2, 4, 8, 16, 32, 64)
GB = 1e9


@dataclass
class DeviceProfile:
    device: str
    device_name: str
    dtype: str
    threads: int
    torch: str
    model: str  # the shape signature it was measured for
    copy_gb_s: float  # a large device-to-device copy (read + write)
    gemv_gb_s: float  # a large matrix-vector product's weight streaming
    kv_gb_s: float  # one query's attention over a long KV cache
    matmul_s: dict[str, dict[int, float]]  # "OUTxIN" -> rows -> seconds per product, a tiny product's time taken off
    call_s: dict[str, float]  # component -> fixed seconds per call
    measured_at: str = ""
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["matmul_s"] = {shape: {str(r): s for r, s in rows.items()} for shape, rows in self.matmul_s.items()}
        return {"format": FORMAT, "version": 1, **data}

    @classmethod
    def from_json(cls, data: object, where: str = "device profile") -> "DeviceProfile":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BltbenchError(f"{where} is not a bltbench device profile (write one with bltbench bench device)")
        try:
            values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
            matmul = {str(shape): {int(r): float(s) for r, s in rows.items()} for shape, rows in data["matmul_s"].items()}
            call = {str(c): float(s) for c, s in data["call_s"].items()}
            rates = [float(data[k]) for k in ("copy_gb_s", "gemv_gb_s", "kv_gb_s")]
            profile = cls(**{**values, "matmul_s": matmul, "call_s": call, "threads": int(data["threads"])})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BltbenchError(f"{where} is not a valid device profile: {type(exc).__name__} {exc}") from None
        bad = [s for rows in matmul.values() for s in rows.values()] + list(call.values())
        if (not all(math.isfinite(v) and v > 0 for v in rates) or not all(math.isfinite(v) and v >= 0 for v in bad)
                or not matmul or 1 not in next(iter(matmul.values()))):
            raise BltbenchError(f"{where} is not a valid device profile: rates must be positive, times finite")
        return profile

    @classmethod
    def read(cls, path: str | Path) -> "DeviceProfile":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BltbenchError(f"cannot read device profile {path}: {getattr(exc, 'strerror', None) or exc}") from None
        return cls.from_json(data, str(path))

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.to_json(), indent=1) + "\n")
        return path

    def matrix_seconds(self, out: int, inp: int, rows: int) -> tuple[float, float]:
        """(memory time, compute time) of one out x inp product over `rows` rows: the one-row time
        (the weights streamed once), and the time at this row count, interpolated linearly between
        measured counts and at the 64-row rate beyond them."""
        key = f"{out}x{inp}"
        if key not in self.matmul_s:
            raise BltbenchError(f"the device profile has no {key} matrix: it was measured for another model's shapes")
        table = self.matmul_s[key]
        counts = sorted(table)
        memory = table[counts[0]] / counts[0]
        if rows in table:
            return memory, table[rows]
        if rows > counts[-1]:
            return memory, table[counts[-1]] * rows / counts[-1]
        hi = next(c for c in counts if c > rows)
        lo = max(c for c in counts if c < rows) if rows > counts[0] else 0
        low = table[lo] if lo else 0.0
        return memory, low + (table[hi] - low) * (rows - lo) / (hi - lo)


def shape_signature(config: BLTConfig) -> str:
    """What a profile depends on in a model: its matrix shapes and the layers and heads of each component
    (the per-call costs); not its patching or hash table sizes."""
    e = config.entropy
    structure = [model_shapes(config), config.n_layers_encoder, config.n_layers_global, config.n_layers_decoder,
                 config.n_heads_local, config.n_heads_global, config.n_cross_heads, config.cross_attn_k,
                 config.local_window, e.n_layers, e.n_heads, e.window, config.hash_sizes, config.hash_functions]
    return hashlib.sha256(json.dumps(structure).encode()).hexdigest()[:16]


def model_shapes(config: BLTConfig) -> list[tuple[int, int]]:
    return sorted({(m.out, m.inp) for ms in component_matrices(config).values() for m in ms})


# -- measuring -----------------------------------------------------------------------------------
def _median_seconds(fn, device: str, repeats: int) -> float:
    fn()  # first touch
    return statistics.median(timed(fn, device)[1] for _ in range(repeats))


def measure_copy(dtype: torch.dtype, device: str, gb: float) -> float:
    n = max(1, int(gb * GB / 2 / dtype.itemsize))
    src = torch.ones(n, dtype=dtype, device=device)
    dst = torch.empty_like(src)
    return 2 * n * dtype.itemsize / GB / _median_seconds(lambda: dst.copy_(src), device, 3)


def measure_matrices(shapes: list[tuple[int, int]], dtype: torch.dtype, device: str, working_set: float,
                     repeats: int = 3) -> dict[str, dict[int, float]]:
    """Seconds per product of each shape at each row count, read in turn from distinct copies that span
    `working_set` bytes (as a decode step reads every layer's weights once, not one from cache), less a
    tiny product's time at the same rows (its dispatch is in the per-call cost already)."""
    largest = max(o * i for o, i in shapes)
    buffer = torch.empty(max(int(working_set / dtype.itemsize), 2 * largest), dtype=dtype, device=device)
    buffer.normal_(0.0, 0.02)
    tiny = torch.randn(8, 8, device=device).to(dtype)
    floor = {}  # seconds per product of a tiny matrix at each row count: dispatch, which calls pay already
    for rows in ROWS:
        x = torch.randn(1, rows, 8, device=device).to(dtype)
        floor[rows] = _median_seconds(lambda: [project(x, tiny) for _ in range(256)], device, repeats) / 256
    table: dict[str, dict[int, float]] = {}
    for out, inp in shapes:
        size = out * inp
        copies = [buffer[j * size : (j + 1) * size].view(out, inp) for j in range(buffer.numel() // size)]
        rows_table = {}
        for rows in ROWS:
            x = torch.randn(1, rows, inp, device=device).to(dtype)
            seconds = _median_seconds(lambda: [project(x, w) for w in copies], device, repeats) / len(copies)
            rows_table[rows] = max(seconds - floor[rows], 0.0)
        table[f"{out}x{inp}"] = rows_table
    return table


def measure_kv(config: BLTConfig, dtype: torch.dtype, device: str, working_set: float) -> float:
    """GB/s one query's attention reads a long cache at (the global model's heads), less a short
    cache's time."""
    heads, dim = config.n_heads_global, config.d_global // config.n_heads_global
    length = max(1024, int(working_set / 4 / (2 * heads * dim * dtype.itemsize)))
    caches = [(torch.randn(1, heads, length, dim, device=device).to(dtype),
               torch.randn(1, heads, length, dim, device=device).to(dtype)) for _ in range(4)]
    q = torch.randn(1, heads, 1, dim, device=device).to(dtype)
    long = _median_seconds(lambda: [attention(q, k, v, None) for k, v in caches], device, 3)
    short = _median_seconds(lambda: [attention(q, k[:, :, :16], v[:, :, :16], None) for k, v in caches], device, 3)
    return len(caches) * 2 * heads * length * dim * dtype.itemsize / GB / max(long - short, 1e-9)


def call_kind(component: str, positions: int) -> str:
    """How per-call costs are keyed: one-position calls (steps, drafts) take the engine's step path,
    calls over several positions (prefill-like extends, verification, BLT-D blocks) the general one."""
    return component if positions == 1 else f"{component}:many"


class CallTimer:
    """An observer stamping every call: a call lasts until the next one starts (host work between
    them included); on CUDA each stamp waits for the device."""

    def __init__(self, device: str) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.marks: list[tuple[Call, float]] = []

    def __call__(self, call: Call) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.marks.append((call, time.perf_counter()))

    def timed_calls(self) -> list[tuple[Call, float]]:
        """(call, seconds) of every generation call but the last (the prefill left out)."""
        return [(call, t1 - t0) for (call, t0), (_, t1) in zip(self.marks, self.marks[1:]) if call.role != "prefill"]


CALIBRATION_METHODS = ("blt", "blt-s-8", "blt-d-8@confidence=0")  # steps and drafts; verification; blocks


def measure_call_costs(bundle, roofline, device: str, new_bytes: int = 24, repeats: int = 2) -> dict[str, float]:
    """The fixed cost of a call of each component and kind (`call_kind`): the median over calibration
    decodes (blt, blt-s-8, blt-d-8 where the bundle has the weights; interleaved, after a warm-up round)
    of each call's measured time less what its bytes and FLOPs explain (`roofline` without fixed costs).
    It holds the operators' dispatch, the elementwise work and the host's bookkeeping around a call."""
    from bltbench.decoding.methods import generate, parse_method
    from bltbench.decoding.sampling import Sampler, SamplingConfig
    from bltbench.model.ids import encode_prompt

    prompt = encode_prompt(b"A device profile times each call of the model through the decoding core. ")
    if bundle.config.max_seqlen is not None:  # a model that runs only so many positions calibrates within them
        new_bytes = min(new_bytes, bundle.config.max_seqlen // 2)
        prompt = prompt[: bundle.config.max_seqlen - new_bytes]
    sampler = lambda: Sampler(SamplingConfig(suppress_eos=True), device)  # noqa: E731
    specs = []
    for name in CALIBRATION_METHODS:
        spec = parse_method(name)
        if spec.runs_on == "blt" and bundle.blt is None:  # BLT-D keeps BLT's causal path
            spec = dataclasses.replace(spec, weights="blt-d")
        if (bundle.blt if spec.runs_on == "blt" else bundle.blt_d) is not None:
            specs.append(spec)
    samples: dict[str, list[float]] = {}
    for round_ in range(repeats + 1):
        for spec in specs:  # interleaved; the first round warms up
            timer = CallTimer(device)
            generate(spec, bundle, prompt, new_bytes, sampler(), timer)
            if round_:
                for call, seconds in timer.timed_calls():
                    samples.setdefault(call_kind(call.component, call.positions), []).append(
                        seconds - roofline.call(call).bound_s)
    return {kind: max(0.0, statistics.median(v)) for kind, v in sorted(samples.items())}


def default_working_set_gb() -> float:
    """GB of distinct weights a profile streams per shape: enough that every product reads memory, not a
    cache ($BLTBENCH_PROFILE_GB overrides it)."""
    try:
        value = float(os.environ.get("BLTBENCH_PROFILE_GB", "0.5"))
    except ValueError:
        raise BltbenchError("BLTBENCH_PROFILE_GB must be a number of GB") from None
    if not (value > 0 and math.isfinite(value)):
        raise BltbenchError("BLTBENCH_PROFILE_GB must be a positive number of GB")
    return value


def measure_profile(bundle, device: str = "cpu", working_set_gb: float | None = None, repeats: int = 3,
                    progress=None) -> DeviceProfile:
    """Everything the roofline needs for this model's shapes on this device, in this dtype. Weights are
    read from a working set of `working_set_gb` distinct copies, so they come from memory as in a decode
    step, where every other component's weights and caches pass through the caches between two calls
    of one component (measured: on this project's 2-core CPU the tiny model's global weights, 20 MB,
    take 2.1x longer after 64 MB of other traffic than hot). The bundle's dtype is the profile's; its
    weights (random ones do) serve the calibration decodes that give each call's fixed cost."""
    from bltbench.instrumentation.roofline import Roofline
    from bltbench.instrumentation.bench import GemvReference

    config = bundle.config
    torch_dtype = bundle.dtype
    say = progress or (lambda message: None)
    working_set = (working_set_gb or default_working_set_gb()) * GB
    with torch.inference_mode():
        say("memory bandwidth")
        copy = measure_copy(torch_dtype, device, max(working_set, 64e6) / GB)
        gemv = GemvReference(torch_dtype, device, working_set_gb=working_set / GB).measure()
        say("weight matrices at 1-64 rows")
        matmul = measure_matrices(model_shapes(config), torch_dtype, device, working_set, repeats)
        say("attention over a cache")
        kv = measure_kv(config, torch_dtype, device, working_set)
    env = environment(device, torch_dtype)
    profile = DeviceProfile(env["device"], env["device_name"], dtype_name(torch_dtype), torch.get_num_threads(),
                            torch.__version__, shape_signature(config), copy, gemv, kv, matmul, {},
                            time.strftime("%Y-%m-%dT%H:%M:%S"), {"working_set_gb": working_set / GB, "steps": "eager"})
    say("the fixed cost of a call")
    profile.call_s = measure_call_costs(bundle, Roofline(config, profile, torch_dtype), device, repeats=max(1, repeats - 1))
    return profile


# -- the cache -----------------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("BLTBENCH_CACHE") or Path.home() / ".cache" / "bltbench") / "device-profiles"


def cache_path(config: BLTConfig, dtype: torch.dtype, device: str) -> Path:
    env = environment(device, dtype)
    key = json.dumps([env["device"], env["device_name"], dtype_name(dtype), torch.get_num_threads(), torch.__version__,
                      shape_signature(config)])
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def profile_for(bundle, device: str, path: str | Path | None = None, progress=None) -> DeviceProfile:
    """The profile a run prices with: the file given, else this machine's cached one for the bundle's
    shapes, dtype and threads, measured now on the bundle (and cached) if there is none."""
    config, dtype = bundle.config, bundle.dtype
    if path is not None:
        profile = DeviceProfile.read(path)
        check_matches(profile, config, dtype)
        return profile
    cached = cache_path(config, dtype, device)
    cached.parent.mkdir(parents=True, exist_ok=True)
    # Workers of one sweep starting together: one measures, the others wait and read what it cached
    # (two measuring at once would each time the other's load).
    with open(cached.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cached.exists():
            try:
                return DeviceProfile.read(cached)
            except BltbenchError:
                pass  # a damaged cache entry is measured again
        profile = measure_profile(bundle, device, progress=progress)
        profile.write(cached)
        return profile


def check_matches(profile: DeviceProfile, config: BLTConfig, dtype: torch.dtype) -> None:
    if profile.dtype != dtype_name(dtype):
        raise BltbenchError(f"the device profile was measured in {profile.dtype}, the run computes in {dtype_name(dtype)}")
    missing = [f"{o}x{i}" for o, i in model_shapes(config) if f"{o}x{i}" not in profile.matmul_s]
    if missing:
        raise BltbenchError(f"the device profile lacks this model's {missing[0]} matrix: measure one with "
                            "bltbench bench device --model ...")
