"""The BLT-D objective trains: both the clean next-byte loss and the masked-byte loss fall."""

from __future__ import annotations

import pytest
import torch

from bltbench.model.ids import encode_prompt
from bltbench.training.objective import DiffusionObjective, batch_patch_starts, diffusion_loss, sample_blocks

TOY = [
    b"the cat sat on the mat. the cat sat on the mat. ",
    b"a dog ran in the park. a dog ran in the park. ",
    b"French: le chat English: the cat. French: le chien English: the dog. ",
    b"def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n",
]


def _batch(length: int = 48) -> torch.Tensor:
    rows = []
    for text in TOY:
        ids = encode_prompt((text * 4)[: length - 1])
        rows.append(ids)
    return torch.tensor(rows)


def _evaluate(model, ids, starts, objective):
    with torch.no_grad():
        parts = [diffusion_loss(model, ids, starts, objective, torch.Generator().manual_seed(s), 8)[1] for s in range(3)]
    return {k: sum(p[k] for p in parts) / len(parts) for k in ("clean", "masked_ce")}


def _train(bundle, steps: int, lr: float):
    model = bundle.blt_d.train()
    ids = _batch()
    starts = batch_patch_starts(bundle.entropy, bundle.config.patching, ids)
    objective = DiffusionObjective(block_sizes=(4, 8), max_blocks=8)
    before = _evaluate(model, ids, starts, objective)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss, _ = diffusion_loss(model, ids, starts, objective, gen)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    return before, _evaluate(model, ids, starts, objective)


def test_a_few_dozen_steps_lower_both_losses():
    from conftest import make_bundle, micro_config

    before, after = _train(make_bundle(micro_config(), seed=5), steps=60, lr=3e-3)
    assert after["clean"] < 0.8 * before["clean"]
    assert after["masked_ce"] < 0.8 * before["masked_ce"]


@pytest.mark.slow
def test_a_few_hundred_steps_on_tiny_lower_both_losses():
    from bltbench.model.checkpoint import random_bundle

    before, after = _train(random_bundle("tiny", 1), steps=300, lr=1e-3)
    assert after["clean"] < 0.6 * before["clean"]
    assert after["masked_ce"] < 0.6 * before["masked_ce"]


def test_masking_follows_t_and_never_touches_the_clean_sequence():
    ids = _batch()
    starts = torch.zeros(ids.shape[0], ids.shape[1] + 1, dtype=torch.bool)
    starts[:, ::3] = True
    starts[:, 1] = True
    gen = torch.Generator().manual_seed(1)
    objective = DiffusionObjective(max_blocks=100, t_per="block")
    blocks = sample_blocks(ids, starts, 8, objective, gen)
    for row in range(ids.shape[0]):
        real = blocks.starts[row][blocks.starts[row] >= 0]
        assert real.numel() > 0 and torch.all(starts[row, real]), "blocks sit at patch starts"
        assert torch.all(real >= 1), "never the BOS patch"
    rate = blocks.masked.float().sum() / blocks.valid.float().sum()
    expected = (blocks.t.unsqueeze(-1).expand_as(blocks.masked)[blocks.valid]).mean()
    assert abs(float(rate) - float(expected)) < 0.05
    unmasked = blocks.valid & ~blocks.masked
    assert torch.equal(blocks.cells[unmasked], blocks.targets[unmasked])
    assert torch.all(blocks.targets[~blocks.valid] == 3)
