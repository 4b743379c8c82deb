"""What runs a sweep's work units: the suite's model loaded once, each unit's records yielded as they
are made. A serial sweep runs one in its own process; a Ray sweep runs one per actor (`ray_executor`).

Every record says where it was made (`PLACEMENT`: worker, host, device), so a report can keep timings
from different machines apart; nothing else in a record depends on the worker that made it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import torch

from bltbench.decoding.methods import MethodSpec
from bltbench.instrumentation.bandwidth import price
from bltbench.instrumentation.device_profile import profile_for
from bltbench.instrumentation.environment import environment
from bltbench.instrumentation.measure import measure, median_of_repeats, own_params
from bltbench.instrumentation.meter import Meter
from bltbench.instrumentation.params import profile
from bltbench.instrumentation.roofline import Roofline
from bltbench.instrumentation.timing import interleaved
from bltbench.model.checkpoint import load_model
from bltbench.model.ids import encode_prompt
from bltbench.runner.suite import Suite
from bltbench.runner.units import WorkUnit
from bltbench.suites.data import DataSource
from bltbench.suites.scorer import Scorer
from bltbench.suites.tasks.base import Sample, Scored, ScoringTask
from bltbench.suites.tasks.registry import get_task

PLACEMENT = ("worker", "host", "pid", "device", "device_name")  # where a record was made, not what it measured
TIMING = ("wall_s", "prefill_s", "ttft_s", "decode_s", "ms_per_byte", "bytes_per_s", "roofline_fraction", "time")  # when


class SweepWorker:
    """The suite's model on one device, with its roofline; `run(unit)` yields the unit's records."""

    def __init__(self, suite: Suite, device: str = "cpu", data_dir: str | None = None, compile: bool = False,
                 device_profile: str | None = None, name: str = "main") -> None:
        self.suite, self.device = suite, device
        self.steps = "compiled" if compile or suite.compile else "eager"
        self.data = DataSource(data_dir or suite.data_dir)
        self.bundle = load_model(suite.model, device, suite.dtype, suite.hash_buckets, suite.weights,
                                 suite.entropy_model)
        for spec in suite.methods:
            spec.validate(self.bundle)
        self.labels = {spec.label: spec for spec in suite.methods}
        self.env = environment(device, self.bundle.dtype)
        self.roofline = None
        if device_profile != "off":  # measured at this worker's threads and dtype (cached per machine), or a file
            measured = profile_for(self.bundle, device, device_profile)
            self.roofline = Roofline(self.bundle.config, measured, self.bundle.dtype)
            self.env["device_profile"] = measured.to_json()
        self.placement = {"worker": name, "host": socket.gethostname(), "pid": os.getpid(),
                          "device": self.env["device"], "device_name": self.env["device_name"]}
        self.env.update(self.placement)
        self._tasks: dict[int, object] = {}
        self._scorers: dict[str, Scorer] = {}
        for entry in range(len(suite.tasks)):  # scoring tasks read their data now, while the driver plans
            self.task(entry)

    def task(self, entry: int):
        if entry not in self._tasks:
            task = get_task(self.suite.tasks[entry].name)
            if isinstance(task, ScoringTask):
                task.load(self.data)
            self._tasks[entry] = task
        return self._tasks[entry]

    def run(self, unit: WorkUnit) -> Iterator[dict]:
        """The unit's records, each as soon as it is made."""
        entry, task = self.suite.tasks[unit.entry], self.task(unit.entry)
        if unit.kind == "generation":
            for item in unit.items:
                yield from self._generate(entry, task, item.sample, item.labels)
            return
        by_label: dict[str, list[Sample]] = {}
        for item in unit.items:
            (label,) = item.labels
            by_label.setdefault(label, []).append(item.sample)
        for label, samples in by_label.items():
            spec = self.labels[label]
            scorer = self._scorers.get(label) or self._scorers.setdefault(
                label, Scorer(self.bundle, spec, device=self.device, steps=self.steps))
            for result in task.evaluate(scorer, samples):
                yield {**_scoring_record(spec, task, result, self.bundle, self.suite.project), **self.placement}

    def _generate(self, entry, task, sample: Sample, labels: tuple[str, ...]) -> Iterator[dict]:
        """Every pending method on one prompt, `repeats` rounds interleaved (A B C A B C), so a busy
        machine slows every method alike; each record keeps the median timing."""
        budget = entry.max_bytes or task.max_bytes
        repeats = self.suite.timing.repeats
        ids = encode_prompt(sample.prompt.encode())
        timed = interleaved(list(labels), repeats, lambda label: measure(
            self.labels[label], self.bundle, ids, budget, entry.sampling, self.device, self.suite.project,
            stop=task.stop, steps=self.steps, roofline=self.roofline))
        for label in labels:
            record = _generation_record(self.labels[label], task, sample, entry, budget,
                                        median_of_repeats(timed[label]), repeats)
            yield {**record, **self.placement}


def _generation_record(spec: MethodSpec, task, sample: Sample, entry, budget: int, m, repeats: int) -> dict:
    completion = task.postprocess(m.generation.text)
    return {
        "method": spec.label,
        "task": task.name,
        "sample_id": sample.id,
        "settings": {**settings_of(spec), "sampling": vars(entry.sampling), "max_bytes": budget},
        "completion": completion,
        "score": task.score(sample, completion),
        **{k: v for k, v in m.to_json().items() if k not in ("method", "output")},
        "timing_repeats": repeats,
        "threads": torch.get_num_threads(),
        "output": m.generation.text,
        "time": time.time(),
    }


def settings_of(spec: MethodSpec) -> dict:
    return {"name": spec.name, "k": spec.k, "weights": spec.runs_on,
            "diffusion": vars(spec.diffusion) if spec.diffusion else None}


def _scoring_record(spec: MethodSpec, task: ScoringTask, scored: Scored, bundle, projections: tuple[str, ...]) -> dict:
    """A scoring task's per-sample record: scores, what the task kept, and what the scoring passes
    cost (NFEs by component, sequences run, bytes scored, bandwidth of the weights they read)."""
    u = scored.usage
    bw = price(u.counted, own_params(bundle))
    return {
        "method": spec.label,
        "task": task.name,
        "sample_id": scored.sample.id,
        "kind": "scoring",
        "settings": settings_of(spec),
        "score": scored.score,
        "detail": scored.detail,
        "nfe": Meter.nfe(u.counted),
        "positions": Meter.positions(u.counted),
        "sequences": u.sequences,
        "bytes_scored": u.bytes_scored,
        "bytes_generated": u.bytes_generated,
        "bandwidth_gb": bw.paper_gb,
        "bandwidth_gb_ext": bw.extended_gb,
        "bandwidth_gb_kv": bw.kv_gb,
        "projected": {name: {"bandwidth_gb": p.paper_gb, "bandwidth_gb_ext": p.extended_gb, "bandwidth_gb_kv": p.kv_gb}
                      for name, p in ((name, price(u.counted, profile(name))) for name in projections)},
        "wall_s": u.wall_s,
        "time": time.time(),
    }
