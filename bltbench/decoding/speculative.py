"""BLT-S: self-speculation (DESIGN.md section 5).

Each round starts from a pending byte (committed, not yet run). The local encoder + decoder draft k
bytes autoregressively, every position reading the last known latent and ignoring patch boundaries.
One verification pass runs the full model (entropy, encoder, global, decoder) over the pending byte and
the k drafts; the longest agreeing prefix is accepted plus the verifier's next byte, so a round commits
1..k+1 bytes, and every cache is rolled back to what was accepted. Greedy output equals BLT greedy.
Sampling uses the standard rejection rule, which keeps BLT's output distribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bltbench.decoding.blt import prefill
from bltbench.decoding.result import Generation
from bltbench.decoding.sampling import Sampler
from bltbench.decoding.stopping import NO_STOP, StopStrings
from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.config import PatchingConfig
from bltbench.model.entropy import EntropyModel
from bltbench.model.ids import EOS
from bltbench.model.incremental import CallObserver, IncrementalBLT
from bltbench.model.patching import lengths_from_starts


def accept_greedy(drafts: list[int], verify_logits: torch.Tensor, sampler: Sampler) -> tuple[int, int]:
    """(number of drafts accepted, the verifier's next byte) under greedy decoding."""
    for i, d in enumerate(drafts):
        choice = sampler.sample(verify_logits[i])
        if choice != d:
            return i, choice
    return len(drafts), sampler.sample(verify_logits[len(drafts)])


def accept_sampling(
    drafts: list[int], draft_probs: list[torch.Tensor], verify_probs: torch.Tensor, generator: torch.Generator
) -> tuple[int, int]:
    """The rejection rule: accept draft d with probability min(1, p(d) / q(d)); on the first rejection
    draw from norm(max(0, p - q)); if every draft stands, draw the bonus byte from p."""
    for i, (d, q) in enumerate(zip(drafts, draft_probs)):
        p = verify_probs[i]
        if float(torch.rand((), generator=generator, device=generator.device)) * float(q[d]) < float(p[d]):
            continue
        residual = torch.clamp(p - q, min=0.0)
        total = float(residual.sum())
        dist = residual / total if total > 0 else p
        return i, int(torch.multinomial(dist, 1, generator=generator))
    return len(drafts), int(torch.multinomial(verify_probs[len(drafts)], 1, generator=generator))


def commit_bytes(new: list[int], out: list[int], max_bytes: int) -> tuple[int, bool]:
    """Append a verified round's bytes to `out` until EOS or the budget: (bytes appended, hit EOS)."""
    for i, byte in enumerate(new):
        if byte == EOS:
            return i, True
        out.append(byte)
        if len(out) == max_bytes:
            return i + 1, False
    return len(new), False


@dataclass
class VerifiedRounds:
    """What BLT-S and BLT-DV share after drafting: accept against the verifier, roll every cache back,
    commit the accepted bytes plus the verifier's next one, and count rounds, drafts and acceptances."""

    out: list[int]
    max_bytes: int
    stop: StopStrings = NO_STOP
    eos: bool = False
    stopped: bool = False
    drafted: int = 0
    accepted: int = 0
    committed: list[int] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.eos or self.stopped or len(self.out) >= self.max_bytes

    def settle(self, state: IncrementalBLT, keep: int, drafts: list[int], draft_probs: list[torch.Tensor],
               verify_logits: torch.Tensor, sampler: Sampler) -> int:
        """Positions up to `keep` + accepted stay cached; returns the bonus byte, the next pending one."""
        if sampler.config.greedy:
            accepted, bonus = accept_greedy(drafts, verify_logits, sampler)
        else:
            accepted, bonus = accept_sampling(drafts, draft_probs, sampler.probs(verify_logits), sampler.generator)
        state.truncate(keep + accepted)
        self.drafted += len(drafts)
        self.accepted += accepted
        before = len(self.out)
        n, self.eos = commit_bytes(drafts[:accepted] + [bonus], self.out, self.max_bytes)
        self.committed.append(n)
        self.stopped = self.stop.cut(self.out, before)
        return bonus

    def extras(self) -> dict:
        return {"accepted_per_verify": sum(self.committed) / max(1, len(self.committed)),
                "acceptance_rate": self.accepted / self.drafted if self.drafted else None,
                "verify_rounds": len(self.committed), "committed_bytes": sum(self.committed)}


@torch.inference_mode()
def generate_speculative(
    model: ByteLatentTransformer,
    entropy_model: EntropyModel | None,
    patching: PatchingConfig,
    prompt_ids: list[int],
    max_bytes: int,
    sampler: Sampler,
    k: int,
    observer: CallObserver | None = None,
    stop: StopStrings = NO_STOP,
) -> Generation:
    if k < 1:
        raise ValueError(f"BLT-S needs k >= 1, got {k}")
    state = IncrementalBLT(model, entropy_model, patching, observer)
    prefill(state, prompt_ids)
    greedy = sampler.config.greedy
    rounds = VerifiedRounds([], max_bytes, stop)
    pending = prompt_ids[-1]
    while not rounds.done:
        base = len(state)  # position of the pending byte
        budget = min(k, max_bytes - len(rounds.out) - 1)  # never draft past what the budget can keep
        drafts: list[int] = []
        draft_probs: list[torch.Tensor] = []
        state.role = "draft"
        x = pending
        for _ in range(budget):
            logits = state.draft([x])[-1]
            if greedy:
                x = sampler.sample(logits)
            else:
                q = sampler.probs(logits)
                x = int(torch.multinomial(q, 1, generator=sampler.generator))
                draft_probs.append(q)
            drafts.append(x)
            if x == EOS:
                break
        state.discard_draft()
        state.role = "verify"
        verify_logits = state.extend([pending] + drafts)
        pending = rounds.settle(state, base + 1, drafts, draft_probs, verify_logits, sampler)
    return rounds_generation(prompt_ids, rounds, state)


def rounds_generation(prompt_ids: list[int], rounds: VerifiedRounds, state: IncrementalBLT) -> Generation:
    """Only the pending byte was never run; its patch flag is already known from the byte before it."""
    starts = state.starts[: len(prompt_ids) + len(rounds.out)]
    return Generation(list(prompt_ids), rounds.out, rounds.eos, lengths_from_starts(starts), rounds.extras(),
                      rounds.stopped)
