"""BLT-S: self-speculation (DESIGN.md section 5).

Each round starts from a pending byte (committed, not yet run). The local encoder + decoder draft k
bytes autoregressively on the device, every position reading the last known latent and ignoring patch
boundaries. One verification pass runs the full model (entropy, encoder, global, decoder) over the
pending byte and the drafts; `accept` compares them with the verifier in one vectorised step, and the
round commits the agreeing prefix plus the verifier's next byte (1..k+1 bytes); every cache is rolled
back to what was accepted. Greedy output equals BLT greedy. Sampling uses the standard rejection rule,
which keeps BLT's output distribution.

Host transfers: one per round. The verified positions' entropies decide the patches the global model
runs, so they must reach the host before the verification; a round whose successor will draft k bytes
whatever is accepted therefore drafts that successor (and runs the entropy model over it) before its
own transfer, at the device-side position the acceptance gives, and the acceptance, the bonus byte,
the drafts and the next round's entropies travel together. The first round, and rounds near the
budget's end (where the successor's draft length depends on the acceptance), send their entropies
on their own. Work run ahead for a round the output never reaches (EOS or a stop string) is marked
discarded: the clock saw it, the method's NFEs do not count it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bltbench.decoding.core import DecodeContext, DecodeRequest, Output, register, to_host
from bltbench.decoding.result import Generation
from bltbench.decoding.sampling import Sampler
from bltbench.model.incremental import to_device


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
           *ahead: torch.Tensor) -> tuple[int, list[list[float]]]:
    """One transfer: how many drafts stood, the bonus byte, the drafts and whatever the caller ran
    ahead; roll back to the accepted positions and commit. Returns (drafts kept, the values ahead)."""
    host = to_host(accepted, bonus, drafts, *ahead)
    kept = int(host[0][0])
    state.truncate(base + 1 + kept)
    out.verified(drafts.shape[0], kept)
    out.commit(host[2][:kept] + host[1])
    return kept, host[3:]


@dataclass
class Draft:
    """A round's drafts, made on the device from a start the host may not know yet, with the
    entropies of the positions the verification will run (the pending byte's and the drafts')."""

    n: int
    drafts: torch.Tensor  # [n]
    probs: torch.Tensor | None  # [n, V] when sampling
    entropies: torch.Tensor | None  # [n + 1]; None under static patching


def draft(state, sampler: Sampler, pending: torch.Tensor, start: torch.Tensor, latest: int,
          latent: torch.Tensor, n: int, known: int = 0) -> Draft:
    """Draft n bytes after `pending`, written at device position `start` (at most `latest`): the
    encoder and decoder run one byte at a time reading `latent`, patch boundaries ignored. Then the
    entropy model runs over the positions whose entropies are not `known` yet."""
    x, drafts, probs = pending, [], []
    state.write_ahead(pending, start, 0, latest)
    for i in range(n):
        logits = state.draft_step(start, i, latest, latent)
        if sampler.config.greedy:
            x = sampler.pick(logits)
        else:
            probs.append(sampler.probs(logits))
            x = sampler.draw(probs[-1])
        state.write_ahead(x, start, i + 1, latest)
        drafts.append(x)
    t = n + 1 - known
    entropies = state.entropies_ahead(start, known, t, latest, "verify") if t else None
    return Draft(n, torch.cat(drafts) if drafts else pending[:0], torch.cat(probs) if probs else None, entropies)


def draft_here(state, sampler: Sampler, pending: torch.Tensor, n: int) -> Draft:
    """A round drafted where the host knows it starts (the first, and near the budget's end); its
    entropies travel on their own."""
    base = state.length
    known = len(state.patches) - base  # the prefill knows the prompt's last byte's entropy
    here, latent = to_device([base], state.device), to_device([state.n_latents - 1], state.device)
    round_ = draft(state, sampler, pending, here, base, latent, n, known)
    state.place_ahead(base)
    values = None if round_.entropies is None else to_host(round_.entropies)[0]
    if n + 1 > known:
        state.settle_ahead(base + known, values, n + 1 - known)
    return round_


@register("blt-s")
@torch.inference_mode()
def decode_speculative(ctx: DecodeContext, request: DecodeRequest, spec) -> Generation:
    sampler, k = request.sampler, spec.k
    state = ctx.session(request, slack=k + 1, span=k + 1)
    out = Output(request)
    base = state.length  # the pending byte's position: the prompt's last byte
    pending, following = state.id_at(base), None
    while not out.done:
        round_ = following or draft_here(state, sampler, pending, min(k, out.room - 1))
        verify_logits = state.extend(round_.n + 1, "verify")
        accepted, bonus = accept(round_.drafts, round_.probs, verify_logits, sampler)
        following = None
        if out.room >= round_.n + k + 2:  # the next round drafts k whatever is accepted: run it now
            latents = to_device(state.patches.last_complete(range(base + 1, base + round_.n + 2)), ctx.device)
            following = draft(state, sampler, bonus, base + 1 + accepted, base + round_.n + 1,
                              latents.index_select(0, accepted), k)
        ahead = [] if following is None or following.entropies is None else [following.entropies]
        kept, values = settle(state, out, base, round_.drafts, accepted, bonus, *ahead)
        base, pending = base + 1 + kept, bonus
        if following is not None and out.done:
            state.place_ahead(None)
        elif following is not None:
            out.ran_ahead += 1
            state.place_ahead(base)
            state.settle_ahead(base, values[0] if values else None, k + 1)
    extras = out.verification_extras() | {"rounds_run_ahead": out.ran_ahead}
    return out.generation(out.committed_patches(state), extras)
