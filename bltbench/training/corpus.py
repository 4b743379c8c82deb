"""Building and reading the byte-level training corpus.

`build_corpus` lays out the bundled models' training data from a data directory (../shared/data) and
the interpreter's own standard library:
  news/*.txt     monolingual WMT news sentences, one document per line
  pairs/*.jsonl  translation-style documents, several "French: ... / English: ..." pairs each
  code/*.py      Python standard-library modules, one document per file
  mbpp/*.jsonl   MBPP train split (ids 601-974): problem text, code and tests
  heldout/code/*.py   standard-library modules kept out of training (2%, by name hash)
newstest2020 de-en and newstest2014 fr-en are held out entirely (they are not copied).

`read_documents` turns folders into documents: .txt one per line, .jsonl one per line ("text"
field), anything else one per file (or as `doc_mode` forces).
"""

from __future__ import annotations

import hashlib
import json
import random
import sysconfig
from pathlib import Path

from bltbench.atomic import write_text_atomic
from bltbench.errors import BltbenchError

HELD_OUT_NEWS = {("wmt-de-en", "newstest2020"), ("wmt-fr-en", "newstest2014")}
PAIRS_PER_DOCUMENT = 6
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German"}
TEXT_SUFFIXES = {".txt", ".jsonl", ".py", ".md"}


def _stable_fraction(name: str) -> float:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def build_corpus(data_dir: Path, out: Path, seed: int = 0) -> dict[str, int]:
    """Write the corpus; returns documents per section."""
    corpus_dir = data_dir / "corpus"
    if not corpus_dir.is_dir():
        raise BltbenchError(f"no corpus in {data_dir} (expected {corpus_dir}); set BLTBENCH_DATA or --data-dir")
    rng = random.Random(seed)
    counts = {"news": 0, "pairs": 0, "code": 0, "mbpp": 0, "heldout_code": 0}
    for pair_dir in sorted(corpus_dir.iterdir()):
        if not pair_dir.is_dir():
            continue
        src, tgt = pair_dir.name.split("-")[1:3]  # wmt-de-en -> de, en
        for src_file in sorted(pair_dir.glob(f"*.{src}")):
            stem = src_file.stem
            if (pair_dir.name, stem) in HELD_OUT_NEWS:
                continue
            tgt_file = src_file.with_suffix(f".{tgt}")
            src_lines, tgt_lines = _read_lines(src_file), _read_lines(tgt_file)
            pairs = [(s, t) for s, t in zip(src_lines, tgt_lines) if s.strip() and t.strip()]
            for lang, lines in ((src, src_lines), (tgt, tgt_lines)):
                text = "\n".join(line for line in lines if line.strip()) + "\n"
                write_text_atomic(out / "news" / f"{pair_dir.name}.{stem}.{lang}.txt", text)
                counts["news"] += text.count("\n")
            docs = []
            for i in range(0, len(pairs), PAIRS_PER_DOCUMENT):
                chunk = pairs[i : i + PAIRS_PER_DOCUMENT]
                forward = rng.random() < 0.75  # mostly into English, as the translation tasks ask
                a, b = (src, tgt) if forward else (tgt, src)
                body = "".join(
                    f"{LANGUAGE_NAMES[a]}: {(s if forward else t)}\n{LANGUAGE_NAMES[b]}: {(t if forward else s)}\n\n"
                    for s, t in chunk
                )
                docs.append(json.dumps({"text": body}, ensure_ascii=False))
            write_text_atomic(out / "pairs" / f"{pair_dir.name}.{stem}.jsonl", "\n".join(docs) + "\n")
            counts["pairs"] += len(docs)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for module in sorted(stdlib.glob("*.py")):
        target = "heldout/code" if _stable_fraction(module.name) < 0.02 else "code"
        write_text_atomic(out / target / module.name, module.read_text(encoding="utf-8", errors="replace"))
        counts["heldout_code" if target.startswith("heldout") else "code"] += 1
    mbpp = data_dir / "mbpp" / "mbpp.jsonl"
    if mbpp.exists():
        docs = []
        for line in _read_lines(mbpp):
            row = json.loads(line)
            if 601 <= int(row["task_id"]) <= 974:
                code = row["code"].replace("\r\n", "\n")
                tests = "\n".join(row["test_list"])
                docs.append(json.dumps({"text": f'"""{row["text"]}"""\n{code}\n{tests}\n'}, ensure_ascii=False))
        write_text_atomic(out / "mbpp" / "train.jsonl", "\n".join(docs) + "\n")
        counts["mbpp"] = len(docs)
    return counts


def _files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES))
        else:
            raise BltbenchError(f"corpus path {path} does not exist")
    if not files:
        raise BltbenchError(f"no text files under {', '.join(map(str, paths))}")
    return files


def read_documents(paths: list[Path], doc_mode: str = "auto") -> list[bytes]:
    """Documents as UTF-8 bytes, in a stable order."""
    if doc_mode not in ("auto", "line", "file"):
        raise BltbenchError(f"doc mode must be auto, line or file, got {doc_mode!r}")
    docs: list[bytes] = []
    for path in _files(paths):
        text = path.read_text(encoding="utf-8", errors="replace")
        mode = doc_mode if doc_mode != "auto" else ("line" if path.suffix in (".txt", ".jsonl") else "file")
        if mode == "file":
            docs.append(text.encode())
        elif path.suffix == ".jsonl":
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        docs.append(json.loads(line)["text"].encode())
                    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                        raise BltbenchError(f"{path}:{number}: expected a JSON object with a 'text' string") from None
        else:
            docs.extend(line.encode() for line in text.splitlines() if line.strip())
    return [d for d in docs if d]
