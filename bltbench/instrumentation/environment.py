"""What a timing was measured on: device, CPU or GPU model, threads, dtype, torch version and the
machine's load, so a reader can tell a quiet run from one that fought another process for cores."""

from __future__ import annotations

import os
import platform

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average (None where the OS does not report one)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def environment(device: str | torch.device, dtype: torch.dtype | str | None = None) -> dict:
    device = torch.device(device)
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_start": load_average(),
    }


def overloaded(env: dict) -> bool:
    """The machine ran more than the run's threads could have alone: load above threads at either end
    (`threads_total`: the threads of every worker a run had on this machine)."""
    loads = [env.get("load_start"), env.get("load_end")]
    threads = env.get("threads_total") or env.get("threads") or 1
    return any(load is not None and load > threads + 0.5 for load in loads)
