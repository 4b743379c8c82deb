"""What a method scores text with, metered: the likelihood side of every decoding method.

Likelihoods come from the causal next-byte path of the weights the method decodes with: BLT for
`blt` and `blt-s-K` (BLT-S is lossless with respect to BLT, so it has no likelihood of its own), BLT-D's
causal path for `blt-d-*` and `blt-dv-*`, or the `[... weights]` a label names. Every scoring pass is
recorded as component calls (role "score", one per component per scored sequence) into a `Usage`, so
records carry NFEs and a bandwidth price like generation records do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bltbench.decoding.methods import MethodSpec, generate
from bltbench.decoding.sampling import Sampler, SamplingConfig
from bltbench.errors import BltbenchError
from bltbench.instrumentation.measure import warm_up
from bltbench.instrumentation.timing import timed
from bltbench.model.bundle import ModelBundle
from bltbench.model.ids import encode_prompt
from bltbench.model.incremental import Call
from bltbench.model.scoring import RowScore, score_rows, windows


@dataclass(frozen=True)
class ScoringConfig:
    window: int = 512  # ids per rolling window (BOS + window - 1 bytes); the tiny preset's local window
    batch_size: int = 16  # sequences per forward pass


@dataclass
class Usage:
    """What scoring (or generating for) one sample cost."""

    calls: list[Call] = field(default_factory=list)
    sequences: int = 0  # forward passes over a sequence, counted as if each ran alone
    bytes_scored: int = 0  # bytes whose log-probability was read (continuations; whole texts when rolling)
    bytes_generated: int = 0
    wall_s: float = 0.0

    @property
    def counted(self) -> list[Call]:
        """The calls the method's NFEs and bandwidth count (`meter.counted`)."""
        from bltbench.instrumentation.meter import counted

        return counted(self.calls)


def cut_at(text: str, stops: list[str] | tuple[str, ...]) -> str:
    """`text` up to the first occurrence of any stop string."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


class Scorer:
    def __init__(self, bundle: ModelBundle, spec: MethodSpec, config: ScoringConfig = ScoringConfig(),
                 device: str = "cpu", steps: str = "eager") -> None:
        spec.validate(bundle)
        self.bundle, self.spec, self.config, self.device, self.steps = bundle, spec, config, device, steps
        self.weights = spec.runs_on
        self.model = bundle.weights(self.weights)
        self.entropy = bundle.require_entropy()
        self._warm = False

    def warm_up(self) -> None:
        """One untimed pass: a first call pays allocation and kernel-selection costs that are not scoring."""
        if not self._warm:
            score_rows(self.model, self.entropy, self.bundle.config.patching, [encode_prompt(b"warm up")])
            self._warm = True

    def score(self, rows: list[list[int]], usage: Usage, share_prefixes: bool = False) -> list[RowScore]:
        """Per-position scores of BOS-prefixed rows; the passes that ran and their time go to `usage`."""
        self.warm_up()
        before = len(usage.calls)
        scores, wall = timed(lambda: score_rows(self.model, self.entropy, self.bundle.config.patching, rows,
                                                self.config.batch_size, usage.calls.append, share_prefixes),
                             self.device)
        usage.sequences += sum(1 for c in usage.calls[before:] if c.component == "decoder")
        usage.wall_s += wall
        return scores

    def loglikelihood(self, pairs: list[tuple[bytes, bytes]], usage: Usage | None = None) -> list[tuple[float, bool]]:
        """For each (context, continuation): the summed log-probability (nats) of the continuation's
        bytes after BOS + context, and whether greedy decoding would produce exactly them. Pairs whose
        inputs begin another pair's (one context, one-byte answers) share its pass."""
        usage = usage if usage is not None else Usage()
        rows = [encode_prompt(context + continuation) for context, continuation in pairs]
        out = []
        for (_, continuation), s in zip(pairs, self.score(rows, usage, share_prefixes=True)):
            n = len(continuation)
            lp, greedy = (s.logprobs[-n:], s.greedy[-n:]) if n else ([], [])
            out.append((float(sum(lp)), all(greedy)))
            usage.bytes_scored += n
        return out

    def rolling(self, texts: list[bytes], usage: Usage | None = None) -> list[float]:
        """Each text's whole log-likelihood (nats), every byte scored once: texts longer than the
        window are cut into BOS-prefixed windows that each start afresh (see model.scoring.windows)."""
        rows, owner = [], []
        for i, text in enumerate(texts):
            for row in windows(text, self.config.window):
                rows.append(row)
                owner.append(i)
        usage = usage if usage is not None else Usage()
        totals = [0.0] * len(texts)
        for i, s in zip(owner, self.score(rows, usage)):
            totals[i] += sum(s.logprobs)
            usage.bytes_scored += len(s.logprobs)
        return totals

    def generate(self, context: bytes, max_bytes: int, sampling: SamplingConfig, stop: list[str] | tuple[str, ...] = (),
                 usage: Usage | None = None) -> str:
        """The method's own decoding from BOS + context, stopped at the first stop string (decoding matches
        their UTF-8 bytes and stops paying there; the text cut after it only catches a string that matches
        the decoded text but not the raw bytes, such as one holding U+FFFD)."""
        if not context:
            raise BltbenchError("generation needs a non-empty context (decoders start from BOS plus a byte)")
        usage = usage if usage is not None else Usage()
        stop = tuple(s for s in stop if s)
        warm_up(self.spec, self.bundle, self.device, self.steps, encode_prompt(context), max_bytes)
        result, wall = timed(lambda: generate(self.spec, self.bundle, encode_prompt(context), max_bytes,
                                              Sampler(sampling, self.device), usage.calls.append, stop, self.steps),
                             self.device)
        usage.bytes_generated += len(result.output_ids)
        usage.wall_s += wall
        return cut_at(result.text, stop)
