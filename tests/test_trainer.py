"""The trainer, checkpoint resume, threshold calibration and bits-per-byte evaluation."""

from __future__ import annotations

import pytest
import torch

from bltbench.model.checkpoint import load_model
from bltbench.model.config import PatchingConfig
from bltbench.training.calibrate import calibrate_threshold, document_entropies, mean_patch_length
from bltbench.training.evaluate import score_text
from bltbench.training.trainer import TrainConfig, Trainer

LINES = [
    "the cat sat on the mat and the dog sat on the log",
    "French: le chat est sur le tapis\nEnglish: the cat is on the mat",
    "def add(a, b):\n    return a + b",
    "a bird in the hand is worth two in the bush",
]


@pytest.fixture(scope="module")
def toy_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    # distinct documents from one distribution, so a held-out share is like the training share
    lines = [f"{line} ({i} of {j})".replace("\n", " ") for i in range(40) for j, line in enumerate(LINES)]
    (root / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "code.py").write_text("def sub(a, b):\n    return a - b\n" * 20, encoding="utf-8")
    return root


def _config(toy_corpus, out, variant="entropy", steps=30, **extra):
    settings = dict(seq_len=48, batch_size=4, lr=3e-3, warmup=5, eval_every=10, checkpoint_every=3, eval_windows=4,
                    heldout_fraction=0.3)
    return TrainConfig(variant=variant, corpus=[str(toy_corpus)], steps=steps, out=str(out), **{**settings, **extra})


def test_training_lowers_heldout_loss(toy_corpus, tmp_path):
    trainer = Trainer(_config(toy_corpus, tmp_path / "ent", steps=40))
    start = trainer.heldout_bpb()
    history = trainer.run()
    assert history[-1].heldout_bpb < 0.7 * start
    trainer.export()
    bundle = load_model(str(tmp_path / "ent"))
    assert bundle.entropy is not None and bundle.blt is None


def test_time_budget_shrinks_steps_and_logs_them(toy_corpus, tmp_path, monkeypatch):
    import json

    import bltbench.training.trainer as trainer_module

    clock = iter(range(10**6))  # every perf_counter call advances one "second": steps take about 1 s each
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: float(next(clock)))
    config = _config(toy_corpus, tmp_path / "budget", steps=10_000, time_budget=60.0, probe_steps=10, warmup=20)
    trainer = Trainer(config)
    trainer.run()
    assert 10 < trainer.step < 60 and trainer.config.steps == trainer.step
    trainer.export()
    log = json.loads((tmp_path / "budget" / "training-entropy.json").read_text())
    assert log["config"]["steps"] == trainer.step == log["steps_done"] and log["history"][-1]["step"] == trainer.step


@pytest.mark.parametrize("variant", ["entropy", pytest.param("blt-d", marks=pytest.mark.slow)])  # blt-d: 5-7 s
def test_resume_continues_bit_exactly(toy_corpus, tmp_path, variant):
    extra = {"init": "random:tiny:3"} if variant == "blt-d" else {}
    straight = Trainer(_config(toy_corpus, tmp_path / "a", variant, steps=6, **extra))
    losses_straight = [straight.train_step()[0] for _ in range(6)]

    first = Trainer(_config(toy_corpus, tmp_path / "b", variant, steps=6, **extra))
    losses = [first.train_step()[0] for _ in range(3)]
    first.save_checkpoint()
    resumed = Trainer(_config(toy_corpus, tmp_path / "b", variant, steps=6, **extra))
    resumed.load_checkpoint()
    assert resumed.step == 3
    losses += [resumed.train_step()[0] for _ in range(3)]
    assert losses == losses_straight
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_blt_d_from_blt_keeps_frozen_parts_and_stores_them_once(toy_corpus, tmp_path):
    trainer = Trainer(_config(toy_corpus, tmp_path / "d", "blt-d", steps=3, init="random:tiny:1", freeze=("encoder", "global")))
    trainer.run()
    folder = trainer.export()
    bundle = load_model(str(folder))
    base = load_model("random:tiny:1").blt
    for name, tensor in bundle.blt_d.global_transformer.state_dict().items():
        assert torch.allclose(tensor, base.global_transformer.state_dict()[name].to(torch.bfloat16).float()), name
    blt_bytes = sum(p.stat().st_size for p in folder.glob("blt-*.safetensors")) or (folder / "blt.safetensors").stat().st_size
    assert (folder / "blt_d.safetensors").stat().st_size < 0.5 * blt_bytes


