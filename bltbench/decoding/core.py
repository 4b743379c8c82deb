"""The decoding core every method runs on (DESIGN.md section 11).

A `DecodeContext` says what runs (model, entropy model, patching, observer, device, dtype, compiled
steps or not), a `DecodeRequest` what is asked (prompt ids, byte budget, sampler, stop strings), and
an `Output` is where every method commits bytes: EOS, the budget and stop strings are decided there,
once, and so are the committed-per-round counts that speculative methods report. Methods register by
name; the registry's errors list what exists.

Accounting convention (shared by every method): the prefill runs the entropy model over the whole
prompt and every other component over the prompt but its last byte; the first generation call runs
that last byte and yields the first new byte.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from bltbench.decoding.clock import PhaseClock
from bltbench.decoding.result import Generation
from bltbench.decoding.sampling import Sampler
from bltbench.decoding.stopping import NO_STOP, StopStrings
from bltbench.errors import BltbenchError
from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.config import PatchingConfig
from bltbench.model.entropy import EntropyModel, entropy_nats
from bltbench.model.ids import EOS
from bltbench.model.incremental import CallObserver, IncrementalBLT

STEP_MODES = ("eager", "fixed", "compiled")
COMPILED_CAPACITY_STEP = 256  # compiled sessions round their caches up, so few shapes ever compile
PREFILL_CHUNK = 1024  # prompt positions per prefill call: attention masks stay [chunk, length], never [T, T]


def to_host(*parts: torch.Tensor) -> list[list[float]]:
    """Everything the host needs from one decoding step, in one device-to-host transfer."""
    flat = [p.reshape(-1) for p in parts]
    values = torch.cat([p.double() for p in flat]).tolist()
    out, i = [], 0
    for p in flat:
        out.append(values[i : i + p.numel()])
        i += p.numel()
    return out


@functools.cache
def step_compiler(device_type: str) -> Callable:
    """torch.compile for fixed-shape steps: inductor on a CPU, CUDA graphs on a GPU."""
    mode = "reduce-overhead" if device_type == "cuda" else None
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    return lambda fn: torch.compile(fn, fullgraph=True, dynamic=False, mode=mode)


@dataclass(frozen=True)
class DecodeContext:
    model: ByteLatentTransformer
    entropy_model: EntropyModel | None
    patching: PatchingConfig
    observer: CallObserver | None = None
    steps: str = "eager"  # one-position calls: "eager", "fixed" (fixed shapes, run eagerly) or "compiled"

    def __post_init__(self) -> None:
        if self.steps not in STEP_MODES:
            raise BltbenchError(f"unknown step mode {self.steps!r} (choose from {', '.join(STEP_MODES)})")

    @property
    def device(self) -> torch.device:
        return self.model.local_decoder.output.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.local_decoder.output.weight.dtype

    def entropies(self, ids: list[int]) -> list[float]:
        """Entropy-model entropies of a whole sequence in one uncached pass (zeros without entropy
        patching): for patches reported after decoding, apart from any session's buffers."""
        if self.entropy_model is None or self.patching.mode != "entropy":
            return [0.0] * len(ids)
        with torch.inference_mode():
            x = torch.tensor([ids], dtype=torch.long, device=self.device)
            return entropy_nats(self.entropy_model(x)[0]).tolist()

    def capacity(self, request: DecodeRequest, slack: int) -> int:
        needed = len(request.prompt_ids) + request.max_bytes + slack
        if self.steps == "eager":
            return needed
        return -(-needed // COMPILED_CAPACITY_STEP) * COMPILED_CAPACITY_STEP

    def session(self, request: DecodeRequest, slack: int = 0, span: int = 1) -> IncrementalBLT:
        """Caches preallocated for prompt + budget + `slack` (a method's draft or block overshoot),
        with the prompt prefilled; `span` is the widest entropy call the method runs ahead."""
        prompt = request.prompt_ids
        state = IncrementalBLT(self.model, self.entropy_model, self.patching, self.capacity(request, slack + span),
                               self.observer, fixed_steps=self.steps != "eager",
                               compiler=step_compiler(self.device.type) if self.steps == "compiled" else None,
                               reuse_buffers=self.steps == "compiled", span=span)
        if self.steps == "compiled":
            state.steps.warm()
        state.write(prompt, 0)
        for end in range(PREFILL_CHUNK, len(prompt) + PREFILL_CHUNK, PREFILL_CHUNK):
            state.place_patches(min(end, len(prompt)), "prefill")
        for start in range(0, len(prompt) - 1, PREFILL_CHUNK):
            state.extend(min(PREFILL_CHUNK, len(prompt) - 1 - start), "prefill")
        request.clock.mark("prefill")
        return state


@dataclass
class DecodeRequest:
    prompt_ids: list[int]
    max_bytes: int
    sampler: Sampler
    stop: StopStrings = NO_STOP
    clock: PhaseClock = field(default_factory=PhaseClock)  # started with the request: make it just before running

    def __post_init__(self) -> None:
        if len(self.prompt_ids) < 2:
            raise BltbenchError("a prompt is BOS plus at least one byte")
        if self.max_bytes < 0:
            raise BltbenchError(f"the byte budget must be >= 0, got {self.max_bytes}")

    @property
    def greedy(self) -> bool:
        return self.sampler.config.greedy


@dataclass
class Output:
    """The bytes a method has committed, and why it stopped. A round is one commit: a byte (blt), a
    verified draft (BLT-S, BLT-DV) or a finished block (BLT-D)."""

    request: DecodeRequest
    ids: list[int] = field(default_factory=list)
    eos: bool = False
    stopped: bool = False
    committed: list[int] = field(default_factory=list)  # bytes kept per round
    drafted: int = 0
    accepted: int = 0
    passes: int = 0  # decoder passes (BLT-D)
    ran_ahead: int = 0  # rounds drafted before the previous round's transfer (BLT-S)

    @property
    def room(self) -> int:
        return self.request.max_bytes - len(self.ids)

    @property
    def done(self) -> bool:
        return self.eos or self.stopped or self.room <= 0

    def commit(self, new: Sequence[int]) -> int:
        """Append a round's bytes until EOS, the budget or a stop string; returns how many were kept."""
        before = len(self.ids)
        for byte in new:
            if self.room <= 0:
                break
            if byte == EOS:
                self.eos = True
                break
            self.ids.append(int(byte))
        self.stopped = self.request.stop.cut(self.ids, before)
        kept = max(0, len(self.ids) - before)  # a stop string may cut into earlier rounds' bytes too
        self.committed.append(kept)
        if len(self.committed) == 1:
            self.request.clock.mark("first")
        return kept

    def verified(self, drafted: int, accepted: int) -> None:
        self.drafted += drafted
        self.accepted += accepted

    def verification_extras(self) -> dict:
        return {"accepted_per_verify": sum(self.committed) / max(1, len(self.committed)),
                "acceptance_rate": self.accepted / self.drafted if self.drafted else None,
                "verify_rounds": len(self.committed), "committed_bytes": sum(self.committed)}

    def generation(self, patches: list[int] | Callable[[], list[int]], extras: dict | None = None) -> Generation:
        phases = self.request.clock.phases()
        return Generation(list(self.request.prompt_ids), self.ids, self.eos, patches, extras or {}, self.stopped, phases)

    def committed_patches(self, state: IncrementalBLT) -> list[int]:
        """Patch lengths over prompt + output, when the model ran every byte but the last (its flag
        is known from the byte before it)."""
        return state.patches.lengths(len(self.request.prompt_ids) + len(self.ids))


MethodRunner = Callable[[DecodeContext, DecodeRequest, object], Generation]


@dataclass(frozen=True)
class Method:
    name: str
    run: MethodRunner
    weights: str  # the weights it runs on by default: "blt" or "blt-d"
    lossless: bool  # greedy output equals its causal path's greedy output byte for byte


REGISTRY: dict[str, Method] = {}


def register(name: str, weights: str = "blt", lossless: bool = True):
    def add(run: MethodRunner) -> MethodRunner:
        REGISTRY[name] = Method(name, run, weights, lossless)
        return run

    return add


def lookup(name: str) -> Method:
    if name not in REGISTRY:
        raise BltbenchError(f"unknown method {name!r} (choose from {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]
