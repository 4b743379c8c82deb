"""The decoding methods a run can name, and the one entry point that dispatches to them.

Names (each also accepted with a `[blt-d weights]` suffix, as labels print): `blt`; `blt-s` with draft length k (`--k`, or `blt-s-K`); `blt-d` with block B (`--block`, or
`blt-d-B`, optionally `blt-d-B@confidence=A`, `@entropy=G` or `@eb=G`); `blt-dv` (`blt-dv-B`).
`blt` and `blt-s` run on BLT weights and `blt-d`, `blt-dv` on BLT-D weights; `weights` overrides the
first two (BLT-D keeps BLT's causal path, so `blt` on BLT-D weights is BLT-D's autoregressive decoding).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

import bltbench.decoding.blt  # noqa: F401  (each method module registers its methods)
import bltbench.decoding.speculative  # noqa: F401
from bltbench.decoding.clock import PhaseClock
from bltbench.decoding.core import REGISTRY, DecodeContext, DecodeRequest, lookup
from bltbench.decoding.diffusion import DiffusionConfig
from bltbench.decoding.result import Generation
from bltbench.decoding.sampling import Sampler
from bltbench.decoding.stopping import StopStrings
from bltbench.errors import BltbenchError
from bltbench.model.bundle import ModelBundle
from bltbench.model.ids import EOS
from bltbench.model.incremental import CallObserver

METHODS = ("blt", "blt-s", "blt-d", "blt-dv")  # what a user can name; each is in the registry
assert all(name in REGISTRY for name in METHODS)
MAX_DRAFT = 64
SAMPLER_ALIASES = {"confidence": "confidence", "conf": "confidence", "entropy": "entropy", "eb": "eb"}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    recompute: bool = False
    k: int | None = None
    diffusion: DiffusionConfig | None = None
    weights: str | None = None  # "blt" | "blt-d"; None: the method's own

    @property
    def label(self) -> str:
        if self.name == "blt-s":
            base = f"blt-s-{self.k}"
        elif self.name == "blt-d":
            d = self.diffusion
            value = d.alpha if d.sampler == "confidence" else d.gamma
            base = f"blt-d-{d.block}@{d.sampler}={value:g}"
        elif self.name == "blt-dv":
            base = f"blt-dv-{self.diffusion.block}"
        else:
            base = "blt-recompute" if self.recompute else "blt"
        return base if self.weights in (None, self.own_weights) else f"{base}[{self.weights} weights]"

    @property
    def engine(self) -> str:
        """Its name in the method registry."""
        return "blt-recompute" if self.recompute else self.name

    @property
    def own_weights(self) -> str:
        return lookup(self.engine).weights

    @property
    def runs_on(self) -> str:
        """The weights it runs on: the ones asked for, else its own."""
        return self.weights or self.own_weights

    @property
    def lossless(self) -> bool:
        """Greedy output must equal its causal path's greedy output byte for byte."""
        return lookup(self.engine).lossless

    def validate(self, bundle: ModelBundle | None = None) -> None:
        if self.name not in METHODS:
            raise BltbenchError(f"unknown method {self.name!r} (choose from {', '.join(METHODS)}; e.g. blt-s-8, blt-d-4)")
        if self.recompute and self.name != "blt":
            raise BltbenchError("--recompute applies to --method blt only")
        if self.name == "blt-s" and (self.k is None or not 1 <= self.k <= MAX_DRAFT):
            raise BltbenchError(f"blt-s needs a draft length k in 1..{MAX_DRAFT}, got {self.k}")
        if self.weights not in (None, "blt", "blt-d"):
            raise BltbenchError(f"unknown weights {self.weights!r} (blt or blt-d)")
        if self.name in ("blt-d", "blt-dv"):
            if self.weights == "blt":
                raise BltbenchError(f"{self.name} needs BLT-D weights; --weights blt does not have a block path")
            trained = bundle.config.diffusion_blocks if bundle is not None else (4, 8, 16)
            self.diffusion.validate(trained)


