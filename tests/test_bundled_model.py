"""The bundled `tiny` model: it loads, its files stay small, and its held-out bits per byte on a fixed
file stays within 0.02 of what its model card records (a guard against a broken bundle)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bltbench.model.checkpoint import BUNDLED_DIR, bundled_models, load_model
from bltbench.training.evaluate import score_text

CARD = BUNDLED_DIR / "tiny" / "card.json"
DATA = Path(os.environ.get("BLTBENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BOUND = 0.02  # bits per byte


def test_tiny_is_bundled_small_and_complete():
    assert "tiny" in bundled_models()
    files = [p for p in (BUNDLED_DIR / "tiny").iterdir() if p.suffix == ".safetensors"]
    assert sum(p.stat().st_size for p in files) < 25 * 1024 * 1024
    assert all(p.stat().st_size < 12 * 1024 * 1024 for p in files)
    bundle = load_model("tiny")
    assert bundle.blt is not None and bundle.blt_d is not None and bundle.entropy is not None
    assert bundle.config.diffusion_blocks == (4, 8, 16)
    assert (BUNDLED_DIR / "tiny" / "MODEL_CARD.md").exists()


@pytest.mark.skipif(not (DATA / "flores101").is_dir(), reason="needs the shared data directory")
def test_heldout_bpb_matches_the_model_card():
    card = json.loads(CARD.read_text())
    check = card["regression_check"]
    lines = (DATA / check["file"]).read_text(encoding="utf-8").splitlines()[: check["lines"]]
    bundle = load_model("tiny")
    score = score_text(bundle.blt, bundle.entropy, bundle.config.patching, [line.encode() for line in lines])
    bpb, n = score.bpb, score.bytes
    assert n == check["bytes"]
    assert abs(bpb - check["bpb"]) <= BOUND, (bpb, check["bpb"])
