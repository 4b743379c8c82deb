"""Entropy patching (DESIGN.md section 3).

Positions 0 and 1 always start a patch. For i >= 1, byte i+1 starts a new patch when the patch holding
byte i already has `max_patch_length` bytes, or by the entropy rule, as the official patcher applies
it: global, H_i > theta; monotonic, byte 2 always and then H_i - H_{i-1} > theta; global and monotonic
(`threshold_add`), byte 2 always, byte 3 never (the official mask excludes the position after a
forced start) and then H_i - H_{i-1} > theta_add and H_i > theta. Static mode cuts fixed-length
patches after the BOS patch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bltbench.model.config import PatchingConfig


def starts_new_patch(config: PatchingConfig, i: int, entropies: Sequence[float], current_length: int) -> bool:
    """Whether byte i+1 opens a new patch, given the entropies up to i and the open patch's length."""
    if i == 0:
        return True
    if config.max_patch_length is not None and current_length >= config.max_patch_length:
        return True
    if config.mode == "static":
        return current_length >= config.static_length
    if config.monotonic:
        return i == 1 or entropies[i] - entropies[i - 1] > config.threshold
    if config.threshold_add is not None:
        return i == 1 or (i >= 3 and entropies[i] - entropies[i - 1] > config.threshold_add
                          and entropies[i] > config.threshold)
    return entropies[i] > config.threshold


class PatchState:
    """The patch bookkeeping every decoding path shares: one start flag per position plus the next
    (ungenerated) one, the running count of starts, each patch's first position, and what pushing,
    previewing and truncating entropies does to them. Flags run one position ahead of the entropies:
    H_i decides whether byte i + 1 opens a patch."""

    def __init__(self, config: PatchingConfig) -> None:
        self.config = config
        self.entropies: list[float] = []
        self.starts: list[bool] = [True]  # position 0 (BOS) opens the first patch
        self.counts: list[int] = [1]  # starts among flags[0..i]
        self.begins: list[int] = [0]

    def __len__(self) -> int:
        """Positions whose entropy is known (flags are known for one more)."""
        return len(self.entropies)

    def copy(self) -> "PatchState":
        other = PatchState(self.config)
        other.entropies, other.starts = list(self.entropies), list(self.starts)
        other.counts, other.begins = list(self.counts), list(self.begins)
        return other

    def push(self, entropies: Sequence[float]) -> None:
        """Entropies of the next positions; decides the flags of the bytes after each."""
        for h in entropies:
            i = len(self.entropies)
            self.entropies.append(float(h))
            new = starts_new_patch(self.config, i, self.entropies, i - self.begins[-1] + 1)
            self.starts.append(new)
            self.counts.append(self.counts[-1] + new)
            if new:
                self.begins.append(i + 1)

    def complete(self, length: int) -> int:
        """Patches complete once `length` positions are in: those a later start closes."""
        return self.counts[length] - 1

    def last_complete(self, lengths: range) -> list[int]:
        """The last complete patch once each of `lengths` positions are in (-1: none yet)."""
        return [self.complete(length) - 1 for length in lengths]

    def latent_of(self, position: int) -> int:
        """The latent the decoder at `position` reads: the patch of byte position + 1, minus one."""
        return self.counts[position + 1] - 2

    def truncate(self, length: int) -> None:
        """Forget entropies from `length` on (the flag of byte `length` stays, H_{length-1} set it)."""
        del self.entropies[length:], self.starts[length + 1 :], self.counts[length + 1 :]
        while self.begins[-1] > length:
            self.begins.pop()

    def preview(self, entropies: Sequence[float]) -> list[bool]:
        """Flags as if `entropies` were pushed; nothing is kept (for bytes a method never ran)."""
        n = len(self)
        self.push(entropies)
        flags = list(self.starts)
        self.truncate(n)
        return flags

    def lengths(self, length: int) -> list[int]:
        """Lengths of the patches covering positions 0..length-1."""
        return lengths_from_starts(self.starts[:length])


def patch_starts(config: PatchingConfig, entropies: Sequence[float], length: int) -> list[bool]:
    """Start flags for positions 0..length: the last flag is the next, not yet generated, byte."""
    state = PatchState(config)
    state.push(entropies[:length])
    return state.starts


def batch_patch_flags(config: PatchingConfig, entropies: np.ndarray) -> np.ndarray:
    """`patch_starts` for every row of `entropies` [N, L] at once: flags [N, L + 1].

    Training patches every batch it draws: one scan over positions for all rows (only the max-length
    rule needs it) replaces a Python loop per row and position, 2.5x faster at 64 x 512 on a CPU core.
    Entropies are compared in float64, as the per-row rule compares Python floats.
    """
    n, length = entropies.shape
    h = np.asarray(entropies, dtype=np.float64)
    if config.mode == "static":
        rule = np.zeros((n, length), dtype=bool)
    elif config.monotonic:
        rule = np.zeros((n, length), dtype=bool)
        rule[:, 1:2] = True
        rule[:, 2:] = h[:, 2:] - h[:, 1:-1] > config.threshold
    elif config.threshold_add is not None:
        rule = np.zeros((n, length), dtype=bool)
        rule[:, 1:2] = True
        rule[:, 3:] = (h[:, 3:] - h[:, 2:-1] > config.threshold_add) & (h[:, 3:] > config.threshold)
    else:
        rule = h > config.threshold
    limit = config.max_patch_length
    if config.mode == "static":
        limit = config.static_length if limit is None else min(limit, config.static_length)
    flags = np.zeros((n, length + 1), dtype=bool)
    flags[:, 0] = True
    if length == 0:
        return flags
    flags[:, 1] = True  # i == 0: byte 1 always opens a patch
    if limit is None:
        flags[:, 2:] = rule[:, 1:]
        return flags
    current = np.ones(n, dtype=np.int64)
    for i in range(1, length):
        new = rule[:, i] | (current >= limit)
        flags[:, i + 1] = new
        current = np.where(new, 1, current + 1)
    return flags


def lengths_from_starts(flags: Sequence[bool]) -> list[int]:
    """Patch lengths over the positions the flags cover (the trailing next-byte flag excluded)."""
    lengths: list[int] = []
    for flag in flags:
        if flag or not lengths:
            lengths.append(1)
        else:
            lengths[-1] += 1
    return lengths


def patch_lengths(config: PatchingConfig, entropies: Sequence[float], length: int) -> list[int]:
    """Lengths of the patches covering positions 0..length-1."""
    return lengths_from_starts(patch_starts(config, entropies, length)[:length])
