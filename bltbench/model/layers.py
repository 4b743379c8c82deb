"""Transformer pieces shared by every BLT component, named as in the official code.

Each self-attention layer can run without a cache (training, full recompute) or against a
`KVCache`, so the same weights serve the full forward and one-position decode steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


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


def fused_weight(owner: nn.Module, *linears: nn.Linear) -> torch.Tensor:
    """The row-wise concatenation of several linears' weights, so one matmul serves them all.

    Cached for inference (keyed on the weights' versions); rebuilt every call when gradients flow.
    """
    weights = [lin.weight for lin in linears]
    if torch.is_grad_enabled():
        return torch.cat(weights)
    # Inference tensors (created under inference_mode) keep no version counter.
    key = tuple((w.data_ptr(), -1 if w.is_inference() else w._version) for w in weights)
    if getattr(owner, "_fused_key", None) != key:
        owner._fused_weight = torch.cat(weights).detach()
        owner._fused_key = key
    return owner._fused_weight


class Rotary(nn.Module):
    """RoPE in the interleaved-pair convention: pair (x[2i], x[2i+1]) rotated by pos * theta^(-2i/D).

    Angles are computed in fp32 and kept as unit complex numbers in a table grown on demand.
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._cis = torch.empty(0, dtype=torch.complex64)

    def table(self, length: int, device: torch.device) -> torch.Tensor:
        if self._cis.shape[0] < length or self._cis.device != device:
            size = max(length, 2 * self._cis.shape[0], 256)
            angles = torch.outer(torch.arange(size, dtype=torch.float32, device=device), self.inv_freq.to(device))
            self._cis = torch.polar(torch.ones_like(angles), angles)
        return self._cis

    def span(self, start: int, length: int, device: torch.device) -> torch.Tensor:
        """Complex rotations [length, D/2] for positions [start, start + length)."""
        return self.table(start + length, device)[start : start + length]

    def at(self, positions: torch.Tensor) -> torch.Tensor:
        """Complex rotations [..., D/2] for arbitrary integer positions [...]."""
        return self.table(int(positions.max()) + 1, positions.device)[positions]


def apply_rotary(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """x: [B, T, ..., D] with positions on dim 1; cis: [T, D/2] or [B, T, D/2] complex."""
    middle = (1,) * (x.dim() - 3)
    if cis.dim() == 2:
        shape = (cis.shape[0],) + middle + (cis.shape[1],)
    else:
        shape = (cis.shape[0], cis.shape[1]) + middle + (cis.shape[2],)
    xf = x if x.dtype == torch.float32 else x.float()
    out = torch.view_as_real(torch.view_as_complex(xf.reshape(*x.shape[:-1], -1, 2)) * cis.view(shape)).flatten(-2)
    return out if x.dtype == torch.float32 else out.type_as(x)


class KVCache:
    """Keys and values of one component, all layers, grown by doubling; `length` is shared.

    Rolling back is setting `length`: later writes overwrite what lies beyond it.
    """

    def __init__(self, n_layers: int, batch: int, n_heads: int, head_dim: int, dtype, device) -> None:
        self.n_layers = n_layers
        self.shape = (batch, n_heads, 0, head_dim)
        self.dtype, self.device = dtype, device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.length = 0
        self.capacity = 0

    def reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = max(needed, 2 * self.capacity, 64)
        b, h, _, d = self.shape
        keys, values = [], []
        for i in range(self.n_layers):
            k = torch.empty(b, h, capacity, d, dtype=self.dtype, device=self.device)
            v = torch.empty_like(k)
            if self.capacity:
                k[:, :, : self.length] = self.keys[i][:, :, : self.length]
                v[:, :, : self.length] = self.values[i][:, :, : self.length]
            keys.append(k)
            values.append(v)
        self.keys, self.values, self.capacity = keys, values, capacity

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v at [length, length + n) and return all keys/values from `start` up to there."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, start:end], self.values[layer][:, :, start:end]

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


def windowed_causal_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """True where the query at position i may see the key at position j: j <= i and i - j < window."""
    diff = q_pos[:, None] - k_pos[None, :]
    mask = diff >= 0
    if window is not None:
        mask &= diff < window
    return mask


@dataclass
class AttentionPlan:
    """What a run of layers needs to place its queries: their rotations, the first cached key they
    can see, and the boolean mask over [k_start, end) (None: every visible key)."""

    cis: torch.Tensor
    k_start: int
    mask: torch.Tensor | None


def causal_plan(rope: Rotary, start: int, t: int, window: int | None, device) -> AttentionPlan:
    k_start, mask = causal_span(start, t, window, device)
    return AttentionPlan(rope.span(start, t, device), k_start, mask)


def causal_span(start: int, t: int, window: int | None, device) -> tuple[int, torch.Tensor | None]:
    """For queries at [start, start + t): the first cached key they can see, and their mask.

    A single query sees exactly the keys from the returned start, so it needs no mask.
    """
    k_start = 0 if window is None else max(0, start - window + 1)
    if t == 1:
        return k_start, None
    q_pos = torch.arange(start, start + t, device=device)
    return k_start, windowed_causal_mask(q_pos, torch.arange(k_start, start + t, device=device), window)


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x, rope, mask, cache: KVCache | None = None, layer: int = 0, cache_start: int = 0):
        b, t, _ = x.shape
        qkv = F.linear(x, fused_weight(self, self.wq, self.wk, self.wv)).view(b, t, 3, self.n_heads, self.head_dim)
        qk = apply_rotary(qkv[:, :, :2], rope).transpose(1, 3)  # [B, H, 2, T, D]
        q, k = qk[:, :, 0], qk[:, :, 1]
        v = qkv[:, :, 2].transpose(1, 2)
        if cache is not None:
            k, v = cache.write(layer, k, v, cache_start)
        out = attention(q, k, v, mask)
        return F.linear(out.transpose(1, 2).reshape(b, t, -1), self.wo.weight)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = F.linear(x, fused_weight(self, self.w1, self.w3)).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.w2.weight)


