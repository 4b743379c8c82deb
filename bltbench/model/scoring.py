"""Scoring byte sequences with a model's causal next-byte path: per-position log-probabilities, batched.

Both likelihood evaluation (multiple choice, rolling log-likelihood, bits per byte) and training's
held-out bits per byte read the model this way, so it lives here, below both. A row is a list of ids
that starts with BOS; position i predicts id i + 1. Rows are padded on the right with PAD and batched by
length; every path is causal (entropy model, encoder, patching, global model over earlier patches,
decoder), so padding never changes a real position's prediction.

An optional observer sees one `Call` per component per sequence that ran (role "score"), positions =
its length (patches, for the global model), as if each ran alone: what the trace prices does not depend
on how sequences happened to be batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.config import PatchingConfig
from bltbench.model.entropy import EntropyModel, entropy_nats
from bltbench.model.ids import BOE, BOS, OFFSET, PAD
from bltbench.model.incremental import Call, CallObserver
from bltbench.model.patching import batch_patch_flags

SCORE_ROLE = "score"
NEVER_GENERATED = (BOE, BOS, PAD)  # decoders mask these; greedy flags ignore them too


@torch.no_grad()
def batch_patch_starts(entropy_model: EntropyModel | None, patching: PatchingConfig, ids: torch.Tensor) -> torch.Tensor:
    """Patch start flags [N, L + 1] for a batch, from the entropy model (static patching needs none)."""
    if entropy_model is None or patching.mode != "entropy":
        entropies = np.zeros(tuple(ids.shape))
    else:
        entropies = entropy_nats(entropy_model(ids)).cpu().numpy()
    return torch.from_numpy(batch_patch_flags(patching, entropies)).to(ids.device)


@dataclass
class RowScore:
    """Per scored position i (1 .. len - 1): log p(row[i] | row[:i]) in nats, and whether row[i] is
    the argmax over the ids a decoder may produce."""

    logprobs: list[float]
    greedy: list[bool]
    top: list[float]  # the probability of the argmax over the ids a decoder may produce


def windows(data: bytes, window: int) -> list[list[int]]:
    """`data` as BOS-prefixed rows of at most `window` ids, each byte scored exactly once. Every row
    restarts from BOS (no context carried across rows), as training's held-out bits per byte does."""
    if window < 2:
        raise ValueError(f"a scoring window holds BOS and at least one byte, got {window}")
    return [[BOS] + [b + OFFSET for b in data[i : i + window - 1]] for i in range(0, len(data), window - 1)]


def _observe(observer: CallObserver, rows: list[list[int]], starts: torch.Tensor, entropy: bool,
             decoder_window: int | None = None) -> None:
    for row, flags in zip(rows, starts.tolist()):
        n = len(row)
        patches = sum(flags[:n])
        if entropy:
            observer(Call("entropy", SCORE_ROLE, n, 0))
        observer(Call("encoder", SCORE_ROLE, n, 0))
        observer(Call("global", SCORE_ROLE, patches, 0))
        observer(Call("decoder", SCORE_ROLE, n, 0, latents=min(decoder_window or 1, patches)))


def _cover(rows: list[list[int]]) -> tuple[list[int], list[int]]:
    """Which rows to run so that every row's predictions are read from some run: row i needs the
    logits at its inputs rows[i][:-1], which any row starting with those inputs provides (the model is
    causal). Returns (rows to run, the run that serves each row). Quadratic in the number of rows:
    for small groups, e.g. one document's choices under a shared context."""
    runs: list[int] = []
    served = [0] * len(rows)
    for i in sorted(range(len(rows)), key=lambda i: -len(rows[i])):
        need = rows[i][:-1]
        for r in runs:
            if rows[r][: len(need)] == need:
                served[i] = r
                break
        else:
            runs.append(i)
            served[i] = i
    return runs, served


@torch.no_grad()
def score_rows(
    model: ByteLatentTransformer | EntropyModel,
    entropy_model: EntropyModel | None,
    patching: PatchingConfig | None,
    rows: list[list[int]],
    batch_size: int = 16,
    observer: CallObserver | None = None,
    share_prefixes: bool = False,
) -> list[RowScore]:
    """Scores of `rows`, in their order. A BLT is patched by `entropy_model`; an entropy model scores
    alone (then `patching` may be None). With `share_prefixes`, a row whose inputs begin another row
    is read from that row's pass instead of running alone (the choices " A", " B", ... after one
    context cost one pass); the observer sees only the passes that ran."""
    if any(len(r) < 1 for r in rows):
        raise ValueError("every row holds at least BOS")
    runs, served = _cover(rows) if share_prefixes else (list(range(len(rows))), list(range(len(rows))))
    readers: dict[int, list[int]] = {}
    for i, r in enumerate(served):
        readers.setdefault(r, []).append(i)
    device = next(model.parameters()).device
    order = sorted(runs, key=lambda i: len(rows[i]))
    out: list[RowScore | None] = [None] * len(rows)
    for first in range(0, len(order), batch_size):
        index = order[first : first + batch_size]
        group = [rows[i] for i in index]
        width = max(len(r) for r in group)
        ids = torch.tensor([r + [PAD] * (width - len(r)) for r in group], device=device)
        if isinstance(model, EntropyModel):
            logits = model(ids)
            if observer is not None:
                for r in group:
                    observer(Call("entropy", SCORE_ROLE, len(r), 0))
        else:
            starts = batch_patch_starts(entropy_model, patching, ids)
            logits = model(ids, starts)
            if observer is not None:
                _observe(observer, group, starts, entropy_model is not None and patching.mode == "entropy",
                         model.config.cross_attn_window_decoder)
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        allowed = logp.clone()
        allowed[..., list(NEVER_GENERATED)] = -math.inf
        best_logp, best = allowed.max(-1)
        top = (best_logp - torch.logsumexp(allowed, -1)).exp()  # renormalised over those ids, as samplers do
        for j, run in enumerate(index):
            for i in readers[run]:
                n = len(rows[i]) - 1
                targets = torch.tensor(rows[i][1:], dtype=torch.long, device=device)
                picked = logp[j, :n].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                out[i] = RowScore(picked.tolist(), (best[j, :n] == targets).tolist(), top[j, :n].tolist())
    return out  # type: ignore[return-value]


@dataclass
class TextScore:
    """A model on a text: bits per byte over `bytes` scored bytes, and for each threshold alpha the
    share of bytes whose causal top-1 probability exceeds it. The second says how often a confidence
    sampler at alpha could commit a byte without a fallback if it saw every earlier byte: a guide to
    what BLT-D's bytes per decoder pass can reach at this model quality."""

    bpb: float
    bytes: int
    confident_share: dict[float, float]


CONFIDENCE_LEVELS = (0.5, 0.7, 0.9)


def score_text(
    model: ByteLatentTransformer | EntropyModel,
    entropy_model: EntropyModel | None,
    patching: PatchingConfig | None,
    docs: list[bytes],
    window: int = 512,
    batch_size: int = 16,
    levels: tuple[float, ...] = CONFIDENCE_LEVELS,
) -> TextScore:
    """Score `docs`, each cut into BOS-prefixed windows (see `windows`)."""
    rows = [row for doc in docs for row in windows(doc, window)]
    scores = score_rows(model, entropy_model, patching, rows, batch_size)
    nats = -sum(sum(s.logprobs) for s in scores)
    n = sum(len(s.logprobs) for s in scores)
    tops = [p for s in scores for p in s.top]
    share = {level: sum(p > level for p in tops) / max(1, n) for level in levels}
    return TextScore(nats / math.log(2) / max(1, n), n, share)