def parse_method(
    text: str,
    k: int | None = None,
    recompute: bool = False,
    diffusion: DiffusionConfig | None = None,
    weights: str | None = None,
) -> MethodSpec:
    """A method from its name and options; names may carry their setting (blt-s-8, blt-d-16@entropy=1.5)."""
    text = text.strip()
    if m := re.fullmatch(r"(.+)\[(blt|blt-d) weights\]", text):  # a label written back: "blt[blt-d weights]"
        text, weights = m.group(1), m.group(2)
    diffusion = diffusion or DiffusionConfig()
    if m := re.fullmatch(r"blt-s(?:-(\d+))?", text):
        spec = MethodSpec("blt-s", recompute, int(m.group(1)) if m.group(1) else (8 if k is None else k), weights=weights)
    elif m := re.fullmatch(r"blt-(d|dv)(?:-(\d+))?(?:@(\w+)=([0-9.eE+-]+|nan|inf))?", text):
        kind, block, sampler, value = m.groups()
        config = replace(diffusion, block=int(block)) if block else diffusion
        if sampler:
            if sampler not in SAMPLER_ALIASES:
                raise BltbenchError(f"unknown sampler {sampler!r} in {text!r} (confidence, entropy or eb)")
            sampler = SAMPLER_ALIASES[sampler]
            setting = {"alpha": float(value)} if sampler == "confidence" else {"gamma": float(value)}
            config = replace(config, sampler=sampler, **setting)
        spec = MethodSpec(f"blt-{kind}", recompute, None, config, weights)
    else:
        spec = MethodSpec(text, recompute, None, None, weights)
    spec.validate()
    return spec


def method_with_options(text: str, recompute: bool = False, weights: str | None = None, k: int | None = None,
                        block: int | None = None, sampler: str | None = None, alpha: float | None = None,
                        gamma: float | None = None) -> MethodSpec:
    """A method named on the command line plus the options given beside it: an option the method does
    not take, one its name contradicts (`blt-s-8 --k 4`: the name's setting wins in `parse_method`, so
    a contradiction shows as an option that did not take), or a sampler setting its sampler does not
    read, is an error, not dropped."""
    named = parse_method(text, recompute=recompute, weights=weights)
    takes = {"blt-s": {"--k"}, "blt-d": {"--block", "--sampler", "--alpha", "--gamma"}, "blt-dv": {"--block"}}
    given = {"--k": k, "--block": block, "--sampler": sampler, "--alpha": alpha, "--gamma": gamma}
    for option, value in given.items():
        if value is not None and option not in takes.get(named.name, set()):
            raise BltbenchError(f"{option} does not apply to {named.name}")
    base = named.diffusion
    asked = None if base is None else DiffusionConfig(
        base.block if block is None else block, base.sampler if sampler is None else SAMPLER_ALIASES.get(sampler, sampler),
        base.alpha if alpha is None else alpha, base.gamma if gamma is None else gamma)
    spec = parse_method(text, k, recompute, asked, weights)
    if (k is not None and spec.k != k) or (asked is not None and spec.diffusion != asked):
        raise BltbenchError(f"{text} already sets what the options change ({spec.label}); drop the option or "
                            "the name's setting")
    d = spec.diffusion
    if d is not None and alpha is not None and d.sampler != "confidence":
        raise BltbenchError(f"--alpha applies to the confidence sampler; {spec.label} uses {d.sampler}")
    if d is not None and gamma is not None and d.sampler == "confidence":
        raise BltbenchError(f"--gamma applies to the entropy and eb samplers; {spec.label} uses confidence")
    return spec


def context(spec: MethodSpec, bundle: ModelBundle, observer: CallObserver | None = None,
            steps: str = "eager") -> DecodeContext:
    """What a method runs on: the weights it names, the bundle's entropy model and patching."""
    return DecodeContext(bundle.weights(spec.runs_on), bundle.require_entropy(), bundle.config.patching, observer, steps)


def generate(
    spec: MethodSpec,
    bundle: ModelBundle,
    prompt_ids: list[int],
    max_bytes: int,
    sampler: Sampler,
    observer: CallObserver | None = None,
    stop: StopStrings | Iterable[str | bytes] = (),
    steps: str = "eager",
) -> Generation:
    """Run one method; `stop` strings end the output early (cut before the string). `steps` says how
    one-position calls run: "eager", "fixed" (fixed shapes) or "compiled" (torch.compile of the
    fixed-shape steps; CUDA graphs on a GPU)."""
    spec.validate(bundle)
    limit = bundle.config.max_seqlen
    if limit is not None and len(prompt_ids) + max_bytes > limit:
        raise BltbenchError(f"this model runs at most {limit:,} positions (its max_encoder_seq_length; the official "
                            f"code's rotary tables end there), but the prompt's {len(prompt_ids):,} (BOS included) plus "
                            f"a budget of {max_bytes:,} bytes need {len(prompt_ids) + max_bytes:,}")
    stop = stop if isinstance(stop, StopStrings) else StopStrings(stop)
    ctx = context(spec, bundle, observer, steps)
    request = DecodeRequest(list(prompt_ids), max_bytes, sampler, stop, PhaseClock(ctx.device))
    return lookup(spec.engine).run(ctx, request, spec)
