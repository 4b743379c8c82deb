"""Bits per byte of a model's causal next-byte path (computed in the model layer, which suites share)."""

from __future__ import annotations

from bltbench.model.scoring import bits_per_byte

__all__ = ["bits_per_byte"]
