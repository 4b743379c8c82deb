"""Building model modules straight at their precision and device (DESIGN.md section 12).

A module is first built on the meta device (no memory), so its size is known before anything is
allocated: a model that will not fit is one error line saying how much it needs. It is then
materialised once, in the requested dtype on the requested device, never as an fp32 copy cast later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from bltbench.errors import BltbenchError

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
GB = 1e9


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """fp32 | bf16 | fp16 (or float32, bfloat16, float16); None stays None (the loader's default)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[str(name).strip().lower()]
    except KeyError:
        raise BltbenchError(f"unknown dtype {name!r} (choose from fp32, bf16, fp16)") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_dtype_runs(dtype: torch.dtype, device: str | torch.device) -> None:
    """One error line when the device cannot compute in this dtype (a matmul, a softmax, a norm)."""
    device = torch.device(device)
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise BltbenchError(f"{device} cannot compute in bfloat16; use --dtype fp16 or fp32")
    try:
        x = torch.ones(2, 8, dtype=dtype, device=device)
        y = torch.softmax(torch.nn.functional.linear(x, x), dim=-1)
        torch.linalg.vector_norm(y.float(), dim=-1).sum().item()
    except (RuntimeError, NotImplementedError) as exc:
        raise BltbenchError(f"{device} cannot compute in {dtype_name(dtype)}: {str(exc).splitlines()[0]}") from None


def available_bytes(device: str | torch.device) -> int | None:
    """Memory free for new tensors: MemAvailable on a CPU (Linux), free memory on a GPU; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def weight_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


META_NO_INIT = ("normal_", "uniform_", "kaiming_uniform_", "trunc_normal_", "xavier_uniform_", "zeros_", "ones_",
                "constant_")


def on_meta(factory: Callable[[], nn.Module], dtype: torch.dtype) -> nn.Module:
    """The module's structure and sizes, in `dtype`, without allocating a weight. Layers' initialisers
    are skipped: meta tensors hold no values (materialising leaves them undefined anyway), and a first
    initialiser on the meta device costs seconds of one-off setup."""
    saved = {name: getattr(nn.init, name) for name in META_NO_INIT}
    for name in META_NO_INIT:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        with torch.device("meta"):
            return factory().to(dtype)
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def ensure_fits(label: str, modules: Iterable[nn.Module], device: str | torch.device, extra: int = 0,
                advice: str = "") -> None:
    """One error line when the weights (meta modules) plus `extra` bytes (what building them needs on
    top) exceed the device's free memory."""
    modules = list(modules)
    weights = sum(weight_bytes(m) for m in modules)
    free = available_bytes(device)
    if free is None or weights + extra <= free:
        return
    dtype = next(modules[0].parameters()).dtype if modules else torch.float32
    tips = ([] if dtype.itemsize <= 2 else ["--dtype bf16"]) + ([advice] if advice else [])
    raise BltbenchError(
        f"{label} needs {(weights + extra) / GB:.1f} GB: {weights / GB:.1f} GB of weights in {dtype_name(dtype)}"
        + (f" + {extra / GB:.1f} GB while building them" if extra else "")
        + f", but {free / GB:.1f} GB is free on {torch.device(device)}"
        + (f" (try {' or '.join(tips)})" if tips else "")
    )


def materialise(module: nn.Module, device: str | torch.device) -> nn.Module:
    """Allocate a meta module's tensors on `device` (values undefined) and recompute its buffers."""
    module = module.to_empty(device=device)
    for sub in module.modules():
        if hasattr(sub, "reset_buffers"):
            sub.reset_buffers()
    return module


def largest_tensor_bytes(modules: Iterable[nn.Module], element_size: int = 4) -> int:
    """The biggest single weight, at `element_size` bytes per value: what initialising one costs on top."""
    return max((p.numel() * element_size for m in modules for p in m.parameters()), default=0)
