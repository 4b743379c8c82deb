"""The `bltbench` model for lm-eval: any bltbench method under lm-eval's request types.

Strings are UTF-8 bytes (byte b is id b + 4) and every sequence starts with BOS, as the decoders'
prompts do. `loglikelihood` sums the continuation bytes' log-probabilities under the method's causal
path (see `Scorer`); `loglikelihood_rolling` scores a whole text in BOS-prefixed windows of
`ScoringConfig.window` ids, each byte once; `generate_until` runs the method's own decoding and cuts at
the `until` strings. Requests of one document are scored together in one batch, and what each
document cost (calls, sequences, bytes, seconds) is kept per (task, doc_id) for the runner's records.

    import lm_eval, bltbench.suites.lm_eval_model            # the import registers "bltbench"
    from bltbench.suites.lm_eval_local import task_manager
    lm_eval.simple_evaluate(model="bltbench", model_args="model=tiny,method=blt-d-8",
                            tasks=["bltbench_piqa"], task_manager=task_manager(DataSource()), limit=4)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from bltbench.decoding.methods import parse_method
from bltbench.errors import BltbenchError
from bltbench.decoding.sampling import SamplingConfig
from bltbench.suites.scorer import Scorer, ScoringConfig, Usage

DocKey = tuple[Any, Any]  # (task name, doc id) of lm-eval's Instance; (None, None) outside a task


def _key(request) -> DocKey:
    return getattr(request, "task_name", None), getattr(request, "doc_id", None)


def _grouped(requests: list) -> dict[DocKey, list[int]]:
    groups: dict[DocKey, list[int]] = defaultdict(list)
    for i, r in enumerate(requests):
        groups[_key(r)].append(i)
    return groups


def _device(device: Any) -> str:
    """lm-eval's device (its CLI's `--device`, or `device=` in model_args): cpu unless given; CUDA asked for
    on a machine without it is one clear error, not an assertion deep in torch."""
    import torch

    name = str(device or "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BltbenchError(f"device {name!r} was asked for, but this machine has no CUDA device "
                            "(pass device=cpu in --model_args, or --device cpu)")
    return name


@register_model("bltbench")
class BltbenchLM(LM):
    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "BltbenchLM":
        """lm-eval's model_args plus its CLI options (batch size, device); model_args win where both
        name a setting, instead of a duplicate-argument TypeError."""
        from lm_eval import utils

        return cls.create_from_arg_obj(utils.simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "BltbenchLM":
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    def __init__(self, scorer: Scorer | None = None, model: str = "tiny", method: str = "blt", device: str = "cpu",
                 batch_size: int | str | None = None, window: int | str | None = None,
                 max_gen_bytes: int | str = 256, entropy_model: str | None = None, **_: Any) -> None:
        super().__init__()
        if scorer is None:
            from bltbench.model.checkpoint import load_model

            device = _device(device)

            config = ScoringConfig(
                window=int(window) if window else ScoringConfig.window,
                batch_size=int(batch_size) if str(batch_size or "").isdigit() else ScoringConfig.batch_size,
            )
            bundle = load_model(str(model), str(device), entropy_model=entropy_model)
            scorer = Scorer(bundle, parse_method(str(method)), config, str(device))
        self.scorer = scorer
        self.max_gen_bytes = int(max_gen_bytes)
        self.usage: dict[DocKey, Usage] = defaultdict(Usage)

    def take_usage(self) -> dict[DocKey, Usage]:
        """What each document cost since the last call, and forget it."""
        usage, self.usage = dict(self.usage), defaultdict(Usage)
        return usage

    def loglikelihood(self, requests: list) -> list[tuple[float, bool]]:
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        for key, index in _grouped(requests).items():
            pairs = [(requests[i].args[0].encode(), requests[i].args[1].encode()) for i in index]
            for i, result in zip(index, self.scorer.loglikelihood(pairs, self.usage[key])):
                out[i] = result
        return out  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests: list) -> list[float]:
        out: list[float | None] = [None] * len(requests)
        for key, index in _grouped(requests).items():
            texts = [requests[i].args[0].encode() for i in index]
            for i, total in zip(index, self.scorer.rolling(texts, self.usage[key])):
                out[i] = total
        return out  # type: ignore[return-value]

    def generate_until(self, requests: list) -> list[str]:
        out = []
        for r in requests:
            context, kwargs = r.args[0], dict(r.args[1] if len(r.args) > 1 else {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(kwargs.get("temperature", 0.0) or 0.0)
            if not kwargs.get("do_sample", temperature > 0):
                temperature = 0.0
            sampling = SamplingConfig(temperature=temperature, top_k=kwargs.get("top_k"), top_p=kwargs.get("top_p"),
                                      seed=int(kwargs.get("seed", 0) or 0))
            budget = int(kwargs.get("max_gen_toks", self.max_gen_bytes))
            out.append(self.scorer.generate(context.encode(), budget, sampling, until, self.usage[_key(r)]))
        return out
