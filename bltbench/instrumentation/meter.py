"""The meter every decoding method reports to: one record per component call.

It is an observer of `IncrementalBLT` (and of the recompute path): the model layer knows nothing of
it. Prefill calls are kept apart from generation; per-byte figures use generation only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bltbench.model.incremental import Call

COMPONENTS = ("entropy", "encoder", "global", "decoder")
GENERATION_ROLES = ("step", "draft", "verify")


def counted(calls) -> list[Call]:
    """The calls a method's NFEs and bandwidth count: not work run ahead and then discarded."""
    return [c for c in calls if not c.discarded]


@dataclass
class Meter:
    calls: list[Call] = field(default_factory=list)

    def __call__(self, call: Call) -> None:
        self.calls.append(call)

    def generation(self) -> list[Call]:
        """The method's generation calls: what its NFEs and bandwidth count."""
        return counted(c for c in self.calls if c.role != "prefill")

    def executed(self) -> list[Call]:
        """Every generation call that ran, work run ahead and then not needed included: what the
        clock (and the roofline that predicts it) sees."""
        return [c for c in self.calls if c.role != "prefill"]

    def prefill(self) -> list[Call]:
        return [c for c in self.calls if c.role == "prefill"]

    @staticmethod
    def nfe(calls: list[Call]) -> dict[str, int]:
        """Calls per component, every component present."""
        counts = Counter(c.component for c in calls)
        return {name: counts.get(name, 0) for name in COMPONENTS}

    @staticmethod
    def nfe_by_role(calls: list[Call]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for c in calls:
            out.setdefault(c.role, {name: 0 for name in COMPONENTS})[c.component] += 1
        return out

    @staticmethod
    def positions(calls: list[Call]) -> dict[str, int]:
        totals = {name: 0 for name in COMPONENTS}
        for c in calls:
            totals[c.component] += c.positions
        return totals
