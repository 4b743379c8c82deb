"""Bits per byte of a model's causal next-byte path (computed in the model layer, which suites share)."""

from __future__ import annotations

from bltbench.model.scoring import TextScore, score_text

__all__ = ["TextScore", "score_text"]
