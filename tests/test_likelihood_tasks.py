"""Likelihood and bits-per-byte tasks: lm-eval configs against real rows, the `bltbench` lm-eval model
against the full-forward oracle, and scoring tasks in sweeps (records, summary, resume, bad input)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from bltbench.decoding.blt import recompute_logits
from bltbench.decoding.core import DecodeContext
from bltbench.decoding.methods import generate, parse_method
from bltbench.decoding.sampling import Sampler, SamplingConfig
from bltbench.errors import BltbenchError
from bltbench.model.ids import encode_prompt
from bltbench.runner.suite import parse_suite
from bltbench.runner.sweep import run_suite
from bltbench.suites.data import DataSource
from bltbench.suites.lm_eval_model import BltbenchLM
from bltbench.suites.scorer import Scorer, ScoringConfig, Usage
from bltbench.suites.tasks.registry import get_task
from conftest import run_cli, stable_records

DATA = Path(os.environ.get("BLTBENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "arc").is_dir(), reason="needs the shared data directory")


@pytest.fixture(scope="module")
def data():
    return DataSource(DATA)


# -- the task configs on real rows, through lm-eval's own evaluator ------------------------------------
def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


Gold = dict[tuple[str, frozenset], str]  # (context, its continuations) -> the gold continuation


def _gold_arc(subset: str) -> Gold:
    """Built from the raw nested files, independently of the configs."""
    out = {}
    for r in _jsonl(DATA / "arc" / f"{subset}-Test.jsonl"):
        q = r["question"]
        gold = next(c["text"] for c in q["choices"] if c["label"] == r["answerKey"])
        out[(f"Question: {q['stem']}\nAnswer:", frozenset(" " + c["text"] for c in q["choices"]))] = " " + gold
    return out


def _gold_piqa() -> Gold:
    labels = (DATA / "piqa" / "valid-labels.lst").read_text().split()
    rows = _jsonl(DATA / "piqa" / "valid.jsonl")
    return {(f"Question: {r['goal']}\nAnswer:", frozenset((" " + r["sol1"], " " + r["sol2"]))): " " + r[f"sol{int(y) + 1}"]
            for r, y in zip(rows, labels)}


def _gold_hellaswag() -> Gold:
    import datasets
    from lm_eval.tasks.hellaswag.utils import preprocess  # lm-eval's standard HellaSwag preprocessing

    out = {}
    for r in datasets.load_from_disk(str(DATA / "hellaswag" / "validation")).select(range(50)):
        ctx = preprocess(r["activity_label"] + ": " + r["ctx_a"] + " " + r["ctx_b"].capitalize())
        out[(ctx, frozenset(" " + preprocess(e) for e in r["endings"]))] = " " + preprocess(r["endings"][int(r["label"])])
    return out


def _gold_mmlu(subjects: list[str]) -> Gold:
    import datasets

    out = {}
    for subject in subjects:
        for r in datasets.load_from_disk(str(DATA / "mmlu" / subject / "test")).select(range(5)):
            c = r["choices"]
            head = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
            context = head + f"{r['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"
            out[(context, frozenset((" A", " B", " C", " D")))] = " " + "ABCD"[r["answer"]]
    return out


class OracleScorer:
    """Stands in for `Scorer`: knows each context's gold continuation and favours it (or, when `wrong`,
    favours the first other choice). Unknown contexts fail the test: the configs built a prompt the
    raw data does not give."""

    def __init__(self, gold: Gold, wrong: bool = False) -> None:
        self.gold, self.wrong = gold, wrong

    def loglikelihood(self, pairs, usage: Usage):
        contexts = {c.decode() for c, _ in pairs}
        conts = [x.decode() for _, x in pairs]
        key = (contexts.pop(), frozenset(conts))
        assert not contexts and key in self.gold, key
        gold = self.gold[key]
        favoured = next(c for c in conts if c != gold) if self.wrong else gold
        usage.sequences += len(pairs)
        return [(0.0 if c == favoured else -50.0, c == favoured) for c in conts]


def _arc_digitstable_records(subset: str, n: int = 2) -> list[int]:
    rows = _jsonl(DATA / "arc" / f"{subset}-Test.jsonl")
    return [i for i, r in enumerate(rows) if r["answerKey"].isdigit()][:n]


CASES = {
    "arc-easy": lambda: _gold_arc("ARC-Easy"),
    "arc-challenge": lambda: _gold_arc("ARC-Challenge"),
    "piqa": _gold_piqa,
    "hellaswag": _gold_hellaswag,
    "mmlu": lambda: _gold_mmlu(["abstract_algebra", "anatomy", "world_religions"]),
}


@needs_data
@pytest.mark.parametrize("name", list(CASES))
def test_perfect_choices_score_1_and_wrong_ones_0_on_realstable_records(data, name):
    task = get_task(name)
    every = task.samples(data)
    if name == "mmlu":
        picked = [s for s in every if s.meta["subtask"].split("_mmlu_")[1] in ("abstract_algebra", "anatomy", "world_religions")
                  and s.meta["doc_id"] < 2]
        assert len({s.meta["subtask"] for s in every}) == 57 and picked[0].id == "mmlu/abstract_algebra/0"
    else:
        extra = _arc_digitstable_records("ARC-Easy" if name == "arc-easy" else "ARC-Challenge") if name.startswith("arc") else []
        picked = every[:4] + [every[i] for i in extra]  # ARC: include rows whose labels are digits
        assert picked[0].id == f"{name}/0"
    gold = CASES[name]()
    for wrong, expected in ((False, 1.0), (True, 0.0)):
        scored = list(task.evaluate(OracleScorer(gold, wrong), picked))
        assert [s.sample.id for s in scored] == [s.id for s in picked]
        agg = task.aggregate(picked, [s.score for s in scored])
        assert agg["acc"] == expected and agg["acc_norm"] == expected and agg["acc_bytes"] == expected, (wrong, agg)
        d = scored[0].detail
        assert (d["context"], frozenset(d["choices"])) in gold and len(d["loglikelihoods"]) == len(d["choices"]) >= 2
        assert (d["chosen"] == d["target"]) == (not wrong)
        assert scored[0].usage.sequences == len(d["choices"])  # cost attributed to its own document


@needs_data
def test_mmlu_limit_is_per_subject_and_bpb_limit_per_source(data):
    mmlu = get_task("mmlu").samples(data, limit=2)
    assert len(mmlu) == 57 * 2 and mmlu[1].id == "mmlu/abstract_algebra/1"
    bpb = get_task("bpb").samples(data, limit=3)
    assert len(bpb) == 7 * 3 and {s.meta["source"] for s in bpb} >= {"flores-eng", "news2020-de", "news2014-fr"}
    assert get_task("bpb-flores-eng").samples(data, limit=2)[1].id == "bpb-flores-eng/1"


# -- the `bltbench` lm-eval model against the full forward -----------------------------------------------
def _instance(kind: str, args: tuple, doc_id: int = 0):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=args, idx=0, metadata=("t", doc_id, 1))


def _oracle_logprobs(model, bundle, ids: list[int]) -> torch.Tensor:
    logits = recompute_logits(DecodeContext(model, bundle.entropy, bundle.config.patching), ids)
    return torch.log_softmax(logits.float(), -1)[:-1].gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("method, weights", [("blt", "blt"), ("blt-s-4", "blt"), ("blt-d-4", "blt-d"),
                                             ("blt-dv-8", "blt-d"), ("blt[blt-d weights]", "blt-d")])
def test_loglikelihood_equals_the_full_forward(micro, method, weights):
    lm = BltbenchLM(Scorer(micro, parse_method(method)))
    model = micro.weights(weights)
    pairs = [("The byte latent", " transformer"), ("Hello", ", world"), ("x", "y")]
    got = lm.loglikelihood([_instance("loglikelihood", p, i) for i, p in enumerate(pairs)])
    for (ctx, cont), (ll, _) in zip(pairs, got):
        ids = encode_prompt((ctx + cont).encode())
        expected = float(_oracle_logprobs(model, micro, ids)[-len(cont.encode()):].sum())
        assert ll == pytest.approx(expected, abs=1e-4)
    usage = lm.take_usage()
    assert [usage[("t", i)].sequences for i in range(3)] == [1, 1, 1]
    assert usage[("t", 0)].calls[-1].component == "decoder" and usage[("t", 0)].calls[-1].role == "score"
    assert usage[("t", 0)].bytes_scored == len(" transformer") and not lm.take_usage()


def test_is_greedy_matches_greedy_decoding_and_one_byte_choices_share_a_pass(micro):
    context = b"Patches group predictable bytes"
    for method, causal in (("blt", "blt"), ("blt-dv-8", "blt[blt-d weights]")):
        greedy = generate(parse_method(causal), micro, encode_prompt(context), 6, Sampler(SamplingConfig()))
        scorer = Scorer(micro, parse_method(method))
        other = bytes([greedy.output_bytes[0] ^ 1]) + greedy.output_bytes[1:]
        results = scorer.loglikelihood([(context, greedy.output_bytes), (context, other)])
        assert [g for _, g in results] == [True, False]
    usage = Usage()
    scorer = Scorer(micro, parse_method("blt"))
    shared = scorer.loglikelihood([(b"Answer:", c) for c in (b" A", b" B", b" C", b" D")], usage)
    alone = [scorer.loglikelihood([(b"Answer:", c)])[0] for c in (b" A", b" B", b" C", b" D")]
    assert usage.sequences == 1 and usage.bytes_scored == 8
    assert [s[0] for s in shared] == pytest.approx([a[0] for a in alone], abs=1e-5)


def test_rolling_loglikelihood_sums_every_byte_once_in_windows(micro):
    text = "Byte-level models read raw bytes; they avoid tokenizers."
    whole = BltbenchLM(Scorer(micro, parse_method("blt")))
    (total,) = whole.loglikelihood_rolling([_instance("loglikelihood_rolling", (text,))])
    assert total == pytest.approx(float(_oracle_logprobs(micro.blt, micro, encode_prompt(text.encode())).sum()), abs=1e-4)
    assert total == pytest.approx(whole.loglikelihood([_instance("loglikelihood", ("", text))])[0][0], abs=1e-4)
    windowed = BltbenchLM(Scorer(micro, parse_method("blt"), ScoringConfig(window=16)))
    (total16,) = windowed.loglikelihood_rolling([_instance("loglikelihood_rolling", (text,))])
    data = text.encode()
    expected = sum(float(_oracle_logprobs(micro.blt, micro, encode_prompt(data[i : i + 15])).sum()) for i in range(0, len(data), 15))
    assert total16 == pytest.approx(expected, abs=1e-4)
    usage = windowed.take_usage()[("t", 0)]
    assert usage.sequences == math.ceil(len(data) / 15) and usage.bytes_scored == len(data)


@pytest.mark.parametrize("method", ["blt", "blt-s-4", "blt-d-4", "blt-dv-4"])
def test_generate_until_stops_at_the_until_string(micro, method):
    lm = BltbenchLM(Scorer(micro, parse_method(method)))
    context = "The byte latent transformer"
    free = lm.generate_until([_instance("generate_until", (context, {"until": [], "max_gen_toks": 24}))])[0]
    free_bytes = lm.take_usage()[("t", 0)].bytes_generated
    assert len(free.encode()) > 4
    # random weights write bytes that are not all UTF-8: stop at a character the raw bytes really hold
    stop = next(c for c in free[2:] if c != "\ufffd")
    cut = lm.generate_until([_instance("generate_until", (context, {"until": ["", stop], "max_gen_toks": 24}))])[0]
    assert cut == free[: free.index(stop)] and stop not in cut  # an empty until string is ignored
    # decoding itself stopped (not only the text cut after it): fewer bytes were generated
    assert lm.take_usage()[("t", 0)].bytes_generated < free_bytes


def test_the_model_is_registered_with_lm_eval(monkeypatch, micro):
    from lm_eval.api.registry import get_model

    loaded = []
    monkeypatch.setattr("bltbench.model.checkpoint.load_model", lambda spec, device, *options, **named: loaded.append(spec) or micro)
    cls = get_model("bltbench")
    assert cls is BltbenchLM
    lm = cls.create_from_arg_string("model=random:tiny,method=blt-s-4,window=64", {"batch_size": 2, "device": None})
    assert loaded == ["random:tiny"]
    assert lm.scorer.weights == "blt" and lm.scorer.config == ScoringConfig(window=64, batch_size=2)
    assert BltbenchLM(Scorer(lm.scorer.bundle, parse_method("blt-d-8"))).scorer.weights == "blt-d"


# -- bits per byte ----------------------------------------------------------------------------------------
@needs_data
def test_bpb_task_equals_a_hand_computation(micro, data):
    task = get_task("bpb-flores-eng")
    samples = task.samples(data, limit=3)
    scored = list(task.evaluate(Scorer(micro, parse_method("blt-s-8")), samples))
    bits = sum(-float(_oracle_logprobs(micro.blt, micro, encode_prompt(s.reference.encode())).sum()) / math.log(2)
               for s in samples)
    n = sum(len(s.reference.encode()) for s in samples)
    agg = task.aggregate(samples, [s.score for s in scored])
    assert agg["bpb"] == pytest.approx(bits / n, rel=1e-5) and agg["text_bytes"] == n
    d_weights = list(task.evaluate(Scorer(micro, parse_method("blt-d-4")), samples))
    d_bits = sum(-float(_oracle_logprobs(micro.blt_d, micro, encode_prompt(s.reference.encode())).sum()) / math.log(2)
                 for s in samples)
    assert d_bits != pytest.approx(bits, rel=1e-3), "the two weights score differently"
    assert task.aggregate(samples, [s.score for s in d_weights])["bpb"] == pytest.approx(d_bits / n, rel=1e-5)


# -- sweeps ---------------------------------------------------------------------------------------------
SUITE = {
    "name": "lik",
    "model": "random:tiny",
    "methods": ["blt", "blt-d-4", "blt-s-4"],
    "project": ["blt-1b"],
    "tasks": [{"name": "arc-easy", "limit": 2}, {"name": "bpb-flores-eng", "limit": 2}],
}


@needs_data
def test_scoring_tasks_sweep_record_summarize_and_resume(tmp_path, monkeypatch, micro):
    monkeypatch.setattr("bltbench.runner.worker.load_model", lambda spec, device, *options, **named: micro)  # milliseconds a pass
    suite = parse_suite(SUITE, "lik.yaml")
    whole = run_suite(suite, tmp_path / "whole", data_dir=str(DATA), device_profile="off")
    assert whole.written == 12
    records = stable_records(tmp_path / "whole")
    rec = records[0]
    assert rec["kind"] == "scoring" and rec["sample_id"] == "arc-easy/0" and rec["settings"]["weights"] == "blt"
    reused = [r for r in records if r["method"] == "blt-s-4"]  # same weights as blt: scored once
    assert len(reused) == 4 and all(r["reused_from"] == "blt" for r in reused)
    assert [r["score"] for r in reused] == [r["score"] for r in records if r["method"] == "blt"]
    assert not any("reused_from" in r for r in records if r["method"] != "blt-s-4")
    assert rec["nfe"]["decoder"] == rec["sequences"] == len(rec["detail"]["choices"]) and rec["bandwidth_gb"] > 0
    assert rec["projected"]["blt-1b"]["bandwidth_gb"] > rec["bandwidth_gb"]
    rows = {(r["method"], r["task"]): r for r in whole.summary}
    arc = rows[("blt-d-4@confidence=0.7", "arc-easy")]
    assert arc["kind"] == "scoring" and arc["complete"] and arc["samples"] == 2 and arc["bytes"] == 0
    assert set(arc) >= {"acc", "acc_norm", "acc_bytes", "gb_per_byte", "nfe_per_byte", "bytes_scored"}
    assert rows[("blt", "bpb-flores-eng")]["bpb"] > 0 and rows[("blt", "arc-easy")]["reduction"] == 0

    from conftest import Killed, die_after

    with pytest.raises(Killed):
        run_suite(suite, tmp_path / "cut", data_dir=str(DATA), on_sample=die_after(5), device_profile="off")
    resumed = run_suite(suite, tmp_path / "cut", resume=True, data_dir=str(DATA), device_profile="off")
    assert resumed.skipped == 5 and resumed.written == 7
    assert stable_records(tmp_path / "cut") == records


# -- bad input --------------------------------------------------------------------------------------------
def test_unknown_task_is_one_error_line(capsys, tmp_path):
    with pytest.raises(BltbenchError, match="unknown task 'arc-medium'"):
        get_task("arc-medium")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "tasks": [{"name": "arc-medium"}]}))
    code, _, err = run_cli(capsys, "run", str(path), "--out", str(tmp_path / "out"))
    assert code == 2 and "unknown task 'arc-medium'" in err and len(err.strip().splitlines()) == 1
    path.write_text(yaml.safe_dump({**SUITE, "tasks": [{"name": "piqa", "max_bytes": 8}]}))
    code, _, err = run_cli(capsys, "run", str(path), "--out", str(tmp_path / "out"))
    assert code == 2 and "max_bytes applies to generation tasks" in err and not (tmp_path / "out").exists()


@needs_data
@pytest.mark.parametrize("name, missing, named", [
    ("arc-challenge", "arc/ARC-Challenge-Test.jsonl", "arc/ARC-Challenge-Test"),
    ("piqa", "piqa/valid-labels.lst", "piqa/valid-labels.lst"),
    ("hellaswag", "hellaswag", "hellaswag/validation"),
    ("mmlu", "mmlu", "mmlu/abstract_algebra/test"),
    ("bpb", "corpus", "corpus/wmt-de-en/newstest2020.en"),
])
def test_missing_data_is_one_error_line_and_nothing_written(capsys, tmp_path, monkeypatch, name, missing, named):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    partial = tmp_path / "data"
    for entry in DATA.iterdir():  # the whole data directory but the one file or folder
        if entry.name != Path(missing).parts[0]:
            (partial / entry.name).parent.mkdir(parents=True, exist_ok=True)
            (partial / entry.name).symlink_to(entry.resolve())
    if "/" in missing:
        (partial / Path(missing).parts[0]).mkdir()
        for f in (DATA / Path(missing).parts[0]).iterdir():
            if f.name != Path(missing).name:
                (partial / Path(missing).parts[0] / f.name).symlink_to(f.resolve())
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "tasks": [{"name": name, "limit": 1}]}))
    code, _, err = run_cli(capsys, "run", str(path), "--out", str(tmp_path / "out"), "--data-dir", str(partial))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"dataset {named} not found" in err and "BLTBENCH_DATA" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # several seconds; make test-slow and CI run it
@needs_data
def test_bpb_flores_eng_reproduces_the_bundled_model_card(data):
    from bltbench.model.checkpoint import load_model

    card = json.loads((Path(__file__).resolve().parents[1] / "bltbench/models/tiny/card.json").read_text())["regression_check"]
    task = get_task("bpb-flores-eng")
    samples = task.samples(data, limit=card["lines"])
    scored = list(task.evaluate(Scorer(load_model("tiny", "cpu"), parse_method("blt-s-8")), samples))
    agg = task.aggregate(samples, [s.score for s in scored])
    assert agg["text_bytes"] == card["bytes"] and agg["bpb"] == pytest.approx(card["bpb"], abs=2e-3)


@pytest.mark.slow  # 35 s: lm-eval's CLI indexes its own task configs first
@needs_data
def test_bltbench_lm_eval_runs_the_stock_cli_and_equals_the_sweep(capsys, tmp_path, monkeypatch, data):
    """`bltbench lm-eval` is lm-eval's own command line: `--tasks arc_easy` runs on the local config and
    data, and its accuracies on the first rows equal what the sweep's arc-easy task scores there."""
    from conftest import run_cli

    monkeypatch.setenv("BLTBENCH_DATA", str(DATA))
    args = ["lm-eval", "--model", "bltbench", "--model_args", "model=tiny,method=blt-s-4,device=cpu",
            "--tasks", "arc_easy", "--limit", "3", "--output_path", str(tmp_path / "out")]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "bltbench_arc_easy (data from BLTBENCH_DATA" in err
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]["bltbench_arc_easy"]
    from bltbench.model.checkpoint import load_model

    task = get_task("arc-easy")
    samples = task.samples(data, limit=3)
    scored = [s.score for s in task.evaluate(Scorer(load_model("tiny", "cpu"), parse_method("blt-s-4")), samples)]
    for metric in ("acc", "acc_norm", "acc_bytes"):
        assert results[f"{metric},none"] == pytest.approx(sum(s[metric] for s in scored) / 3), metric
    code, out, err = run_cli(capsys, *[a if a != "model=tiny,method=blt-s-4,device=cpu" else "model=tiny,device=cuda:7"
                                       for a in args])
    if not torch.cuda.is_available():
        assert code == 2 and err.strip().splitlines()[-1].startswith("error: device 'cuda:7' was asked for")
    code, out, err = run_cli(capsys, "lm-eval", "--model", "bltbench", "--tasks", "no_such_task")
    assert code == 2 and err.strip().splitlines()[-1] == "error: lm-eval: Tasks not found: no_such_task"
