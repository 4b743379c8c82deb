"""Where a sweep's work units run. The driver (`sweep.run_suite`) plans the units, and alone appends
the records they stream back to the run folder; an executor only runs units.

- `SerialExecutor`: one worker in this process, units in order (the default).
- `ray_executor.RayExecutor`: one worker per Ray actor, on this machine or a cluster (`--executor ray`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bltbench.errors import BltbenchError
from bltbench.runner.suite import Suite
from bltbench.runner.units import WorkUnit

EXECUTORS = ("serial", "ray")


@dataclass(frozen=True)
class WorkerArgs:
    """What every worker of a sweep is built from."""

    suite: Suite
    device: str = "cpu"
    data_dir: str | None = None
    compile: bool = False
    device_profile: str | None = None


class SerialExecutor:
    """Every unit in this process, one after another, on one worker (torch's threads as the sweep set them)."""

    name = "serial"
    shards_per_task = 1  # one unit per task: samples run in the suite's order

    def start(self, args: WorkerArgs) -> None:
        self.args = args

    def wait_ready(self) -> None:
        """The worker, built here (an executor's workers may start while the driver plans)."""
        from bltbench.runner.worker import SweepWorker

        a = self.args
        self.worker = SweepWorker(a.suite, a.device, a.data_dir, a.compile, a.device_profile)

    def run(self, units: list[WorkUnit], remaining: Callable[[WorkUnit], WorkUnit | None]) -> Iterator[dict]:
        for unit in units:
            yield from self.worker.run(unit)

    def environment(self) -> dict:
        return dict(self.worker.env)

    def close(self) -> None:
        pass


def make_executor(name: str, address: str | None = None, workers: int | None = None,
                  gpus_per_worker: float | None = None, threads: int | None = None):
    """The executor `--executor NAME` names; Ray's options are refused for the serial one."""
    if name == "serial":
        given = [flag for flag, value in (("--address", address), ("--workers", workers),
                                          ("--gpus-per-worker", gpus_per_worker)) if value is not None]
        if given:
            raise BltbenchError(f"{', '.join(given)} only apply with --executor ray")
        return SerialExecutor()
    if name == "ray":
        from bltbench.runner.ray_executor import RayExecutor

        return RayExecutor(address, workers, gpus_per_worker, threads)
    raise BltbenchError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})")


def executor_for(suite: Suite, name: str | None = None, address: str | None = None, workers: int | None = None,
                 gpus_per_worker: float | None = None):
    """The executor a sweep of `suite` runs on: what is given here, else what the suite's `executor:` says
    (its options only when the executor is the one it names)."""
    choice = suite.executor
    name = name or choice.name
    if name == choice.name:
        address = address if address is not None else choice.address
        workers = workers if workers is not None else choice.workers
        gpus_per_worker = gpus_per_worker if gpus_per_worker is not None else choice.gpus_per_worker
    return make_executor(name, address, workers, gpus_per_worker, suite.timing.threads)
