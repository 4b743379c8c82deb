"""Task names a suite may use."""

from __future__ import annotations

from collections.abc import Callable

from bltbench.errors import BltbenchError
from bltbench.suites.tasks.base import GenerationTask
from bltbench.suites.tasks.code import MBPP, HumanEval
from bltbench.suites.tasks.diversity import Diversity
from bltbench.suites.tasks.translation import FloresTranslation

TASKS: dict[str, Callable[[], GenerationTask]] = {
    "flores-fr-en": lambda: FloresTranslation("fra", "eng"),
    "flores-de-en": lambda: FloresTranslation("deu", "eng"),
    "humaneval": HumanEval,
    "mbpp": MBPP,
    "diversity": Diversity,
}


def get_task(name: str) -> GenerationTask:
    try:
        return TASKS[name]()
    except KeyError:
        raise BltbenchError(f"unknown task {name!r} (choose from {', '.join(TASKS)})") from None
