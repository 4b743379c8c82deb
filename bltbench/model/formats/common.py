"""What every checkpoint format shares: reading JSON, reading tensors lazily, strict streaming loads.

A checkpoint's tensors are never all held in memory beside the model: safetensors files are read one
tensor at a time from their memory map, `.pth` files are memory-mapped by `torch.load(mmap=True)`, and
each tensor is copied (cast on the way) straight into the module's own storage, which was allocated
once in the target dtype. Loading a 2.9B-parameter fp32 checkpoint into bf16 therefore needs the bf16
model plus one tensor, not an fp32 copy of the whole state."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bltbench.errors import BltbenchError
from bltbench.model.build import ensure_fits, materialise, on_meta


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BltbenchError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BltbenchError(f"{path} does not hold a JSON object")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class LazyState(Mapping[str, torch.Tensor]):
    """A state dict whose tensors are produced on access (and so can be dropped right after use).
    Shapes are known without reading a tensor, which is what strict checking needs."""

    def __init__(self, loaders: dict[str, Callable[[], torch.Tensor]], shapes: dict[str, tuple[int, ...]],
                 source: str):
        self._loaders, self._shapes, self.source = loaders, shapes, source
        self.rows: Callable[[str, int, int], torch.Tensor] | None = None  # rows [a, b) of a stored tensor

    @classmethod
    def of(cls, tensors: Mapping[str, torch.Tensor], source: str) -> "LazyState":
        """A plain (or memory-mapped) state dict seen through the same interface."""
        if isinstance(tensors, LazyState):
            return tensors
        odd = next((k for k, t in tensors.items() if not isinstance(t, torch.Tensor)), None)
        if odd is not None:
            raise BltbenchError(f"checkpoint {source} holds {odd!r}, which is not a tensor")
        return cls({k: (lambda t=t: t) for k, t in tensors.items()}, {k: tuple(t.shape) for k, t in tensors.items()},
                   source)

    def __getitem__(self, key: str) -> torch.Tensor:
        try:
            return self._loaders[key]()
        except KeyError:
            raise
        except Exception as exc:  # a file truncated after its header was read
            raise BltbenchError(f"corrupt or unreadable checkpoint {self.source}: {_first_line(exc)}") from None

    def __contains__(self, key: object) -> bool:  # without this, Mapping would read the tensor to answer
        return key in self._loaders

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def select(self, names: Mapping[str, str]) -> "LazyState":
        """A view under new names: {new name: name here}."""
        return LazyState({new: self._loaders[old] for new, old in names.items()},
                         {new: self._shapes[old] for new, old in names.items()}, self.source)

    def derived(self, name: str, shape: tuple[int, ...], make: Callable[["LazyState"], torch.Tensor]) -> None:
        """Add a tensor computed from this state when it is read (a slice of a stored one, say)."""
        self._loaders[name] = lambda: make(self)
        self._shapes[name] = tuple(shape)

    def drop(self, names) -> "LazyState":
        keep = {k: k for k in self if k not in set(names)}
        return self.select(keep)

    @staticmethod
    def merged(states: list["LazyState"], source: str) -> "LazyState":
        loaders: dict[str, Callable[[], torch.Tensor]] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        readers: dict[str, Callable] = {}
        for state in states:
            loaders.update(state._loaders)
            shapes.update(state._shapes)
            if state.rows is not None:
                readers.update({key: state.rows for key in state._loaders})
        merged = LazyState(loaders, shapes, source)
        if readers:
            merged.rows = lambda key, a, b: readers[key](key, a, b)
        return merged


def read_safetensors(path: Path) -> LazyState:
    """A safetensors file, opened (memory-mapped) but not read: each tensor is read when asked for."""
    from safetensors import safe_open

    try:
        handle = safe_open(str(path), framework="pt")
        keys = list(handle.keys())
        shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in keys}
    except Exception as exc:  # SafetensorError, OSError, ...: the header is damaged or missing
        raise BltbenchError(f"corrupt or unreadable checkpoint {path}: {_first_line(exc)}") from None
    state = LazyState({k: (lambda k=k: handle.get_tensor(k)) for k in keys}, shapes, str(path))
    state.rows = lambda key, a, b: handle.get_slice(key)[a:b]  # part of a tensor, reading only its rows
    return state


def read_torch(path: Path) -> LazyState:
    """An official `.pth` ({"model": state_dict}), memory-mapped: its tensors page in as they are copied."""
    data, error = None, None
    for mmap in (True, False):  # files in torch's legacy (pre-zip) format cannot be memory-mapped
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            break
        except Exception as exc:  # torch raises many types for a damaged file
            error = exc
    if error is not None and data is None:
        raise BltbenchError(f"corrupt or unreadable checkpoint {path}: {_first_line(error)}") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return LazyState.of(data["model"], str(path))
    raise BltbenchError(f"{path} does not hold {{'model': state_dict}} as official BLT checkpoints do")


def load_state(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `module` one tensor at a time (cast to the module's dtype on the way), failing
    with one line on any missing, extra or misshapen tensor before anything is copied."""
    state = LazyState.of(state, source)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = [k for k in expected if k in state and state.shape(k) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if misshapen:
        k = misshapen[0]
        problems.append(f"{len(misshapen)} of the wrong shape (e.g. {k}: {state.shape(k)} vs "
                        f"{tuple(expected[k].shape)})")
    if problems:
        raise BltbenchError(f"checkpoint {source} does not match its config: tensors " + "; ".join(problems))
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(state[key])


def build_from_state(factory: Callable[[], nn.Module], state: Mapping[str, torch.Tensor], source: str,
                     dtype: torch.dtype) -> nn.Module:
    """A module allocated once in `dtype` (no fp32 copy first) and filled from a checkpoint's state."""
    meta = on_meta(factory, dtype)
    ensure_fits(source, [meta], "cpu")
    module = materialise(meta, "cpu")
    load_state(module, state, source)
    return module.eval()