@pytest.mark.slow  # several seconds; make test-slow and CI run it
def test_warm_start_continues_from_the_init_bundles_blt(toy_corpus, tmp_path):
    import json

    first = Trainer(_config(toy_corpus, tmp_path / "cycle1", "blt", steps=4, init="random:tiny:1"))
    first.run()
    first.export()
    cycle1 = load_model(str(tmp_path / "cycle1")).blt
    second = Trainer(_config(toy_corpus, tmp_path / "cycle2", "blt", steps=3, init=str(tmp_path / "cycle1"), warm_start=True))
    assert list(second.model.state_dict()) == list(cycle1.state_dict())
    for (name, a), (_, b) in zip(second.model.state_dict().items(), cycle1.state_dict().items()):
        assert torch.equal(a, b.float()), name
    fresh = Trainer(_config(toy_corpus, tmp_path / "fresh", "blt", steps=3, init=str(tmp_path / "cycle1")))
    assert second.heldout_bpb() < fresh.heldout_bpb(), "a warm start begins where the first cycle ended"
    second.run()
    second.export()
    log = json.loads((tmp_path / "cycle2" / "training-blt.json").read_text())
    assert log["config"]["warm_start"] and log["steps_done"] == 3
    assert log["continues"]["steps_done"] == 4 and len(log["continues"]["history"]) == len(first.history)


def test_warm_start_from_a_bundled_name_nests_its_log(toy_corpus, tmp_path):
    import json

    from bltbench.model.checkpoint import BUNDLED_DIR

    trainer = Trainer(_config(toy_corpus, tmp_path / "next", "blt", steps=1, init="tiny", warm_start=True))
    trainer.run()
    trainer.export()
    log = json.loads((tmp_path / "next" / "training-blt.json").read_text())
    assert log["continues"] == json.loads((BUNDLED_DIR / "tiny" / "training-blt.json").read_text())


def test_warm_start_is_for_the_blt_only(toy_corpus, tmp_path):
    from bltbench.errors import BltbenchError

    with pytest.raises(BltbenchError, match="--variant blt"):
        Trainer(_config(toy_corpus, tmp_path / "x", "entropy", warm_start=True))


def test_calibration_hits_its_target():
    bundle = load_model("random:tiny:2")
    text = [("The calibration text: " + " ".join(LINES)).encode() * 3]
    entropies = document_entropies(bundle.entropy, text)
    for target in (2.0, 3.0, 4.0):
        threshold, achieved = calibrate_threshold(entropies, target, 8)
        assert abs(achieved - target) <= 0.05 * target  # stated tolerance: 5%
        config = PatchingConfig(threshold=threshold, max_patch_length=8)
        assert mean_patch_length(config, entropies) == pytest.approx(achieved)


