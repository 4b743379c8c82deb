"""BLT-S: self-speculation (DESIGN.md section 5).

Each round starts from a pending byte (committed, not yet run). The local encoder + decoder draft k
bytes autoregressively on the device, every position reading the last known latent and ignoring patch
boundaries. One verification pass runs the full model (entropy, encoder, global, decoder) over the
pending byte and the drafts; `accept` compares them with the verifier in one vectorised step, and the
round commits the agreeing prefix plus the verifier's next byte (1..k+1 bytes); every cache is rolled
back to what was accepted. Greedy output equals BLT greedy. Sampling uses the standard rejection rule,
which keeps BLT's output distribution.

Host transfers per round: the verified positions' entropies (their patch boundaries decide what the
global model runs), then the acceptance, the bonus byte and the drafts together.
"""

from __future__ import annotations

import torch

from bltbench.decoding.core import DecodeContext, DecodeRequest, Output, register, to_host
from bltbench.decoding.result import Generation
from bltbench.decoding.sampling import Sampler


def accept_greedy(drafts: torch.Tensor, verify_logits: torch.Tensor, sampler: Sampler) -> tuple[torch.Tensor, torch.Tensor]:
    """(drafts accepted [1], the verifier's next byte [1]) under greedy decoding, on the device."""
    choice = sampler.pick(verify_logits)
    accepted = (choice[: drafts.shape[0]] == drafts).long().cumprod(0).sum(0, keepdim=True)
    return accepted, choice.gather(0, accepted)


def accept_sampling(drafts: torch.Tensor, draft_probs: torch.Tensor, verify_probs: torch.Tensor,
                    sampler: Sampler) -> tuple[torch.Tensor, torch.Tensor]:
    """The rejection rule, vectorised: draft i stands with probability min(1, p_i(d) / q_i(d)); at the
    first rejection the byte is drawn from norm(max(0, p - q)); if every draft stands, the bonus byte
    is drawn from p. drafts [n], draft_probs q [n, V], verify_probs p [n + 1, V]."""
    n = drafts.shape[0]
    index = drafts[:, None]
    p_d = verify_probs[:n].gather(1, index)[:, 0]
    q_d = draft_probs.gather(1, index)[:, 0]
    u = torch.rand(n, generator=sampler.generator, device=drafts.device)
    accepted = (u * q_d < p_d).long().cumprod(0).sum(0, keepdim=True)
    residual = (verify_probs[:n] - draft_probs).clamp_min(0.0)
    total = residual.sum(-1, keepdim=True)
    corrected = torch.where(total > 0, residual / total.clamp_min(1e-30), verify_probs[:n])
    rows = torch.cat([corrected, verify_probs[n:]]).index_select(0, accepted)
    return accepted, sampler.draw(rows)


def accept(drafts: torch.Tensor, draft_probs: torch.Tensor | None, verify_logits: torch.Tensor,
           sampler: Sampler) -> tuple[torch.Tensor, torch.Tensor]:
    if sampler.config.greedy:
        return accept_greedy(drafts, verify_logits, sampler)
    if draft_probs is None:  # nothing drafted: the bonus byte alone
        draft_probs = verify_logits.new_zeros(0, verify_logits.shape[-1])
    return accept_sampling(drafts, draft_probs, sampler.probs(verify_logits), sampler)


def settle(state, out: Output, base: int, drafts: torch.Tensor, accepted: torch.Tensor, bonus: torch.Tensor,
           ahead: torch.Tensor | None = None) -> tuple[int, float | None]:
    """One transfer: how many drafts stood, the bonus byte, the drafts (and the bonus's entropy when
    the caller ran it ahead); roll back to the accepted positions and commit. Returns (drafts kept,
    the bonus's entropy or None)."""
    parts = [accepted, bonus, drafts] + ([ahead] if ahead is not None else [])
    host = to_host(*parts)
    kept = int(host[0][0])
    state.truncate(base + 1 + kept)
    out.verified(drafts.shape[0], kept)
    out.commit(host[2][:kept] + host[1])
    return kept, (host[3][0] if ahead is not None else None)


@register("blt-s")
@torch.inference_mode()
def decode_speculative(ctx: DecodeContext, request: DecodeRequest, spec) -> Generation:
    sampler = request.sampler
    state = ctx.session(request, slack=spec.k + 1)
    out = Output(request)
    pending = state.id_at(state.length)  # the prompt's last byte
    while not out.done:
        base = state.length  # the pending byte's position
        n = min(spec.k, out.room - 1)  # never draft past what the budget can keep
        drafts, draft_probs, x = [], [], pending
        for _ in range(n):
            logits = state.draft(x)
            if request.greedy:
                x = sampler.pick(logits)
            else:
                draft_probs.append(sampler.probs(logits))
                x = sampler.draw(draft_probs[-1])
            drafts.append(x)
        state.discard_draft()
        drafted = torch.cat(drafts) if drafts else pending[:0]
        state.write(drafted, base + 1)
        state.place_patches(base + n + 1, "verify")
        verify_logits = state.extend(n + 1, "verify")
        accepted, bonus = accept(drafted, torch.cat(draft_probs) if draft_probs else None, verify_logits, sampler)
        kept, _ = settle(state, out, base, drafted, accepted, bonus)
        state.write(bonus, base + 1 + kept)
        pending = bonus
    return out.generation(out.committed_patches(state), out.verification_extras())
