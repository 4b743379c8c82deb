#!/usr/bin/env bash
# A further training cycle on top of a trained `tiny` bundle (the last stage MODEL_CARD.md records): the BLT
# warm-starts from FROM's BLT for a new warmup + cosine cycle, then BLT-D trains on it (encoder and global
# frozen, so it is stored as a decoder delta). The entropy model and the patching threshold are FROM's.
# BATCH defaults to 8 on cpu and 256 on cuda: small models are bound by kernel launches on a GPU, not by
# arithmetic, so a larger batch costs about the same time per step there and trains on more bytes.
# Usage: scripts/train_tiny_cycle.sh FROM OUT [DEVICE]   (corpus from `bltbench prepare-corpus` in build/corpus)
# Overrides: BLT_STEPS, BLTD_STEPS, BATCH; BLT_BUDGET, BLTD_BUDGET add --time-budget SECONDS (the fitted step
# count is logged in OUT's training-*.json); BLTBENCH names the command, WORK the scratch folder.
set -euo pipefail
FROM=${1:?usage: $0 FROM OUT [DEVICE]}
OUT=${2:?usage: $0 FROM OUT [DEVICE]}
DEVICE=${3:-cpu}
B=${BLTBENCH:-.venv/bin/bltbench}
WORK=${WORK:-build/train-tiny-cycle}
if [ "$DEVICE" = cpu ]; then BATCH=${BATCH:-8}; else BATCH=${BATCH:-256}; fi
CORPUS="--corpus build/corpus/news --corpus build/corpus/pairs --corpus build/corpus/code --corpus build/corpus/mbpp"
if [ "$(realpath -m "$FROM")" = "$(realpath -m "$OUT")" ]; then echo "OUT must differ from FROM" >&2; exit 2; fi
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
if [ -f "$FROM/training-entropy.json" ]; then cp "$FROM/training-entropy.json" "$OUT/"; fi  # FROM as a folder