def test_bits_per_byte_matches_a_direct_computation(micro):
    import math

    import torch.nn.functional as F

    from bltbench.decoding.blt import recompute_logits
    from conftest import context
    from bltbench.model.ids import encode_prompt

    docs = [b"first document", b"a second, somewhat longer document"]
    score = score_text(micro.blt, micro.entropy, micro.config.patching, docs, window=512)
    bpb, n = score.bpb, score.bytes
    nats = 0.0
    for doc in docs:
        ids = encode_prompt(doc)
        logits = recompute_logits(context(micro), ids)
        nats += float(F.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum"))
    assert n == sum(len(d) for d in docs)
    assert bpb == pytest.approx(nats / math.log(2) / n, rel=1e-5)


def test_confident_share_matches_a_direct_computation(micro):
    """Per byte, the top-1 probability over the ids a decoder may produce (renormalised over them, as
    the samplers do); the share of bytes above each alpha."""
    from bltbench.decoding.blt import recompute_logits
    from conftest import context
    from bltbench.model.ids import encode_prompt
    from bltbench.model.ids import BOE, BOS, PAD
    from bltbench.model.scoring import score_rows, windows
    from bltbench.training.evaluate import score_text

    docs = [b"first document", b"a second, somewhat longer document"]
    tops = []
    for doc in docs:
        logits = recompute_logits(context(micro), encode_prompt(doc))[:-1].float().clone()
        logits[:, [BOE, BOS, PAD]] = float("-inf")  # ids no decoder produces
        tops.append(torch.softmax(logits, -1).max(-1).values)
    scores = score_rows(micro.blt, micro.entropy, micro.config.patching, [w for d in docs for w in windows(d, 512)])
    for score, expected in zip(scores, tops):
        assert torch.allclose(torch.tensor(score.top), expected, rtol=1e-4, atol=0)
    flat = torch.cat(tops).tolist()
    ranked = sorted(flat)
    # levels in the widest gaps of each middle quarter, so rounding (batched vs alone) cannot cross them
    quarters = [range(len(ranked) // 4, len(ranked) // 2), range(len(ranked) // 2, 3 * len(ranked) // 4)]
    gaps = [max(q, key=lambda k: ranked[k + 1] - ranked[k]) for q in quarters]
    levels = tuple((ranked[k] + ranked[k + 1]) / 2 for k in gaps)
    score = score_text(micro.blt, micro.entropy, micro.config.patching, docs, levels=levels)
    for level in levels:
        expected = sum(p > level for p in flat) / len(flat)
        assert 0 < expected < 1
        assert score.confident_share[level] == pytest.approx(expected)


def test_train_benchmark_rows_and_batch_independent_op_count(toy_corpus, tmp_path):
    from bltbench.training.bench import train_benchmark

    from bltbench.training.data import ByteStream

    drawn = []
    original = ByteStream.sample
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ByteStream, "sample", lambda self, b, *a: drawn.append(b) or original(self, b, *a))
        rows = train_benchmark(_config(toy_corpus, tmp_path / "bench"), [2, 12], steps=2, warmup_steps=1, ops=True)
    assert drawn == [2] * 4 + [12] * 4, "warm-up, timed and profiled steps run at each batch size"
    assert [r.batch_size for r in rows] == [2, 12]
    for r in rows:
        assert r.seconds_per_step > 0 and r.bytes_per_s == pytest.approx(r.batch_size * 48 / r.seconds_per_step)
    # a step dispatches about the same operators whatever the batch (shapes change a few fills and
    # copies): no per-row Python loops over tensors, which added 4.5% here when windows were cut per row
    assert 1000 < rows[0].ops_per_step <= rows[1].ops_per_step < 1.02 * rows[0].ops_per_step
    assert not (tmp_path / "bench").exists(), "a benchmark writes no checkpoint"


def test_byte_stream_windows_are_bos_and_a_contiguous_run():
    from bltbench.model.ids import BOS
    from bltbench.training.data import ByteStream

    stream = ByteStream([b"hello world", b"another document here", b"x" * 50])
    text = stream.ids.tolist()
    batch = stream.sample(6, 16, torch.Generator().manual_seed(3))
    for row in batch.tolist():
        run = row[1:]
        assert row[0] == BOS and any(text[o : o + 15] == run for o in range(len(text) - 14))
    fixed = stream.windows(16, 100)
    assert fixed.shape == (len(text) // 15, 16)
    assert [r[1:] for r in fixed.tolist()] == [text[i * 15 : i * 15 + 15] for i in range(fixed.shape[0])]
    assert ByteStream([b"abc"]).windows(16, 4).tolist() == [[BOS] + ByteStream([b"abc"]).ids.tolist()]
