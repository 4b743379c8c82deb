"""Byte ids (DESIGN.md section 1): four specials, then byte b as id b + 4."""

from __future__ import annotations

BOE = 0  # left padding for hash windows
BOS = 1
EOS = 2
PAD = 3
OFFSET = 4
VOCAB_SIZE = 260  # output vocabulary: 4 specials + 256 bytes
MASK = 260  # BLT-D's input-only id; never predicted
SPECIAL_IDS = (BOE, BOS, EOS, PAD)


def encode_prompt(data: bytes) -> list[int]:
    """A prompt is BOS followed by its bytes."""
    return [BOS] + [b + OFFSET for b in data]


def ids_to_bytes(ids: list[int]) -> bytes:
    """Drop special ids and shift the rest back to bytes."""
    return bytes(i - OFFSET for i in ids if OFFSET <= i < VOCAB_SIZE)


def ids_to_text(ids: list[int]) -> str:
    return ids_to_bytes(ids).decode("utf-8", errors="replace")
