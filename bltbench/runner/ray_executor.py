"""Sweeps on Ray: one actor per worker, each loading the model once (on its own GPU when it asks for
one), running work units and streaming each record back as it is made.

Only the driver writes the run folder. A worker that dies (killed, out of memory, its node lost) is
replaced and its unit re-queued less what it had already streamed back, so nothing is lost or run
twice; a worker that fails with an error stops the sweep with that error. Without `--address` a
local Ray is started for the run, with as many CPUs as its workers use, under Ray's token
authentication (Ray 2.60 binds its servers to this machine's address even when asked for 127.0.0.1:
it rewrites loopback to the node's IP, so the token is what keeps other hosts out).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator

from bltbench.errors import BltbenchError
from bltbench.runner.executors import WorkerArgs
from bltbench.runner.units import WorkUnit

MISSING = "--executor ray needs Ray: pip install 'bltbench[ray]' (make setup installs it)"
FORWARDED_ENV = ("BLTBENCH_", "HF_", "TRANSFORMERS_")  # settings the driver's workers must see too
MAX_DEATHS_PER_WORKER = 3


def import_ray():
    if "RAY_AUTH_MODE" not in os.environ and _token_available():
        # `ray start` turns token authentication on, but a driver given an address sends its token only
        # when told to before Ray is imported (a cluster without authentication accepts it too)
        os.environ["RAY_AUTH_MODE"] = "token"
    try:
        import ray
    except ImportError:
        raise BltbenchError(MISSING) from None
    return ray


class _Actor:
    """One Ray worker: a SweepWorker built at its own thread count; errors building it are returned
    by `ready`, not raised, so the driver can report them in one line."""

    def __init__(self, args: WorkerArgs, threads: int, name: str) -> None:
        import torch

        from bltbench.runner.worker import SweepWorker

        torch.set_num_threads(threads)
        self.worker, self.error = None, None
        try:
            self.worker = SweepWorker(args.suite, args.device, args.data_dir, args.compile, args.device_profile, name)
        except BltbenchError as e:
            self.error = str(e)

    def ready(self) -> dict:
        return {"error": self.error} if self.error else {"env": self.worker.env}

    def run(self, unit: WorkUnit) -> Iterator[dict]:
        yield from self.worker.run(unit)


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, gpus_per_worker: float | None = None,
                 threads: int | None = None, shards_per_task: int | None = None) -> None:
        self.ray = import_ray()
        if workers is not None and workers < 1:
            raise BltbenchError(f"--workers must be >= 1, got {workers}")
        if gpus_per_worker is not None and gpus_per_worker < 0:
            raise BltbenchError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
        self.address, self.workers, self.gpus, self.threads = address, workers, gpus_per_worker, threads or 1
        self.started_ray = False
        self.actors: list = []
        self.envs: list[dict] = []  # every worker that started, replacements included
        self.live: dict[int, dict] = {}  # the environment of the worker now in each slot
        self.deaths = 0
        self._shards = shards_per_task

    @property
    def shards_per_task(self) -> int:
        return self._shards or 2 * (self.workers or 1)  # more units than workers: the last ones balance the load

    def start(self, args: WorkerArgs) -> None:
        ray = self.ray
        self.args = args
        if self.gpus is None:
            self.gpus = 1.0 if args.device.startswith("cuda") else 0.0
        env_vars = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
        quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     runtime_env={"env_vars": env_vars})
        gpus = _local_gpus() if self.gpus and self.address is None else 0
        if self.address is None:
            if self.gpus and not self.workers:
                self.workers = max(1, int(gpus // self.gpus))
            self.workers = self.workers or max(1, (os.cpu_count() or 1) // self.threads)
            if self.gpus and self.workers * self.gpus > gpus:
                raise BltbenchError(f"{self.workers} Ray worker(s) at {self.gpus:g} GPU(s) each need "
                                    f"{self.workers * self.gpus:g} GPUs; this machine has {gpus}")
        try:
            if self.address is None:
                ray.init(address="local", num_cpus=self.workers * self.threads, num_gpus=gpus,
                         _node_ip_address="127.0.0.1", object_store_memory=256 * 1024**2, **quiet)
            else:
                _reachable(self.address)
                quiet.pop("include_dashboard")
                ray.init(address=self.address, **quiet)
                if self.workers is None:
                    resources = ray.cluster_resources()
                    by_gpu = int(resources.get("GPU", 0) // self.gpus) if self.gpus else None
                    self.workers = max(1, by_gpu if by_gpu is not None else int(resources.get("CPU", 1) // self.threads))
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BltbenchError(f"could not start or reach Ray{f' at {self.address}' if self.address else ''}: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self.started_ray = True
        # Every worker starts now, in parallel, while the driver reads the tasks' samples; `wait_ready`
        # collects them (the device profile is measured once per machine: the others wait for it).
        self.actors = [self._spawn(i, wait=False) for i in range(self.workers)]

    def wait_ready(self) -> None:
        for index, actor in enumerate(self.actors):
            self._ready(actor, index)

    def _spawn(self, index: int, wait: bool = True):
        """Worker `ray-{index}` (a fresh actor; a replacement keeps the name of the one it replaces)."""
        remote = self.ray.remote(_Actor).options(num_cpus=self.threads, num_gpus=self.gpus, max_restarts=0)
        actor = remote.remote(self.args, self.threads, f"ray-{index}")
        if wait:
            self._ready(actor, index)
        return actor

    def _ready(self, actor, index: int) -> None:
        try:
            state = self.ray.get(actor.ready.remote())
        except self.ray.exceptions.RayError as e:
            raise BltbenchError(f"a Ray worker could not start: {_first_line(e)}") from None
        if state.get("error"):
            raise BltbenchError(state["error"])
        self.envs.append(state["env"])
        self.live[index] = state["env"]

    def run(self, units: list[WorkUnit], remaining: Callable[[WorkUnit], WorkUnit | None]) -> Iterator[dict]:
        """Records as they arrive, largest units dispatched first to whichever worker is free."""
        ray = self.ray
        queue = sorted(units, key=lambda u: -u.cost)
        idle = list(range(len(self.actors)))
        running: dict = {}
        while queue or running:
            while queue and idle:
                index, unit = idle.pop(0), queue.pop(0)
                running[self.actors[index].run.options(num_returns="streaming").remote(unit)] = (index, unit)
            ready, _ = ray.wait(list(running), num_returns=1)
            for stream in ready:
                index, unit = running[stream]
                try:
                    record = ray.get(next(stream))
                except StopIteration:
                    del running[stream]
                    idle.append(index)
                    continue
                except ray.exceptions.RayTaskError as e:  # the worker raised: a bug or bad input, not a lost worker
                    raise BltbenchError(f"worker ray-{index} failed: {_first_line(e)}") from None
                except ray.exceptions.RayError as e:  # the worker died: replace it, re-queue what it had left
                    del running[stream]
                    self.deaths += 1
                    if self.deaths > MAX_DEATHS_PER_WORKER * len(self.actors):
                        raise BltbenchError(f"Ray workers died {self.deaths} times; last: {_first_line(e)}") from None
                    rest = remaining(unit)
                    if rest is not None:
                        queue.insert(0, rest)
                    self.actors[index] = self._spawn(index)
                    idle.append(index)
                    continue
                yield record

    def environment(self) -> dict:
        """The driver's view: the executor, its workers' environments, and the device profile when every
        worker priced with the same one."""
        profiles = {str(env.get("device_profile")) for env in self.envs}
        here = [e for e in self.live.values() if e.get("host") == socket.gethostname()]
        env = {"executor": "ray", "address": self.address or "local", "workers": self.envs,
               "worker_deaths": self.deaths, "threads_total": sum(e.get("threads") or 1 for e in here) or None}
        if len(profiles) == 1 and self.envs and self.envs[0].get("device_profile"):
            env["device_profile"] = self.envs[0]["device_profile"]
        for key in ("device", "device_name", "cpu", "cpu_cores", "threads", "dtype", "torch", "python", "load_start"):
            values = {str(e.get(key)) for e in self.envs}
            if len(values) == 1 and self.envs:
                env[key] = self.envs[0].get(key)
        return env

    def close(self) -> None:
        if self.started_ray:
            for actor in self.actors:
                try:
                    self.ray.kill(actor)
                except Exception:  # already gone
                    pass
            self.ray.shutdown()
            self.started_ray = False


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or os.path.exists(os.path.expanduser("~/.ray/auth_token")))


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse, in one line and seconds, a HOST:PORT no Ray head listens on (Ray itself retries for minutes).
    Other forms ("auto", "ray://...") are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise BltbenchError(f"no Ray cluster answers at {address} ({e.strerror or type(e).__name__}); "
                            "start one with `ray start --head`, or leave out --address for a local one") from None


def _first_line(error: Exception) -> str:
    """The message of the error a worker raised (Ray wraps it in its own traceback text)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        text = str(cause) or type(cause).__name__
    else:
        lines = [line for line in str(error).splitlines() if line.strip()]
        text = lines[-1] if lines else type(error).__name__
    return text.splitlines()[0][:300]