class TransformerBlock(nn.Module):
    """Pre-RMSNorm attention and SwiGLU, each with a residual."""

    def __init__(self, dim: int, n_heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.attention = Attention(dim, n_heads)
        self.feed_forward = FeedForward(dim, hidden)
        self.attention_norm = RMSNorm(dim, eps)
        self.ffn_norm = RMSNorm(dim, eps)

    def forward(self, x, rope, mask, cache: KVCache | None = None, layer: int = 0, cache_start: int = 0):
        # Submodules are called through .forward: decoding runs this once per byte per layer, and
        # nn.Module.__call__ costs more than the small matmuls themselves on a CPU.
        x = x + self.attention.forward(self.attention_norm.forward(x), rope, mask, cache, layer, cache_start)
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

    def project_kv(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values [B, H, S, D] of the sources; decoding computes them once per latent."""
        b, s, _ = kv.shape
        kv = F.linear(self.cross_attn_norm_kv.forward(kv), fused_weight(self, self.wk, self.wv))
        k, v = kv.view(b, s, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        q = F.linear(self.cross_attn_norm_q.forward(x), self.wq.weight)
        out = attention(q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2), k, v, mask)
        return x + F.linear(out.transpose(1, 2).reshape(b, t, -1), self.wo.weight)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.attend(x, *self.project_kv(kv), mask)


def run_blocks(layers, plan: AttentionPlan, h, cache: KVCache | None, before=None):
    """Run blocks over new positions, writing their keys/values after `cache` (if given)."""
    t = h.shape[1]
    if cache is not None:
        cache.reserve(cache.length + t)
    bias = mask_to_bias(plan.mask, h.dtype)
    for i, layer in enumerate(layers):
        if before is not None:
            h = before(i, h)
        h = layer.forward(h, plan.cis, bias, cache, i, plan.k_start)
    if cache is not None:
        cache.length += t
    return h
