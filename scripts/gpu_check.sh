#!/usr/bin/env bash
# The GPU check, one call on one GPU, about 8 minutes: the CUDA-marked tests, `bench decode` on
# random:tiny (eager, CUDA graphs, recompute) and `bench stream` at blt-1b dims in bf16 (graphs off and
# on). Every result goes under OUTDIR. Runs with .venv's python when there is one, else python3 (a GPU
# image with torch), from the repository root; the package need not be installed.
#   scripts/gpu_check.sh OUTDIR
set -uo pipefail
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.txt, keep going
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.txt"
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - start))s" | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}

{ nvidia-smi; "$PY" -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"; } >"$OUT/env.txt" 2>&1
step cuda-tests 240 "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider
step bench-decode-tiny 150 "$PY" -m bltbench bench decode --model random:tiny --device cuda --prompts short \
    --lengths 64,256,1024 --recompute-max 256 --modes eager,compiled,recompute
step bench-stream-blt1b-bf16 150 "$PY" -m bltbench bench stream --preset blt-1b --dtype bfloat16 --hash-buckets 1024 \
    --new-bytes 64 --modes eager,compiled --device cuda
echo "== done, status $status" | tee -a "$OUT/summary.txt"
exit $status
