#!/usr/bin/env bash
# The one-call GPU check: on a machine with an NVIDIA GPU, build the extension, run the CUDA
# tests, run compute-sanitizer (memcheck, racecheck) over every op, run the GPU benchmarks.
# With gpu_data/names.txt present (copy ../shared/data/names.txt there and carry gpu_data/),
# also the whole-step training benchmark, a full 200k-step fused-engine run and a short run
# of each lecture model on the GPU. With GPT_FULL=1 and gpu_data/tinyshakespeare.txt, the
# GPT lecture's full run (preset gpt-shakespeare: 5,000 steps, a few minutes on an H100).
# Logs and the result table go to $OUT (default gpu_out/). Exit status 0 only if all passed.
#
#   OUT=/some/dir bench/gpu_check.sh          # PYTHON=... to pick the interpreter
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
PY=${PYTHON:-python3}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$CUDA_HOME/bin:$PATH"
mkdir -p "$OUT"
status=0

step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, report
  local name=$1
  shift
  local t0=$SECONDS
  if "$@" >"$OUT/$name.log" 2>&1; then
    echo "ok      $name ($((SECONDS - t0)) s)" | tee -a "$OUT/summary.txt"
  else
    echo "FAILED  $name ($((SECONDS - t0)) s): see $name.log" | tee -a "$OUT/summary.txt"
    tail -n 30 "$OUT/$name.log"
    status=1
  fi
}

: >"$OUT/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
step build env PYMAKEMORE_CUDA=1 "$PY" setup.py build_ext --inplace
step tests "$PY" -m pytest -q -x -k "cuda" tests
step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" bench/sanitize_ops.py
step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 "$PY" bench/sanitize_ops.py
step bench "$PY" bench/gpu_bench.py --out "$OUT/gpu_bench.md"
if [ -f gpu_data/names.txt ]; then  # carried in by the caller: the whole-step comparison
  step train_bench "$PY" bench/train_bench.py --device cuda --steps 20000 -i gpu_data/names.txt
  step train_full env PYTHONPATH=. "$PY" -m pymakemore.train -i gpu_data/names.txt \
    -o "$OUT/train_fused" --device cuda --engine fused --quiet
  step train_graph env PYTHONPATH=. "$PY" -m pymakemore.train -i gpu_data/names.txt \
    -o "$OUT/train_graph" --device cuda --engine graph --quiet
  for preset in bigram bnmlp manual-backprop wavenet gpt-names; do
    step "model_$preset" env PYTHONPATH=. "$PY" -m pymakemore.train --preset "$preset" \
      -i gpu_data/names.txt -o "$OUT/model_$preset" --device cuda --max-steps 2000 \
      --eval-every 0 --quiet
  done
fi
if [ "${GPT_FULL:-0}" = 1 ] && [ -f gpu_data/tinyshakespeare.txt ]; then
  step gpt_shakespeare env PYTHONPATH=. "$PY" -m pymakemore.train --preset gpt-shakespeare \
    -i gpu_data/tinyshakespeare.txt -o "$OUT/gpt_shakespeare" --device cuda --quiet
fi
cat "$OUT/summary.txt"
exit $status
