"""Stop strings inside decoding, so a method stops paying for bytes past the end of the answer.

Stop strings are matched on bytes (UTF-8 for text), only over windows that end in newly committed
bytes. The output is cut where the earliest stop string begins (the string itself is not part of the
completion, as lm-eval's `until` expects). Methods that commit several bytes per pass may overshoot
within that pass; the work is counted, the bytes are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

from bltbench.errors import BltbenchError
from bltbench.model.ids import OFFSET


class StopStrings:
    def __init__(self, strings: Iterable[str | bytes] = ()) -> None:
        patterns = []
        for s in strings:
            data = s.encode("utf-8") if isinstance(s, str) else bytes(s)
            if not data:
                raise BltbenchError("a stop string must not be empty")
            patterns.append(tuple(b + OFFSET for b in data))
        self.patterns: tuple[tuple[int, ...], ...] = tuple(patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def first_hit(self, out: list[int], new_from: int) -> int | None:
        """Where in `out` the earliest stop string begins, among those ending at index >= new_from."""
        best: int | None = None
        for pattern in self.patterns:
            n = len(pattern)
            for start in range(max(0, new_from - n + 1), len(out) - n + 1):
                if best is not None and start >= best:
                    break
                if tuple(out[start : start + n]) == pattern:
                    best = start
                    break
        return best

    def cut(self, out: list[int], new_from: int) -> bool:
        """Truncate `out` before the earliest stop string that ends in the new bytes; True if one did."""
        hit = self.first_hit(out, new_from) if self.patterns else None
        if hit is None:
            return False
        del out[hit:]
        return True


NO_STOP = StopStrings()
