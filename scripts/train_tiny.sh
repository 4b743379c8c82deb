#!/usr/bin/env bash
# Retrains the bundled `tiny` model from scratch (the commands MODEL_CARD.md records).
# Usage: scripts/train_tiny.sh [OUT] [DEVICE]   (BLTBENCH_DATA must point at the data directory)
#   DEVICE=cpu  the 2-core CPU recipe: batch 8 x 512 bytes, fp32; the BLT trains 2400 steps, then resumes
#               for a second cosine cycle to 4800 (BLT_RESUME_STEPS; empty skips it).
#   DEVICE=cuda the GPU recipe: batch 64 x 512 bytes, bf16 autocast.
# Overrides: {ENT,BLT,BLTD}_STEPS set step counts; {ENT,BLT,BLTD}_BUDGET add --time-budget SECONDS
# (the step count is then fitted to the measured pace and logged in OUT's training-*.json);
# BLTBENCH names the command (default .venv/bin/bltbench), WORK the scratch folder.
set -euo pipefail
OUT=${1:-bltbench/models/tiny}
DEVICE=${2:-cpu}
B=${BLTBENCH:-.venv/bin/bltbench}
WORK=${WORK:-build/train-tiny}
CORPUS="--corpus build/corpus/news --corpus build/corpus/pairs --corpus build/corpus/code --corpus build/corpus/mbpp"
if [ "$DEVICE" = cpu ]; then
    BATCH=8; ENT_STEPS=${ENT_STEPS:-1500}; BLT_STEPS=${BLT_STEPS:-2400}; BLTD_STEPS=${BLTD_STEPS:-600}
    BLT_RESUME_STEPS=${BLT_RESUME_STEPS-4800}
    EVAL=(250 300 150)
else
    BATCH=64; ENT_STEPS=${ENT_STEPS:-1500}; BLT_STEPS=${BLT_STEPS:-6000}; BLTD_STEPS=${BLTD_STEPS:-3000}
    BLT_RESUME_STEPS=${BLT_RESUME_STEPS-}
    EVAL=(500 500 500)
fi
budget() { if [ -n "${1:-}" ]; then echo "--time-budget $1"; fi; }

[ -d build/corpus/news ] || $B prepare-corpus --out build/corpus
$B train --variant entropy --preset tiny $CORPUS --steps "$ENT_STEPS" --seq-len 512 --batch-size $BATCH --lr 3e-3 \
    --eval-every "${EVAL[0]}" --checkpoint-every 1000 --out "$WORK/entropy" --device "$DEVICE" $(budget "${ENT_BUDGET:-}")
$B calibrate --model "$WORK/entropy" --target-mean 4 --max-patch 8 $CORPUS
$B train --variant blt --preset tiny --init "$WORK/entropy" $CORPUS --steps "$BLT_STEPS" --seq-len 512 \
    --batch-size $BATCH --lr 2e-3 --eval-every "${EVAL[1]}" --checkpoint-every 1000 --out "$WORK/blt" \
    --device "$DEVICE" $(budget "${BLT_BUDGET:-}")
if [ -n "$BLT_RESUME_STEPS" ]; then  # a second cosine cycle from the first one's checkpoint
    $B train --variant blt --preset tiny --init "$WORK/entropy" $CORPUS --steps "$BLT_RESUME_STEPS" --seq-len 512 \
        --batch-size $BATCH --lr 2e-3 --eval-every "${EVAL[1]}" --checkpoint-every 1000 --out "$WORK/blt" \
        --device "$DEVICE" --resume
fi
$B train --variant blt-d --init "$WORK/blt" $CORPUS --steps "$BLTD_STEPS" --seq-len 512 --batch-size $BATCH --lr 1e-3 \
    --freeze encoder,global --eval-every "${EVAL[2]}" --checkpoint-every 1000 --out "$WORK/blt-d" \
    --device "$DEVICE" $(budget "${BLTD_BUDGET:-}")
rm -rf "$OUT" && mkdir -p "$(dirname "$OUT")"
cp -r "$WORK/blt-d" "$OUT" && rm -f "$OUT/checkpoint.pt"
cp "$WORK"/entropy/training-entropy.json "$WORK"/blt/training-blt.json "$OUT/"
