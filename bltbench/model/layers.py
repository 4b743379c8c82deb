"""Transformer pieces shared by every BLT component, named as in the official code.

Each self-attention layer can run without a cache (training, full recompute) or against a
`KVCache`, so the same weights serve the full forward and one-position decode steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bltbench.errors import BltbenchError
from bltbench.model.ids import EOS


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written out from the vector norm: on CPU this runs several times faster than F.rms_norm
        # or mean(x^2) on the one-position tensors of a decode step.
        xf = x if x.dtype == torch.float32 else x.float()
        norm = torch.linalg.vector_norm(xf, dim=-1, keepdim=True)
        scaled = xf * torch.rsqrt(norm * norm * (1.0 / x.shape[-1]) + self.eps)
        return (scaled if x.dtype == torch.float32 else scaled.type_as(x)) * self.weight


def project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T. A single 16-bit row on a CPU goes through the matrix-vector kernel, which streams
    the weight 20-40% faster there than the matrix-matrix one linear picks (fp32 and GPUs keep linear)."""
    if (x.dtype != torch.float32 and x.device.type == "cpu" and x.numel() == x.shape[-1]
            and not torch.compiler.is_compiling()):
        return torch.mv(weight, x.reshape(-1)).view(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight)


def fused_weight(owner: nn.Module, *linears: nn.Linear) -> torch.Tensor:
    """The row-wise concatenation of several linears' weights, so one matmul serves them all.

    Cached for inference (keyed on the weights' versions); rebuilt every call when gradients flow.
    """
    weights = [lin.weight for lin in linears]
    if torch.compiler.is_compiling():  # compiled decode steps: the eager prefill has built it already
        return owner._fused_weight
    if torch.is_grad_enabled() or getattr(owner, "_no_fused_cache", False):  # training, or a sharded model
        return torch.cat(weights)
    base = getattr(owner, "_fused_base", None)
    if base is not None and weights[0].data_ptr() == base.data_ptr():  # the linears are views of it
        return base
    # Inference tensors (created under inference_mode) keep no version counter.
    key = tuple((w.data_ptr(), -1 if w.is_inference() else w._version) for w in weights)
    if getattr(owner, "_fused_key", None) != key:
        owner._fused_weight = torch.cat(weights).detach()
        owner._fused_key = key
    return owner._fused_weight


@torch.no_grad()
def share_fused_storage(module: nn.Module) -> nn.Module:
    """Lay each fused group's weights (q/k/v, gate/up, cross-attention k/v) out in one tensor and make
    the linears views of it: inference's fused matmul then reads the weights in place instead of a
    concatenated copy (on blt-7b, 8 GB more). Training is unaffected: each weight is its own parameter."""
    for sub in module.modules():
        names = getattr(sub, "FUSED", ())
        if not names:
            continue
        linears = [getattr(sub, name) for name in names]
        base = torch.cat([lin.weight.detach() for lin in linears])
        offset = 0
        for lin in linears:
            rows = lin.weight.shape[0]
            lin.weight = nn.Parameter(base[offset : offset + rows], requires_grad=lin.weight.requires_grad)
            offset += rows
        sub._fused_base = sub._fused_weight = base  # compiled steps read _fused_weight
    return module


def build_fused_weights(module: nn.Module) -> None:
    """Build every fused weight of `module` now (inference), so compiled code only reads them."""
    for sub in module.modules():
        if isinstance(sub, (Attention, FeedForward, CrossAttention)):
            sub.fused()


class Rotary(nn.Module):
    """RoPE in the interleaved-pair convention: pair (x[2i], x[2i+1]) rotated by pos * theta^(-2i/D).

    Angles are computed in fp32; the table holds their (cos, sin) as real numbers [L, D/2, 2] (real
    arithmetic compiles everywhere, complex does not), and decoding builds it once to its request's
    full length.
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta  # no float buffer: a cast of the model to 16 bits leaves angles in fp32
        self._table = torch.empty(0, head_dim // 2, 2, device="cpu")

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device) / self.head_dim
        return 1.0 / (self.theta ** exponents)

    def table(self, length: int, device: torch.device) -> torch.Tensor:
        if self._table.shape[0] < length or self._table.device != device:
            size = max(length, 2 * self._table.shape[0], 256)
            angles = torch.outer(torch.arange(size, dtype=torch.float32, device=device), self.inv_freq(device))
            self._table = torch.view_as_real(torch.polar(torch.ones_like(angles), angles)).contiguous()
        return self._table

    def span(self, start: int, length: int, device: torch.device) -> torch.Tensor:
        """Rotations [length, D/2, 2] for positions [start, start + length)."""
        return self.table(start + length, device)[start : start + length]

    def at(self, positions: torch.Tensor) -> torch.Tensor:
        """Rotations [..., D/2, 2] for arbitrary integer positions [...]."""
        return self.table(int(positions.max()) + 1, positions.device)[positions]


def rotary_factors(cis: torch.Tensor, middle: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of rotations [T, D/2, 2] or [B, T, D/2, 2], shaped to broadcast over `middle` dims
    between positions and pairs; built once per call of a stack of layers, not per layer."""
    lead = cis.shape[:-2]
    shape = tuple(lead) + (1,) * middle + (cis.shape[-2],)
    return cis[..., 0].reshape(shape), cis[..., 1].reshape(shape)


