"""Task names a suite may use."""

from __future__ import annotations

from collections.abc import Callable

from bltbench.errors import BltbenchError
from bltbench.suites.tasks.base import GenerationTask, ScoringTask
from bltbench.suites.tasks.bpb import SOURCES, BitsPerByte
from bltbench.suites.tasks.code import MBPP, HumanEval
from bltbench.suites.tasks.diversity import Diversity
from bltbench.suites.tasks.likelihood import LikelihoodTask
from bltbench.suites.tasks.translation import FloresTranslation

Task = GenerationTask | ScoringTask

TASKS: dict[str, Callable[[], Task]] = {
    "flores-fr-en": lambda: FloresTranslation("fra", "eng"),
    "flores-de-en": lambda: FloresTranslation("deu", "eng"),
    "humaneval": HumanEval,
    "mbpp": MBPP,
    "diversity": Diversity,
    "arc-easy": lambda: LikelihoodTask("arc-easy", "bltbench_arc_easy"),
    "arc-challenge": lambda: LikelihoodTask("arc-challenge", "bltbench_arc_challenge"),
    "piqa": lambda: LikelihoodTask("piqa", "bltbench_piqa"),
    "hellaswag": lambda: LikelihoodTask("hellaswag", "bltbench_hellaswag"),
    "mmlu": lambda: LikelihoodTask("mmlu", "bltbench_mmlu", prefix="bltbench_mmlu_"),
    "bpb-flores-eng": lambda: BitsPerByte("bpb-flores-eng", ("flores-eng",)),
    "bpb": lambda: BitsPerByte("bpb", tuple(SOURCES)),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]()
    except KeyError:
        raise BltbenchError(f"unknown task {name!r} (choose from {', '.join(TASKS)})") from None
