"""Each task scores a known answer correctly on a handful of real rows from the data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bltbench.errors import BltbenchError
from bltbench.suites.data import DataSource
from bltbench.suites.tasks.registry import get_task

DATA = Path(os.environ.get("BLTBENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(not (DATA / "flores101").is_dir(), reason="needs the shared data directory")


@pytest.fixture(scope="module")
def data():
    return DataSource(DATA)


@pytest.mark.parametrize("name", ["flores-fr-en", "flores-de-en"])
def test_translation_reference_scores_100_and_a_wrong_one_low(data, name):
    task = get_task(name)
    samples = task.samples(data, limit=5)
    assert samples[0].prompt.count("\n\n") == 4 and samples[0].prompt.endswith("English:")
    refs = [s.reference for s in samples]
    perfect = task.aggregate(samples, refs, [task.score(s, r) for s, r in zip(samples, refs)])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    assert "tok:13a" in perfect["bleu_signature"]
    wrong = ["zzz qqq"] * len(samples)
    assert task.aggregate(samples, wrong, [task.score(s, w) for s, w in zip(samples, wrong)])["bleu"] < 1.0
    assert task.postprocess(" The answer.\nFrench: more") == "The answer."


def test_mbpp_reference_code_passes_and_wrong_code_fails(data):
    task = get_task("mbpp")
    samples = task.samples(data, limit=3)
    assert samples[0].id == "mbpp/11" and samples[0].prompt.count("[DONE]") == 3
    good = [s.reference["code"].replace("\r", "") for s in samples]
    scores = [task.score(s, c) for s, c in zip(samples, good)]
    assert task.aggregate(samples, good, scores)["pass@1"] == 1.0
    bad = ["def nothing():\n    pass"] * len(samples)
    assert task.aggregate(samples, bad, [task.score(s, c) for s, c in zip(samples, bad)])["pass@1"] == 0.0
    assert task.postprocess("x = 1\n[DONE]\nmore") == "x = 1\n"


def test_humaneval_canonical_solution_passes_and_wrong_fails(data):
    task = get_task("humaneval")
    samples = task.samples(data, limit=3)
    good = [s.reference["canonical_solution"] for s in samples]
    assert task.aggregate(samples, good, [task.score(s, c) for s, c in zip(samples, good)])["pass@1"] == 1.0
    bad = ["    return None\n"] * len(samples)
    assert task.aggregate(samples, bad, [task.score(s, c) for s, c in zip(samples, bad)])["pass@1"] == 0.0


def test_diversity_ttr(data):
    task = get_task("diversity")
    s = task.samples(data, limit=1)[0]
    assert task.score(s, "a b c d")["ttr"] == 1.0 and task.score(s, "a a a a")["ttr"] == 0.25


def test_missing_dataset_and_unknown_task(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(BltbenchError, match="BLTBENCH_DATA"):
        DataSource(tmp_path).flores("devtest", "fra")
    with pytest.raises(BltbenchError, match="unknown task"):
        get_task("squad")
