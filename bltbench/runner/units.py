"""A sweep cut into work units: what one worker runs with its model loaded once.

A generation unit is a shard of one task's samples, each with the methods it still lacks (they run
interleaved on the one worker, so methods are always compared on the same device, side by side). A
scoring unit is a shard of one scoring task's samples for the method that scores them for its weights.
Shards are cut from atoms (a sample, or the samples a scoring task must evaluate together for its
scores not to depend on the cut) and balanced by size, longest first, so no worker is left with the
long prompts while the others wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from bltbench.suites.tasks.base import Sample


@dataclass(frozen=True)
class WorkItem:
    sample: Sample
    labels: tuple[str, ...]  # the methods that still lack this sample (scoring: the one that scores it)


@dataclass(frozen=True)
class WorkUnit:
    kind: str  # "generation" or "scoring"
    entry: int  # index of the suite's task entry
    items: tuple[WorkItem, ...]
    cost: float  # relative size, for balancing and for dispatching the largest first

    def remaining(self, has) -> "WorkUnit | None":
        """This unit less the (method, task, sample) records `has` already holds (None: nothing left)."""
        items = []
        for item in self.items:
            labels = tuple(label for label in item.labels if not has(label, item.sample.id))
            if labels:
                items.append(WorkItem(item.sample, labels))
        return WorkUnit(self.kind, self.entry, tuple(items), self.cost) if items else None


def sample_cost(sample: Sample, budget: int = 0) -> float:
    """What a sample costs to run, in bytes: its prompt (or its text, when scored) and the bytes generated."""
    reference = sample.reference if isinstance(sample.reference, str) else ""
    return len(sample.prompt.encode()) + len(reference.encode()) + budget + 1


def balanced_shards(atoms: list[list[WorkItem]], costs: list[float], shards: int) -> list[tuple[list[WorkItem], float]]:
    """Atoms dealt into at most `shards` shards, each atom to the lightest shard, largest atoms first
    (longest-processing-time order); a shard keeps its atoms in their original order. Returns each
    shard's items and cost."""
    shards = max(1, min(shards, len(atoms)))
    order = sorted(range(len(atoms)), key=lambda i: -costs[i])
    load = [0.0] * shards
    members: list[list[int]] = [[] for _ in range(shards)]
    for i in order:
        lightest = min(range(shards), key=lambda s: load[s])
        members[lightest].append(i)
        load[lightest] += costs[i]
    return [([item for i in sorted(m) for item in atoms[i]], cost) for m, cost in zip(members, load) if m]


def make_units(kind: str, entry: int, atoms: list[list[WorkItem]], costs: list[float], shards: int) -> list[WorkUnit]:
    """One task's atoms as up to `shards` balanced units."""
    return [WorkUnit(kind, entry, tuple(items), cost) for items, cost in balanced_shards(atoms, costs, shards)]