def apply_rotary(x: torch.Tensor, cis: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x: [B, T, ..., D] with positions on dim 1; cis: rotations [T, D/2, 2] or [B, T, D/2, 2] (cos,
    sin), or their `rotary_factors`."""
    cos, sin = rotary_factors(cis, x.dim() - 3) if isinstance(cis, torch.Tensor) else cis
    xf = x if x.dtype == torch.float32 else x.float()
    pairs = xf.reshape(*x.shape[:-1], -1, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)
    return out if x.dtype == torch.float32 else out.type_as(x)


class CacheOverflow(BltbenchError, ValueError):
    """A request wrote past the positions its caches were preallocated for."""


class KVCache:
    """Keys and values of one component, all layers, preallocated once for `capacity` positions.

    Calls write new keys at a position index (an int in eager steps, a device index tensor in
    fixed-shape steps) and read a span of the buffer; nothing is allocated per step. Rolling back is
    moving `length` back: later writes overwrite what lies beyond it.
    """

    def __init__(self, n_layers: int, batch: int, n_heads: int, head_dim: int, dtype, device, capacity: int) -> None:
        self.n_layers, self.capacity = n_layers, capacity
        self.keys = [torch.zeros(batch, n_heads, capacity, head_dim, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.length = 0

    def check(self, end: int) -> None:
        if end > self.capacity:
            raise CacheOverflow(f"a call reached position {end}, past the {self.capacity} positions its cache was "
                                "preallocated for (prompt + byte budget + slack)")

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, plan: "AttentionPlan") -> tuple[torch.Tensor, torch.Tensor]:
        """Store new keys/values where the plan says and return the span the plan reads."""
        at = plan.write_at
        keys, values = self.keys[layer], self.values[layer]
        if isinstance(at, int):  # narrow: one view op where indexing dispatches one per dimension
            keys.narrow(2, at, k.shape[2]).copy_(k)
            values.narrow(2, at, v.shape[2]).copy_(v)
        else:
            keys.index_copy_(2, at, k)
            values.index_copy_(2, at, v)
        end = plan.k_end if plan.k_end is not None else at + k.shape[2]
        span = end - plan.k_start
        return keys.narrow(2, plan.k_start, span), values.narrow(2, plan.k_start, span)

    def truncate(self, length: int) -> None:
        if length > self.length:
            raise ValueError(f"cannot roll a cache of length {self.length} forward to {length}")
        self.length = length


def mask_to_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Boolean mask (True = attend) as the additive bias attention takes; built once per call, not per
    layer. Every row must keep at least one key (a fully masked row would give NaN)."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


def attention(q, k, v, bias: torch.Tensor | None) -> torch.Tensor:
    """Scaled dot-product attention under an additive bias (or a boolean mask, converted here)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask_to_bias(bias, q.dtype))


