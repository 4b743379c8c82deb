"""Cached, position-by-position execution of a BLT (DESIGN.md sections 4 and 11).

`IncrementalBLT` owns the caches and the component calls, nothing else: every cache (entropy model,
encoder, global, decoder, the decoder's cross-attention keys of each latent, the encoder states that
pooling reads) and the ids are preallocated once for the request's maximum length, written at a
position index and rolled back by moving lengths back. Ids live on the device, so hashing, drafting
and sampling never send a byte to the host; the patch bookkeeping is a `PatchState`, fed the
entropies the host receives. Every call names its role (prefill, step, draft, verify).

One-position calls (a decode step, a draft step, a single new patch's global step) can run as
fixed-shape functions (`fixed_steps=True`): positions are device tensors and attention reads the
whole buffer under a mask, so `torch.compile(fullgraph=True, dynamic=False)` compiles each once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import weakref

import torch

from bltbench.model.blt import ByteLatentTransformer, patch_window
from bltbench.model.build import available_bytes
from bltbench.model.config import PatchingConfig
from bltbench.model.entropy import EntropyModel, entropy_nats
from bltbench.model.ids import BOE, EOS
from bltbench.model.layers import (
    AttentionPlan,
    CacheOverflow,
    KVCache,
    build_fused_weights,
    eos_documents,
    fixed_plan,
    run_blocks,
)
from bltbench.model.patching import PatchState

ROLES = ("prefill", "step", "draft", "verify", "score")


@dataclass(slots=True)
class Call:
    """One function evaluation of one component, as an observer sees it."""

    component: str  # entropy | encoder | global | decoder
    role: str  # prefill | step | draft | verify | score
    positions: int  # new positions processed (patches, for the global model)
    cache_length: int  # cached positions the call attends to (after the local window)
    discarded: bool = False  # run ahead, then not needed (the output ended first)
    latents: int = 1  # decoder: the latents each position cross-attends to (several with a window)


CallObserver = Callable[[Call], None]


class StepFunctions:
    """The fixed-shape one-position steps of one session, eager or compiled.

    Arguments are tensors only (positions included), so a compiled step is reused at every position
    and by every session whose caches have the same capacity.
    """

    def __init__(self, state: "IncrementalBLT", compiler: Callable | None = None) -> None:
        self.s = state
        wrap = compiler or (lambda f: f)
        self.entropy = wrap(self._entropy)
        self.encoder = wrap(self._encoder)
        self.decoder = wrap(self._decoder)
        self.global_ = wrap(self._global)

    def warm(self) -> None:
        """Run every step once at position 0, so each compiles now rather than inside a timed decode
        (a global step, say, first runs when a patch completes). The prefill overwrites what they wrote."""
        s = self.s
        for model in (s.model, s.entropy_model):
            if model is not None:
                build_fused_weights(model)
        if s.entropy_model is not None:
            self.entropy(s.ids, s._at(0))
            if s.span > 1:  # the entropies a method runs ahead over several positions
                self.entropy(s.ids, s.span_offsets[: s.span])
        self.encoder(s.ids, s._at(0))
        slots = torch.zeros(1, 1, s.model.config.d_patch, dtype=s.dtype, device=s.device)
        self.global_(slots, s._at(0))
        s.latent.fill_(0)
        self.decoder(s._at(0), s.latent)

    # Every tensor a step reads lives in the session's buffers (ids, positions, caches, encoder states,
    # rotation tables), so a CUDA graph replays on the same addresses at every position.
    def _entropy(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        s = self.s
        m = s.entropy_model
        x = ids.index_select(1, pos + s.hash_context)
        plan = fixed_plan(s.rope_tables["entropy"], pos, m.config.window, m.config.context_restart,
                          docs=s.byte_docs(ids) if s.split_entropy else None)
        h = run_blocks(m.layers, plan, m.tok_embeddings(x), s.ent_cache)
        return entropy_nats(m.output(m.norm(h))[0])

    def _encoder(self, ids: torch.Tensor, pos: torch.Tensor) -> None:
        s = self.s
        window = ids.index_select(1, pos + s.window_offsets)
        embeds = s.model.embed(window[:, s.hash_context :], window[:, : s.hash_context])
        plan = fixed_plan(s.rope_tables["encoder"], pos, s.model.config.local_window,
                          docs=s.byte_docs(ids) if s.split_local else None)
        h = run_blocks(s.model.local_encoder.layers, plan, embeds, s.enc_cache)
        s.enc_states.index_copy_(1, pos, h)

    def _decoder(self, pos: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        s = self.s
        slots = latent * s.k + s.read_offsets  # the latent's k slots, or the window's W * k before it
        mask = None
        if s.model.config.cross_attn_window_decoder is not None:  # slots before patch 0 do not exist
            mask = (slots >= 0)[None, None, None, :]
            slots = slots.clamp(min=0)
        dec = s.model.local_decoder
        cache = s.latent_cache

        def cross_kv(i: int):
            return cache.keys[i].index_select(2, slots), cache.values[i].index_select(2, slots)

        plan = fixed_plan(s.rope_tables["decoder"], pos, s.model.config.local_window,
                          docs=s.byte_docs(s.ids) if s.split_local else None)
        return dec(s.enc_states.index_select(1, pos), cross_kv, mask, plan=plan, cache=s.dec_cache)[0].float()

    def _global(self, slots: torch.Tensor, patch: torch.Tensor) -> None:
        s = self.s
        g = s.model.global_transformer
        x = slots if g.token_embedding_projection is None else g.token_embedding_projection(slots)
        docs = s.patch_docs() if s.split_global else None
        latents = run_blocks(g.layers, fixed_plan(s.rope_tables["global"], patch, None, docs=docs), x, s.glob_cache)
        index = patch * s.k + s.slot_offsets
        for i, (k, v) in enumerate(s.model.local_decoder.latent_kv(latents)):
            s.latent_cache.keys[i].index_copy_(2, index, k)
            s.latent_cache.values[i].index_copy_(2, index, v)


def to_device(values: list, device: torch.device) -> torch.Tensor:
    """Host-built ids or indices on the device without waiting for it (no stream synchronisation)."""
    return torch.tensor(values, dtype=torch.long).to(device, non_blocking=True)


def session_bytes(model: ByteLatentTransformer, entropy: EntropyModel | None, capacity: int) -> int:
    """What a session's buffers take for `capacity` positions: every KV cache (the latent slots k per
    position, a patch being at least one byte), the encoder states, ids and rotation tables."""
    c = model.config
    itemsize = model.local_decoder.output.weight.element_size()
    per_position = 2 * c.d_local * (c.n_layers_encoder + c.n_layers_decoder * (1 + c.cross_attn_k))
    per_position += 2 * c.d_global * c.n_layers_global + c.d_local
    per_position *= itemsize
    if entropy is not None:  # in its own precision (a Hub entropy model stays fp32 beside a bf16 BLT)
        per_position += 2 * entropy.config.dim * entropy.config.n_layers * entropy.output.weight.element_size()
    rope = 4 * 2 * (c.d_local // c.n_heads_local + c.d_global // c.n_heads_global) * 2  # fp32 tables
    return capacity * (per_position + 8 * 3 + rope)


def _allocate(state: "IncrementalBLT") -> dict[str, object]:
    """Every buffer a session writes, preallocated for its capacity. A patch holds at least one byte,
    so the capacity bounds the patches as well as the positions."""
    model, capacity, device = state.model, state.capacity, state.device
    entropy = state.entropy_model
    needed, free = session_bytes(model, entropy, capacity), available_bytes(device)
    if free is not None and needed > 0.9 * free:
        raise CacheOverflow(f"a request of {capacity:,} positions (prompt + byte budget + slack) needs "
                            f"{needed / 1e9:.1f} GB of caches, but {free / 1e9:.1f} GB is free on {device}: "
                            "shorten the prompt or the budget")
    return {
        "ids": torch.full((1, state.hash_context + capacity), BOE, dtype=torch.long, device=device),
        "enc_cache": model.local_encoder.new_cache(capacity),
        "glob_cache": model.global_transformer.new_cache(capacity),
        "dec_cache": model.local_decoder.new_cache(capacity),
        "latent_cache": model.local_decoder.new_latent_cache(capacity * state.k),
        "ent_cache": entropy.new_cache(capacity) if entropy is not None else None,
        "enc_states": torch.zeros(1, capacity, model.config.d_local, dtype=state.dtype, device=device),
        "window_offsets": torch.arange(state.hash_context + 1, device=device),
        "span_offsets": torch.arange(capacity, device=device),
        "slot_offsets": torch.arange(state.k, device=device),
        "read_offsets": torch.arange(-(state.decoder_window - 1) * state.k, state.k, device=device),
        "pos": torch.zeros(1, dtype=torch.long, device=device),
        "latent": torch.zeros(1, dtype=torch.long, device=device),
        "zero_patch": torch.zeros(1, capacity, dtype=torch.long, device=device),
        "patch_eos": torch.zeros(1, capacity, dtype=torch.long, device=device),  # 1 where a patch holds an EOS
        "rope_tables": {name: rope.table(capacity, device)[:capacity].clone() for name, rope in state.ropes().items()},
    }


_SHARED: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _shared_buffers(state: "IncrementalBLT") -> dict[str, object]:
    """Buffers kept per (model, entropy model, capacity) and handed to every later session of that
    size, as gpt-fast sets its caches up once: compiled steps (and CUDA graphs, which replay fixed
    addresses) then serve every request. Sessions of one model run one at a time."""
    per_model = _SHARED.setdefault(state.model, {})
    key = (id(state.entropy_model), state.capacity, state.device, state.dtype)
    if key not in per_model:
        buffers = _allocate(state)
        if state.device.type == "cuda":
            for value in buffers.values():
                if isinstance(value, KVCache):
                    tensors = value.keys + value.values
                elif isinstance(value, dict):
                    tensors = list(value.values())
                else:
                    tensors = [] if value is None else [value]
                for t in tensors:
                    torch._dynamo.mark_static_address(t)
        per_model[key] = buffers
    return per_model[key]


class IncrementalBLT:
    def __init__(
        self,
        model: ByteLatentTransformer,
        entropy_model: EntropyModel | None,
        patching: PatchingConfig,
        capacity: int,
        observer: CallObserver | None = None,
        fixed_steps: bool = False,
        compiler: Callable | None = None,
        reuse_buffers: bool = False,
        span: int = 1,
    ) -> None:
        if patching.mode == "entropy" and entropy_model is None:
            raise ValueError("entropy patching needs an entropy model")
        self.model = model
        self.entropy_model = entropy_model if patching.mode == "entropy" else None
        self.patches = PatchState(patching)
        self.observer = observer
        self.capacity = capacity
        # Compiled sessions run entropies ahead `span` positions wide whatever the span needed (one
        # shape, compiled before the prefill); other sessions run exactly the positions asked for.
        self.span = span
        self.pad_spans = compiler is not None
        c = model.config
        self.k = c.cross_attn_k
        self.decoder_window = c.cross_attn_window_decoder or 1  # latents a decoder position reads
        self.hash_context = max(c.hash_sizes) - 1
        # Documents split at EOS (official block-causal masks): every call of a splitting component
        # keeps its queries to their document's keys, in eager spans and fixed-shape steps alike.
        self.split_local, self.split_global = c.eos_documents_local, c.eos_documents_global
        self.split_entropy = self.entropy_model is not None and self.entropy_model.config.eos_documents
        self.device = model.local_decoder.output.weight.device
        self.dtype = model.local_decoder.output.weight.dtype
        self.length = 0  # positions run through encoder and decoder (committed)
        self.n_latents = 0
        buffers = _shared_buffers(self) if reuse_buffers else _allocate(self)
        for name, value in buffers.items():
            setattr(self, name, value)
        for cache in (self.enc_cache, self.glob_cache, self.dec_cache, self.latent_cache, self.ent_cache):
            if cache is not None:
                cache.length = 0
        self.steps = StepFunctions(self, compiler) if fixed_steps else None
        self._eager_steps: StepFunctions | None = None
        self._unplaced: list[tuple[Call, int, int | None]] = []

    def ropes(self) -> dict:
        """Each component's rotary embedding; eager calls read its table, grown to this request's
        length, fixed-shape steps a copy of exactly this length (so a longer request elsewhere never
        changes what they were compiled against)."""
        ropes = {"encoder": self.model.local_encoder.rope, "global": self.model.global_transformer.rope,
                 "decoder": self.model.local_decoder.rope}
        if self.entropy_model is not None:
            ropes["entropy"] = self.entropy_model.rope
        return ropes

    def __len__(self) -> int:
        return self.length

    def _observe(self, component: str, role: str, positions: int, start: int, window: int | None,
                 latents: int = 1) -> None:
        if self.observer is not None:
            visible = start if window is None else min(start, window - 1)
            self.observer(Call(component, role, positions, visible, latents=latents))

    def _latents_read(self, latent: int) -> int:
        """How many latents a decoder position reading `latent` attends to (its window's, or one)."""
        return min(self.decoder_window, latent + 1)

    def _at(self, position: int) -> torch.Tensor:
        self.pos.fill_(position)
        return self.pos

    def byte_docs(self, ids: torch.Tensor, end: int | None = None) -> torch.Tensor:
        """The document of every position [1, end or capacity] of the ids buffer: a position's depends
        only on the ids before it, so whatever stale ids lie past the written ones change nothing."""
        stop = self.hash_context + (self.capacity if end is None else end)
        return eos_documents(ids[:, self.hash_context : stop])

    def patch_docs(self, end: int | None = None) -> torch.Tensor:
        """The document of every patch [1, end or capacity]: a patch holding an EOS ends its document."""
        ends = self.patch_eos if end is None else self.patch_eos[:, :end]
        return ends.cumsum(-1) - ends

    def _mark_eos_patches(self, first: int, last: int) -> None:
        """Record which of the newly complete patches [first, last) hold an EOS (on the device)."""
        begins = self.patches.begins
        a, b = self.hash_context + begins[first], self.hash_context + begins[last]
        held = torch.nn.functional.pad((self.ids[0, a:b] == EOS).long().cumsum(0), (1, 0))
        bounds = to_device([x - begins[first] for x in begins[first : last + 1]], self.device)
        self.patch_eos[0, first:last] = ((held[bounds[1:]] - held[bounds[:-1]]) > 0).long()

    # -- ids and entropies ---------------------------------------------------------------------
    def write(self, ids: torch.Tensor | Sequence[int], at: int) -> None:
        """Place ids (a device tensor [T] or [1, T], or host ints) at positions [at, at + T)."""
        if not isinstance(ids, torch.Tensor):
            ids = to_device(list(ids), self.device)
        ids = ids.reshape(1, -1).to(self.device)
        if at + ids.shape[1] > self.capacity:
            raise CacheOverflow(f"position {at + ids.shape[1]} is past the {self.capacity} positions this request "
                                "preallocated (prompt + byte budget + slack)")
        self.ids[:, self.hash_context + at : self.hash_context + at + ids.shape[1]] = ids

    def id_at(self, position: int) -> torch.Tensor:
        """The id at a written position, on the device [1] (a copy, so later writes leave it be)."""
        return self.ids[0, self.hash_context + position : self.hash_context + position + 1].clone()

    def entropies(self, at: int, t: int, role: str, observe: bool = True) -> torch.Tensor | None:
        """Entropy-model entropies [t] (on the device) of positions [at, at + t); None without an entropy
        model (static patching). The caller pushes them into `patches` once the host has them."""
        m = self.entropy_model
        if m is None:
            return None
        cache = self.ent_cache
        if cache.length != at:
            raise ValueError(f"entropies must continue the cached ones ({cache.length}), not start at {at}")
        if observe:
            self._observe("entropy", role, t, at, m.config.window)
        if t == 1 and self.steps is not None:
            cache.check(at + 1)
            values = self.steps.entropy(self.ids, self._at(at))
            cache.length = at + 1
            return values
        docs = self.byte_docs(self.ids, at + t) if self.split_entropy else None
        return entropy_nats(m(self.ids[:, self.hash_context + at : self.hash_context + at + t], cache, docs)[0])

    def push_entropies(self, values: Sequence[float] | None, t: int) -> None:
        self.patches.push([0.0] * t if values is None else values)

    def place_patches(self, end: int, role: str) -> None:
        """Entropies of the written positions up to `end` not yet known, brought to the host in one
        transfer and pushed: the patch boundaries they decide must be known before the global model
        runs over them."""
        at = len(self.patches)
        if end > at:
            values = self.entropies(at, end - at, role)
            self.push_entropies(None if values is None else values.tolist(), end - at)

    # -- running ahead ---------------------------------------------------------------------------
    # Calls at a device-side start the host learns only with the next transfer (a verified round's
    # bonus byte sits where the acceptance puts it). They run through the fixed-shape steps (eager
    # unless compiled), whose masks hide any stale entries past them; the observer sees each call
    # when it runs, and `place_ahead` gives it its cache length once the start is known (or marks
    # it discarded when the output ended before it was needed).
    def _fixed(self) -> StepFunctions:
        if self.steps is None and self._eager_steps is None:
            self._eager_steps = StepFunctions(self)
        return self.steps or self._eager_steps

    def _observe_ahead(self, component: str, role: str, positions: int, offset: int, window: int | None) -> None:
        if self.observer is not None:
            call = Call(component, role, positions, -1)
            self._unplaced.append((call, offset, window))
            self.observer(call)

    def write_ahead(self, x: torch.Tensor, start: torch.Tensor, offset: int, latest: int) -> None:
        """Write x [1] at position start + offset; `latest` bounds start (for the capacity check)."""
        if latest + offset >= self.capacity:
            raise CacheOverflow(f"position {latest + offset + 1} is past the {self.capacity} positions this "
                                "request preallocated (prompt + byte budget + slack)")
        torch.add(start, offset + self.hash_context, out=self.pos)
        self.ids.index_copy_(1, self.pos, x.reshape(1, 1))

    def draft_step(self, start: torch.Tensor, offset: int, latest: int, latent: torch.Tensor,
                   role: str = "draft") -> torch.Tensor:
        """Encoder + decoder over the byte written at start + offset, reading latent `latent` [1]
        whatever the patch boundaries say (BLT-S drafting): logits [1, V]. Nothing is committed: the
        verification pass rewrites these positions."""
        if self.n_latents == 0:
            raise ValueError("drafting needs a latent: extend with the prompt first")
        self.enc_cache.check(latest + offset + 1)
        window = self.model.config.local_window
        steps = self._fixed()
        torch.add(start, offset, out=self.pos)
        self._observe_ahead("encoder", role, 1, offset, window)
        steps.encoder(self.ids, self.pos)
        self._observe_ahead("decoder", role, 1, offset, window)
        self.latent.copy_(latent)
        return steps.decoder(self.pos, self.latent)

    def entropies_ahead(self, start: torch.Tensor, offset: int, t: int, latest: int, role: str) -> torch.Tensor | None:
        """Entropies [t] of the written positions from start + offset (None without an entropy model);
        `settle_ahead` pushes them once the host has them."""
        if self.entropy_model is None:
            return None
        width = self.span if self.pad_spans and 1 < t <= self.span else t
        self.ent_cache.check(latest + offset + width)
        self._observe_ahead("entropy", role, t, offset, self.entropy_model.config.window)
        return self._fixed().entropy(self.ids, start + self.span_offsets[offset : offset + width])[:t]

    def place_ahead(self, start: int | None) -> None:
        """The start the calls run ahead had (their cache lengths follow, and, the caches rolled back to
        it, the latents drafts read), or None: nothing read them."""
        for call, offset, window in self._unplaced:
            if start is None:
                call.discarded = True
                call.cache_length = 0
            else:
                p = start + offset
                call.cache_length = p if window is None else min(p, window - 1)
                if call.component == "decoder":
                    call.latents = self._latents_read(self.n_latents - 1)
        self._unplaced.clear()

    def settle_ahead(self, position: int, values: Sequence[float] | None, t: int) -> None:
        """Push the t entropies `entropies_ahead` computed at `position`, just past the known ones."""
        if position != len(self.patches):
            raise ValueError(f"entropies ahead at {position} must follow the {len(self.patches)} known ones")
        if self.entropy_model is not None:
            self.ent_cache.length = position + t
        self.push_entropies(values, t)

    # -- extending -----------------------------------------------------------------------------
    def append(self, ids: Sequence[int], role: str = "step") -> torch.Tensor:
        """Write host ids after the committed positions, patch and run them: their logits [T, V]."""
        self.write(ids, self.length)
        self.place_patches(self.length + len(ids), role)
        return self.extend(len(ids), role)

    def extend(self, t: int, role: str) -> torch.Tensor:
        """Run the next t written positions (entropies already pushed) through encoder, global and
        decoder; returns their logits [t, V] (fp32)."""
        p0 = self._commit(t, role)
        return self._decode(self._encoded(p0, t), p0, role)

    def _commit(self, t: int, role: str) -> int:
        if t < 1:
            raise ValueError("extend needs at least one position")
        p0 = self.length
        if len(self.patches) < p0 + t:
            raise ValueError("push the entropies of positions before running them")
        self._encode(p0, t, role)
        self.length = p0 + t
        self._complete_patches(role)
        return p0

    def _encoded(self, p0: int, t: int) -> torch.Tensor:
        return self.enc_states[:, p0 : p0 + t]

    def _encode(self, p0: int, t: int, role: str) -> torch.Tensor:
        self._observe("encoder", role, t, p0, self.model.config.local_window)
        if t == 1 and self.steps is not None:
            self.enc_cache.check(p0 + 1)
            self.steps.encoder(self.ids, self._at(p0))
            self.enc_cache.length = p0 + 1
            return self._encoded(p0, 1)
        window = self.ids[:, p0 : p0 + self.hash_context + t]
        embeds = self.model.embed(window[:, self.hash_context :], window[:, : self.hash_context])
        docs = self.byte_docs(self.ids, p0 + t) if self.split_local else None
        h = self.model.local_encoder(embeds, p0, self.enc_cache, docs)
        self.enc_states[:, p0 : p0 + t] = h
        return h

    def _latent_window(self, wanted: list[int]) -> tuple[int, int, torch.Tensor | None]:
        """The slot range [a, b) rows read (latent ids never decrease along positions, so only the span
        wanted[0]..wanted[-1]), and a mask within it when rows read different latents."""
        first, last = wanted[0], wanted[-1]
        lowest = max(0, first - self.decoder_window + 1)  # with a window, the W latents up to each
        a, b = lowest * self.k, (last + 1) * self.k
        if first == last:  # one latent (and its window): exactly the range
            return a, b, None
        slot_patch = torch.arange(lowest, last + 1).repeat_interleave(self.k)
        mask = patch_window(torch.tensor(wanted)[:, None], slot_patch[None, :], self.model.config.cross_attn_window_decoder)
        return a, b, mask[None, None].to(self.device, non_blocking=True)

    def _decode(self, h: torch.Tensor, p0: int, role: str, plan: AttentionPlan | None = None,
                wanted: list[int] | None = None) -> torch.Tensor:
        """Decoder over positions from p0; position p reads the latent `patches.latent_of(p)`."""
        t = h.shape[1]
        if wanted is None:
            wanted = [self.patches.latent_of(p) for p in range(p0, p0 + t)]
        self._observe("decoder", role, t, p0, self.model.config.local_window, self._latents_read(wanted[-1]))
        if t == 1 and plan is None and self.steps is not None:
            self.dec_cache.check(p0 + 1)
            self.latent.fill_(wanted[0])
            logits = self.steps.decoder(self._at(p0), self.latent)  # h is enc_states at p0
            self.dec_cache.length = p0 + 1
            return logits
        a, b, mask = self._latent_window(wanted)
        cache = self.latent_cache

        def cross_kv(i: int):
            return cache.keys[i][:, :, a:b], cache.values[i][:, :, a:b]

        docs = self.byte_docs(self.ids, p0 + t) if self.split_local and plan is None else None
        return self.model.local_decoder(h, cross_kv, mask, p0, self.dec_cache, plan, docs)[0].float()

    def _complete_patches(self, role: str) -> None:
        """Pool every patch that is now complete and run the global model over them in one call."""
        first, last = self.n_latents, self.patches.complete(self.length)
        if last <= first:
            return
        begins = self.patches.begins
        window = self.model.config.cross_attn_window_encoder
        read_from = first if window is None else max(0, first - window + 1)  # pooling reads these patches' bytes
        a, b = begins[read_from], begins[last]
        n = last - first
        if n == 1 and read_from == first:
            patch_ids = self.zero_patch[:, : b - a]
        else:
            patch_ids = to_device([[j for j in range(last - read_from)
                                    for _ in range(begins[read_from + j + 1] - begins[read_from + j])]], self.device)
        slots = self.model.local_encoder.pool(self.enc_states[:, a:b], patch_ids, n, first - read_from)
        self._observe("global", role, n, self.glob_cache.length, None)
        self.glob_cache.check(last)
        if self.split_global:
            self._mark_eos_patches(first, last)
        if n == 1 and self.steps is not None:
            self.steps.global_(slots, self._at(first))
            self.glob_cache.length = last
        else:
            docs = self.patch_docs(last) if self.split_global else None
            latents = self.model.global_transformer(slots, first, self.glob_cache, docs)
            for i, (k, v) in enumerate(self.model.local_decoder.latent_kv(latents)):
                self.latent_cache.keys[i][:, :, first * self.k : last * self.k] = k
                self.latent_cache.values[i][:, :, first * self.k : last * self.k] = v
        self.latent_cache.length = last * self.k
        self.n_latents = last

    # -- BLT-D blocks --------------------------------------------------------------------------
    def extend_with_block(self, t: int, cells: torch.Tensor, role: str) -> tuple[torch.Tensor | None, torch.Tensor]:
        """`extend(t)` (t may be 0) and, in the same decoder call, a block of cells [B] right after:
        bidirectional within the block, causal to the committed prefix, reading the last latent.
        Returns (clean logits [t, V] or None, block logits [B, V]); the block leaves nothing behind."""
        if not hasattr(self.model, "block_embed"):
            raise ValueError("blocks need BLT-D weights")
        p0 = self._commit(t, role) if t else self.length
        s, size = self.length, cells.shape[-1]
        self.dec_cache.check(s + size)
        window = self.model.config.local_window
        block = self.model.block_embed(cells.reshape(1, -1))
        x = block if t == 0 else torch.cat([self._encoded(p0, t), block], dim=1)
        k_start = 0 if window is None else max(0, p0 - window + 1)
        q = torch.arange(p0, s + size, device=self.device)[:, None]
        k = torch.arange(k_start, s + size, device=self.device)[None, :]
        seen = (k <= q) if window is None else (k <= q) & (q - k < window)
        mask = torch.where(q >= s, (k >= s) | (seen & (k < s)), seen)
        if self.split_local:  # the block's cells belong to the document the block continues
            docs = self.byte_docs(self.ids, s + 1)[0]
            docs = torch.cat([docs[:s], docs[s:].expand(size)])
            mask = mask & (docs[p0:, None] == docs[None, k_start:])
        mask = mask[None, None]
        wanted = [self.patches.latent_of(p) for p in range(p0, s)] + [self.n_latents - 1] * size
        plan = AttentionPlan(self.model.local_decoder.rope.span(p0, t + size, self.device), k_start, mask, p0, s + size)
        logits = self._decode(x, p0, role, plan, wanted)
        self.dec_cache.length = s
        return (logits[:t] if t else None), logits[t:]

    # -- rolling back --------------------------------------------------------------------------
    def truncate(self, length: int) -> None:
        """Forget every position from `length` on, as if it had never been appended."""
        if not 1 <= length <= self.length:
            raise ValueError(f"cannot truncate {self.length} positions to {length}")
        self.length = length
        self.patches.truncate(length)
        self.n_latents = min(self.n_latents, self.patches.complete(length))
        self.enc_cache.truncate(length)
        self.dec_cache.truncate(length)
        if self.ent_cache is not None:
            self.ent_cache.truncate(length)
        self.glob_cache.truncate(self.n_latents)
        self.latent_cache.truncate(self.n_latents * self.k)
