"""A model bundle: the weights a run may need (BLT, later BLT-D, and the entropy model)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bltbench.errors import BltbenchError
from bltbench.model.blt import ByteLatentTransformer
from bltbench.model.config import BLTConfig
from bltbench.model.diffusion import BlockDiffusionBLT
from bltbench.model.entropy import EntropyModel


@dataclass
class ModelBundle:
    config: BLTConfig
    blt: ByteLatentTransformer | None
    entropy: EntropyModel | None
    source: str
    format: str
    blt_d: BlockDiffusionBLT | None = None
    entropy_source: str | None = None  # where the entropy model came from when not from `source`
    # each setting the checkpoint's files hold and what it maps to (official folders; see official_settings.explain)
    file_settings: list[dict] = field(default_factory=list)

    def require_blt(self) -> ByteLatentTransformer:
        if self.blt is None:
            raise BltbenchError(f"model {self.source} holds no BLT weights")
        return self.blt

    def require_blt_d(self) -> BlockDiffusionBLT:
        if self.blt_d is None:
            raise BltbenchError(f"model {self.source} holds no BLT-D weights, which blt-d and blt-dv need")
        return self.blt_d

    def weights(self, name: str) -> ByteLatentTransformer:
        """The causal-path weights by name: 'blt' or 'blt-d' (BLT-D keeps BLT's next-byte path)."""
        if name == "blt":
            return self.require_blt()
        if name == "blt-d":
            return self.require_blt_d()
        raise BltbenchError(f"unknown weights {name!r} (blt or blt-d)")

    def require_entropy(self) -> EntropyModel | None:
        """The entropy model if patching needs one (static patching does not)."""
        if self.config.patching.mode == "entropy" and self.entropy is None:
            raise BltbenchError(
                f"model {self.source} holds no entropy model, which entropy patching needs "
                "(add one to the bundle, or use static patching)"
            )
        return self.entropy

    @property
    def dtype(self) -> torch.dtype:
        """The precision its BLT weights hold (an official Hub entropy model stays fp32 beside a bf16 BLT)."""
        module = next(m for m in (self.blt, self.blt_d, self.entropy) if m is not None)
        return next(module.parameters()).dtype

    def to(self, device: str) -> "ModelBundle":
        for module in (self.blt, self.blt_d, self.entropy):
            if module is not None:
                module.to(device)
        return self

    def describe(self) -> str:
        parts = [f"BLT {'yes' if self.blt is not None else 'missing'}"]
        parts.append(f"BLT-D {'yes' if self.blt_d is not None else 'missing'}")
        parts.append(f"entropy model {'missing' if self.entropy is None else 'from ' + self.entropy_source if self.entropy_source else 'yes'}")
        return f"{self.source} ({self.format}): " + ", ".join(parts)
