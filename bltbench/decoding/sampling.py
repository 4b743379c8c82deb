"""Turning logits into a byte: greedy, temperature, top-k and top-p, with an explicit generator."""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch

from bltbench.errors import BltbenchError
from bltbench.model.ids import BOE, BOS, EOS, PAD


@dataclass
class SamplingConfig:
    """temperature 0 means greedy. `suppress_special` keeps BOE/BOS/PAD out of generated text;
    `suppress_eos` forces full-length outputs (benchmarks)."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    suppress_special: bool = True
    suppress_eos: bool = False

    @property
    def banned(self) -> list[int]:
        return ([BOE, BOS, PAD] if self.suppress_special else []) + ([EOS] if self.suppress_eos else [])

    def validate(self) -> None:
        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        def integer(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if not number(self.temperature) or self.temperature < 0:
            raise BltbenchError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if self.top_k is not None and (not integer(self.top_k) or self.top_k < 1):
            raise BltbenchError(f"top-k must be an integer >= 1, got {self.top_k!r}")
        if self.top_p is not None and (not number(self.top_p) or not 0 < self.top_p <= 1):
            raise BltbenchError(f"top-p must be in (0, 1], got {self.top_p!r}")
        if not integer(self.seed):
            raise BltbenchError(f"seed must be an integer, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Sampler:
    """Draws ids on the device: a pick is a tensor, so decoding sends the host only what its control
    flow needs. The banned-id bias is built once per vocabulary size."""

    def __init__(self, config: SamplingConfig, device: torch.device | str = "cpu") -> None:
        config.validate()
        self.config = config
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self._bias: torch.Tensor | None = None

    def bias(self, logits: torch.Tensor) -> torch.Tensor:
        """Additive [V] bias: -inf on banned ids, 0 elsewhere."""
        v = logits.shape[-1]
        if self._bias is None or self._bias.shape[0] != v or self._bias.device != logits.device:
            bias = torch.zeros(v, dtype=torch.float32, device=logits.device)
            bias[self.config.banned] = float("-inf")
            self._bias = bias
        return self._bias

    def allowed(self, logits: torch.Tensor) -> torch.Tensor:
        """fp32 logits with banned ids at -inf."""
        return logits.float() + self.bias(logits)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution sampling draws from (after suppression, temperature, top-k, top-p)."""
        c = self.config
        logits = self.allowed(logits)
        if c.greedy:
            probs = torch.zeros_like(logits)
            probs.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
            return probs
        logits = logits / c.temperature
        if c.top_k is not None and c.top_k < logits.shape[-1]:
            kth = torch.topk(logits, c.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if c.top_p is not None and c.top_p < 1:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each entry
            sorted_p = sorted_p.masked_fill(before >= c.top_p, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
            probs = probs / probs.sum(-1, keepdim=True)
        return probs

    def draw(self, probs: torch.Tensor) -> torch.Tensor:
        """One id per row of probs [N, V], on the device: [N]."""
        return torch.multinomial(probs, 1, generator=self.generator).flatten()

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """One id per row of logits [N, V] (or [V]), on the device: [N] (or [1])."""
        logits = logits.reshape(-1, logits.shape[-1])
        if self.config.greedy:
            return self.allowed(logits).argmax(-1)
        return self.draw(self.probs(logits))

    def sample(self, logits: torch.Tensor) -> int:
        """One id from logits [V], on the host (the full-recompute baseline reads it at once)."""
        return int(self.pick(logits)[0])
