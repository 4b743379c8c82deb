#!/usr/bin/env bash
# A GPU training cycle on top of a trained `tiny` bundle (the last stage MODEL_CARD.md records): the BLT
# warm-starts from FROM's BLT for a further cosine cycle at batch 256 x 512 bytes, then BLT-D trains on it
# (encoder and global frozen, so it is stored as a decoder delta). The entropy model and the patching
# threshold are FROM's. Small models are bound by kernel launches on a GPU, not by arithmetic: a larger
# batch costs about the same time per step, so it trains on more bytes in the same time.
# Usage: scripts/train_tiny_gpu_cycle.sh FROM OUT [DEVICE]   (corpus from `bltbench prepare-corpus` in build/corpus)
# Overrides: BLT_STEPS, BLTD_STEPS, BATCH; BLT_BUDGET, BLTD_BUDGET add --time-budget SECONDS (the fitted step
# count is logged in OUT's training-*.json); BLTBENCH names the command, WORK the scratch folder.
set -euo pipefail
FROM=${1:?usage: $0 FROM OUT [DEVICE]}
OUT=${2:?usage: $0 FROM OUT [DEVICE]}
DEVICE=${3:-cuda}
B=${BLTBENCH:-.venv/bin/bltbench}
WORK=${WORK:-build/train-tiny-gpu}
BATCH=${BATCH:-256}
CORPUS="--corpus build/corpus/news --corpus build/corpus/pairs --corpus build/corpus/code --corpus build/corpus/mbpp"
budget() { if [ -n "${1:-}" ]; then echo "--time-budget $1"; fi; }

$B train --variant blt --init "$FROM" --warm-start $CORPUS --steps "${BLT_STEPS:-3000}" --seq-len 512 \
    --batch-size "$BATCH" --lr 1e-3 --warmup 100 --eval-every 250 --checkpoint-every 1000 --out "$WORK/blt" \
    --device "$DEVICE" $(budget "${BLT_BUDGET:-}")
$B train --variant blt-d --init "$WORK/blt" $CORPUS --steps "${BLTD_STEPS:-3000}" --seq-len 512 --batch-size "$BATCH" \
    --lr 1e-3 --warmup 100 --freeze encoder,global --eval-every 250 --checkpoint-every 1000 --out "$WORK/blt-d" \
    --device "$DEVICE" $(budget "${BLTD_BUDGET:-}")
rm -rf "$OUT" && mkdir -p "$(dirname "$OUT")"
cp -r "$WORK/blt-d" "$OUT" && rm -f "$OUT/checkpoint.pt"
cp "$WORK/blt/training-blt.json" "$OUT/"
if [ -f "$FROM/training-entropy.json" ]; then cp "$FROM/training-entropy.json" "$OUT/"; fi