def windowed_causal_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None,
                         restart: int | None = None) -> torch.Tensor:
    """True where the query at position i may see the key at position j: j <= i and i - j < window, and,
    with a context `restart` every R positions, j in i's chunk (floor(j / R) == floor(i / R))."""
    diff = q_pos[:, None] - k_pos[None, :]
    mask = diff >= 0
    if window is not None:
        mask &= diff < window
    if restart is not None:
        mask &= (q_pos[:, None] // restart) == (k_pos[None, :] // restart)
    return mask


@dataclass
class AttentionPlan:
    """Where a run of layers puts and finds its keys: the queries' rotations, where their new keys
    are written (an int start, or a device index tensor in fixed-shape steps), the key span
    [k_start, k_end) read back (k_end None: up to the new keys' end), and the boolean mask over it
    (None: every key in the span)."""

    cis: torch.Tensor
    k_start: int
    mask: torch.Tensor | None
    write_at: int | torch.Tensor = 0
    k_end: int | None = None


def eos_documents(ids: torch.Tensor) -> torch.Tensor:
    """The document of each position [..., L]: a document ends at, and includes, an EOS (the official
    block-causal masks' `tokens_to_seqlen` cut)."""
    eos = (ids == EOS).long()
    return eos.cumsum(-1) - eos


def causal_plan(rope: Rotary, start: int, t: int, window: int | None, device, restart: int | None = None,
                docs: torch.Tensor | None = None) -> AttentionPlan:
    """Queries at [start, start + t) that read the cache's live span (eager calls); with `docs` (the
    document of every position up to start + t, [B, start + t]), only keys of the query's document."""
    k_start, mask = causal_span(start, t, window, device, restart)
    if docs is not None:
        same = docs[:, start : start + t, None] == docs[:, None, k_start : start + t]
        mask = (same if mask is None else mask[None] & same).unsqueeze(1)
    return AttentionPlan(rope.span(start, t, device), k_start, mask, start, start + t)


def causal_span(start: int, t: int, window: int | None, device,
                restart: int | None = None) -> tuple[int, torch.Tensor | None]:
    """For queries at [start, start + t): the first cached key they can see, and their mask.

    A single query sees exactly the keys from the returned start, so it needs no mask.
    """
    k_start = 0 if window is None else max(0, start - window + 1)
    if restart is not None:  # nothing before the first query's chunk is visible to any of them
        k_start = max(k_start, start // restart * restart)
    if t == 1:
        return k_start, None
    q_pos = torch.arange(start, start + t, device=device)
    return k_start, windowed_causal_mask(q_pos, torch.arange(k_start, start + t, device=device), window, restart)


def fixed_plan(table: torch.Tensor, positions: torch.Tensor, window: int | None,
               restart: int | None = None, docs: torch.Tensor | None = None) -> AttentionPlan:
    """Queries at device `positions` [t] that read the whole preallocated buffer (as long as the
    rotation `table`) under a mask: every shape is fixed, so a compiled step serves every position
    without recompiling. `docs` [1, capacity] (the document of every buffer position) keeps each query
    to its own document's keys."""
    capacity = table.shape[0]
    k_pos = torch.arange(capacity, device=positions.device)
    mask = windowed_causal_mask(positions, k_pos, window, restart)
    if docs is not None:
        mask = mask & (docs[0].index_select(0, positions)[:, None] == docs[0][None, :])
    return AttentionPlan(table.index_select(0, positions), 0, mask[None, None], positions, capacity)


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    FUSED = ("wq", "wk", "wv")

    def fused(self) -> torch.Tensor:
        return fused_weight(self, self.wq, self.wk, self.wv)

    def forward(self, x, rope, mask, cache: KVCache | None = None, layer: int = 0, plan: AttentionPlan | None = None):
        b, t, _ = x.shape
        qkv = project(x, self.fused()).view(b, t, 3, self.n_heads, self.head_dim)
        qk = apply_rotary(qkv[:, :, :2], rope).transpose(1, 3)  # [B, H, 2, T, D]
        q, k = qk[:, :, 0], qk[:, :, 1]
        v = qkv[:, :, 2].transpose(1, 2)
        if cache is not None:
            k, v = cache.write(layer, k, v, plan)
        out = attention(q, k, v, mask)
        return project(out.transpose(1, 2).reshape(b, t, -1), self.wo.weight)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    FUSED = ("w1", "w3")

    def fused(self) -> torch.Tensor:
        return fused_weight(self, self.w1, self.w3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = project(x, self.fused()).chunk(2, dim=-1)
        return project(F.silu(gate) * up, self.w2.weight)


class TransformerBlock(nn.Module):
    """Pre-RMSNorm attention and SwiGLU, each with a residual."""

    def __init__(self, dim: int, n_heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.attention = Attention(dim, n_heads)
        self.feed_forward = FeedForward(dim, hidden)
        self.attention_norm = RMSNorm(dim, eps)
        self.ffn_norm = RMSNorm(dim, eps)

    def forward(self, x, rope, mask, cache: KVCache | None = None, layer: int = 0, plan: AttentionPlan | None = None):
        # Submodules are called through .forward: decoding runs this once per byte per layer, and
        # nn.Module.__call__ costs more than the small matmuls themselves on a CPU.
        x = x + self.attention.forward(self.attention_norm.forward(x), rope, mask, cache, layer, plan)
        return x + self.feed_forward.forward(self.ffn_norm.forward(x))


class CrossAttention(nn.Module):
    """Cross-attention with RMSNorm on queries and keys, no RoPE; returns x + attn (official)."""

    def __init__(self, dim: int, n_heads: int, eps: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.cross_attn_norm_q = RMSNorm(dim, eps)
        self.cross_attn_norm_kv = RMSNorm(dim, eps)
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    FUSED = ("wk", "wv")

    def fused(self) -> torch.Tensor:
        return fused_weight(self, self.wk, self.wv)

    def project_kv(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values [B, H, S, D] of the sources; decoding computes them once per latent."""
        b, s, _ = kv.shape
        kv = project(self.cross_attn_norm_kv.forward(kv), self.fused())
        k, v = kv.view(b, s, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        q = project(self.cross_attn_norm_q.forward(x), self.wq.weight)
        out = attention(q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2), k, v, mask)
        return x + project(out.transpose(1, 2).reshape(b, t, -1), self.wo.weight)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.attend(x, *self.project_kv(kv), mask)


def run_blocks(layers, plan: AttentionPlan, h, cache: KVCache | None, before=None):
    """Run blocks over new positions, writing their keys/values into `cache` where the plan says.

    The host-side `length` moves only for int-placed writes; fixed-shape steps leave it to the caller.
    """
    t = h.shape[1]
    if cache is not None and isinstance(plan.write_at, int):
        cache.check(plan.write_at + t)
    bias = mask_to_bias(plan.mask, h.dtype)
    rope = rotary_factors(plan.cis)  # attention rotates q and k together: [B, T, 2, H, D]
    for i, layer in enumerate(layers):
        if before is not None:
            h = before(i, h)
        h = layer.forward(h, rope, bias, cache, i, plan)
    if cache is not None and isinstance(plan.write_at, int):
        cache.length = plan.write_at + t
    return h
