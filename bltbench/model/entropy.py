"""The entropy model: a small causal byte LM whose prediction entropy places patch boundaries.

State-dict names follow the official `LMTransformer` (tok_embeddings, layers, norm, output).
"""

from __future__ import annotations

import torch
from torch import nn

from bltbench.model.config import EntropyModelConfig
from bltbench.model.layers import KVCache, RMSNorm, Rotary, TransformerBlock, causal_plan, eos_documents, run_blocks


def entropy_nats(logits: torch.Tensor) -> torch.Tensor:
    """Natural-log entropy of the softmax over the last dimension, computed in the logits' precision (as
    the official patcher computes it: a bf16 entropy model's entropies are bf16 values), returned in fp32."""
    logp = torch.log_softmax(logits, dim=-1)
    return (-(logp.exp() * logp).sum(-1)).float()


class EntropyModel(nn.Module):
    def __init__(self, config: EntropyModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(
            TransformerBlock(config.dim, config.n_heads, config.hidden_ffn, config.norm_eps) for _ in range(config.n_layers)
        )
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.rope = Rotary(config.dim // config.n_heads, config.rope_theta)

    def new_cache(self, capacity: int, batch: int = 1) -> KVCache:
        p = self.output.weight
        c = self.config
        return KVCache(c.n_layers, batch, c.n_heads, c.dim // c.n_heads, p.dtype, p.device, capacity)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None, docs: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for `ids` [B, T]; with a cache, `ids` continue the cached positions. A model that splits
        documents at EOS finds them in `ids`, or, continuing a cache, in `docs` (the document of every
        position up to the last of `ids`)."""
        start = cache.length if cache is not None else 0
        c = self.config
        if c.eos_documents and docs is None:
            if cache is not None and start > 0:
                raise ValueError("a cached call of a document-splitting model needs the documents so far")
            docs = eos_documents(ids)
        elif not c.eos_documents:
            docs = None
        plan = causal_plan(self.rope, start, ids.shape[1], c.window, ids.device, c.context_restart, docs)
        h = run_blocks(self.layers, plan, self.tok_embeddings(ids), cache)
        return self.output(self.norm(h))
