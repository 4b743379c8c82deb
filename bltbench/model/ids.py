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


def prompt_ids(prompt) -> list[int]:
    """A prompt given as text (UTF-8), raw bytes, or ids that start with BOS, as ids."""
    from collections.abc import Sequence

    from bltbench.errors import BltbenchError

    if isinstance(prompt, str):
        prompt = prompt.encode("utf-8")
    if isinstance(prompt, (bytes, bytearray)):
        if not prompt:
            raise BltbenchError("the prompt is empty")
        return encode_prompt(bytes(prompt))
    if isinstance(prompt, Sequence) and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
        if len(prompt) < 2 or prompt[0] != BOS or not all(0 <= i < VOCAB_SIZE for i in prompt):
            raise BltbenchError(f"prompt ids start with BOS ({BOS}) and hold at least one more id below {VOCAB_SIZE}")
        return list(prompt)
    raise BltbenchError(f"a prompt is a str, bytes or a list of ids, got {type(prompt).__name__}")
