#!/usr/bin/env bash
# The numbers MODEL_CARD.md reports for a bundle: held-out bits per byte per domain, mean patch length,
# and the compare table on 20 FLORES devtest English prompts priced as the model and as blt-1b.
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
head -n 20 $D/flores101/devtest/eng.devtest > build/flores-eng-20.txt
$B compare --model $MODEL --prompts build/flores-eng-20.txt --max-bytes 128 --project blt-1b \
    --methods "blt,blt-s-8,blt-s-16,blt-d-4@confidence=0.9,blt-d-8@confidence=0.9,blt-d-16@confidence=0.9,blt-d-8@confidence=0.7,blt-d-8@entropy=1.5,blt-dv-8" \
    --json build/compare-tiny.json
