#!/usr/bin/env bash
# Retrains the bundled `tiny` model from scratch (the commands MODEL_CARD.md records).
# Usage: scripts/train_tiny.sh [OUT] [DEVICE]   (BLTBENCH_DATA must point at the data directory)
set -euo pipefail
OUT=${1:-bltbench/models/tiny}
DEVICE=${2:-cpu}
B=.venv/bin/bltbench
WORK=build/train-tiny
CORPUS="--corpus build/corpus/news --corpus build/corpus/pairs --corpus build/corpus/code --corpus build/corpus/mbpp"
$B prepare-corpus --out build/corpus
$B train --variant entropy --preset tiny $CORPUS --steps 1500 --seq-len 512 --batch-size 8 --lr 3e-3 \
    --eval-every 250 --out $WORK/entropy --device $DEVICE
$B calibrate --model $WORK/entropy --target-mean 4 --max-patch 8 $CORPUS
$B train --variant blt --preset tiny --init $WORK/entropy $CORPUS --steps 2400 --seq-len 512 --batch-size 8 \
    --lr 2e-3 --eval-every 300 --out $WORK/blt --device $DEVICE
$B train --variant blt-d --init $WORK/blt $CORPUS --steps 600 --seq-len 512 --batch-size 8 --lr 1e-3 \
    --freeze encoder,global --eval-every 150 --out $WORK/blt-d --device $DEVICE
rm -rf "$OUT" && mkdir -p "$(dirname "$OUT")"
cp -r $WORK/blt-d "$OUT" && rm -f "$OUT/checkpoint.pt"
