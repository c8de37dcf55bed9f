#!/usr/bin/env bash
# The GPU check, in phases; each ends well inside 10 minutes on a GPU machine (an H100/H200
# with 16 cores), and `quick` (build + test) in under 5 minutes.
#
#   OUT=/some/dir bench/gpu_check.sh [PHASE...]      PHASE: quick (default), build, test,
#                                                    sanitize, bench, train, all
#
#   build     compile the extension for the visible GPU's architecture only; print the versions
#             of the GPU, driver, torch and CUDA
#   test      ctest (the CPU kernels, the CUDA launchers' contract) and pytest's CUDA tests,
#             without -x, each test under a time limit; every failure listed in the summary
#   sanitize  probe compute-sanitizer on a trivial kernel ("unavailable", not a failure, where
#             the runtime refuses it), then memcheck and racecheck over bench/sanitize_ops.py
#   bench     bench/gpu_bench.py (COMPILE=0 leaves out the torch.compile column);
#             bench/lce_bench.py (linear_cross_entropy, N=4096 and 16384, fp32 and bf16); with
#             names.txt, bench/train_bench.py --device cuda
#   train     2,000 steps of each engine (ops, graph, fused) and each lecture preset; LONG=1 adds
#             the lecture's 200,000-step runs (fused, graph); GPT_FULL=1 with tinyshakespeare.txt
#             the GPT lecture's run (preset gpt-shakespeare)
#
# Every phase builds first (incremental: quick when nothing changed). Into $OUT (default
# gpu_out/), written as each step ends, so a killed phase still leaves what it did:
# summary.txt (one line per step), machine.txt, <phase>.log, gpu_bench.md (few files, easy to
# copy back from a remote machine). Scratch (CMake, training runs) goes to $WORK.
# Data: $PYMAKEMORE_DATA, else gpu_data/ in the checkout (copy names.txt and tinyshakespeare.txt
# there). Exit status 0 only if every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
WORK=${WORK:-/tmp/pymakemore_gpu_check}
PY=${PYTHON:-python3}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$CUDA_HOME/bin:$PATH"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
if [ -z "${PYMAKEMORE_DATA:-}" ] && [ -d gpu_data ]; then export PYMAKEMORE_DATA=$PWD/gpu_data; fi
DATA=${PYMAKEMORE_DATA:-../shared/data}
BUDGET=${BUDGET:-540}  # seconds per phase: one device call is 600 at most
mkdir -p "$OUT" "$WORK"
: >"$OUT/summary.txt"
status=0
phase_start=$SECONDS

note() { echo "$*" | tee -a "$OUT/summary.txt"; }

# step PHASE NAME SECONDS COMMAND...: run under a time limit (and inside what is left of the
# phase's budget), output appended to PHASE.log
step() {
  local phase=$1 name=$2 limit=$3
  shift 3
  local log="$OUT/$phase.log" t0=$SECONDS rc left=$((BUDGET - (SECONDS - phase_start)))
  if [ $left -lt 30 ]; then
    note "skipped  $name: the phase's budget of $BUDGET s is spent"
    status=1
    return 1
  fi
  [ $left -lt "$limit" ] && limit=$left
  echo "==== $name: $*" >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  if [ $rc = 0 ]; then
    note "ok       $name ($((SECONDS - t0)) s)"
  else
    [ $rc = 124 ] && echo "(stopped after its limit of $limit s)" >>"$log"
    note "FAILED   $name ($((SECONDS - t0)) s, exit $rc): see $phase.log"
    status=1
  fi
  return $rc
}

have_data() { [ -f "$DATA/$1" ]; }

gpu_arch() { "$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())"; }

built=0  # 1: built in this invocation, 2: failed
build() {  # once per invocation; incremental, so quick when nothing changed
  [ $built = 1 ] && return 0
  [ $built = 2 ] && return 1
  local arch
  built=2
  if ! arch=$(gpu_arch 2>>"$OUT/build.log"); then
    note "FAILED   build: torch sees no GPU (see build.log)"
    status=1
    return 1
  fi
  TORCH_CUDA_ARCH_LIST=$arch PYMAKEMORE_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} \
    step build "build (sm ${arch/./})" 480 "$PY" setup.py build_ext --inplace && built=1
}

phase_build() {
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    nvcc --version | tail -n 2
  } >"$OUT/machine.txt" 2>&1
  cat "$OUT/machine.txt"
  build
}

phase_test() {
  build || return
  local arch
  arch=$(gpu_arch)
  step test "ctest" 240 bash -c "cmake -S . -B '$WORK/cmake' -G Ninja \
    -DCMAKE_CUDA_ARCHITECTURES=${arch/./} >/dev/null && cmake --build '$WORK/cmake' \
    && cd '$WORK/cmake' && ctest --output-on-failure"
  have_data names.txt || note "note     $DATA/names.txt missing: the tests that train will skip"
  local opts=(-q -rfEs -k cuda -p no:cacheprovider)
  "$PY" -c "import pytest_timeout" 2>/dev/null && opts+=(--timeout=180)
  "$PY" -c "import xdist" 2>/dev/null && opts+=(-n 6)
  step test "pytest (CUDA tests)" 420 "$PY" -m pytest "${opts[@]}" tests
  # every failure by name, for the summary
  grep -E '^(FAILED|ERROR) ' "$OUT/test.log" | cut -c1-300 | tee -a "$OUT/summary.txt"
  grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$OUT/test.log" | tail -n 1 |
    tee -a "$OUT/summary.txt"
}

phase_sanitize() {
  build || return
  local probe="$WORK/sanitizer_probe.txt"
  if ! timeout 120 compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" -c \
      "import torch; torch.ones(4, device='cuda').add_(1); torch.cuda.synchronize()" \
      >"$probe" 2>&1; then
    cat "$probe" >>"$OUT/sanitize.log"
    note "unavail. compute-sanitizer: refused a trivial kernel here ($(grep -m1 -iE 'error|not supported' "$probe" | cut -c1-120))"
    return 0
  fi
  step sanitize "memcheck" 200 compute-sanitizer --tool memcheck --error-exitcode 1 \
    "$PY" bench/sanitize_ops.py
  step sanitize "racecheck" 200 compute-sanitizer --tool racecheck --error-exitcode 1 \
    "$PY" bench/sanitize_ops.py
}

phase_bench() {
  build || return
  local compile=()
  [ "${COMPILE:-1}" = 0 ] && compile=(--no-compile)
  step bench "gpu_bench" 300 "$PY" bench/gpu_bench.py --out "$OUT/gpu_bench.md" "${compile[@]}"
  # the fused head + loss at GPT-2's vocabulary: float32, bfloat16, and 16,384 rows (the
  # composite eager and compiled beside it, peak memory measured); its tables into bench.log
  step bench "lce_bench_fp32" 60 "$PY" bench/lce_bench.py --device cuda --repeat 5
  step bench "lce_bench_bf16" 60 "$PY" bench/lce_bench.py --device cuda --dtype bfloat16 --repeat 5
  step bench "lce_bench_16k" 90 "$PY" bench/lce_bench.py --device cuda --n 16384 --repeat 5
  if have_data names.txt; then
    step bench "train_bench" 180 "$PY" bench/train_bench.py --device cuda --steps 20000 \
      -i "$DATA/names.txt"
  else
    note "skipped  train_bench: $DATA/names.txt missing"
  fi
}

train() {  # train NAME SECONDS ARGS...: one run of the trainer, its summary into train.log
  local name=$1 limit=$2
  shift 2
  rm -rf "${WORK:?}/$name"
  step train "$name" "$limit" "$PY" -m pymakemore.train -o "$WORK/$name" --device cuda --quiet "$@" &&
    { echo "---- $name summary.json"; cat "$WORK/$name/summary.json"; echo; } >>"$OUT/train.log"
}

phase_train() {
  build || return
  if ! have_data names.txt; then
    note "skipped  train: $DATA/names.txt missing"
    return
  fi
  local names=(-i "$DATA/names.txt")
  for engine in ops graph fused; do
    train "engine_$engine" 90 "${names[@]}" --engine "$engine" --max-steps 2000 --eval-every 0
  done
  for preset in bigram bnmlp manual-backprop wavenet gpt-names; do
    train "preset_$preset" 90 "${names[@]}" --preset "$preset" --max-steps 2000 --eval-every 0
  done
  if [ "${LONG:-0}" = 1 ]; then
    train full_fused 300 "${names[@]}" --engine fused
    train full_graph 300 "${names[@]}" --engine graph
  fi
  if [ "${GPT_FULL:-0}" = 1 ] && have_data tinyshakespeare.txt; then
    train gpt_shakespeare 540 --preset gpt-shakespeare -i "$DATA/tinyshakespeare.txt"
  fi
}

phases=("$@")
[ ${#phases[@]} = 0 ] && phases=(quick)
for phase in "${phases[@]}"; do
  case $phase in
    quick) set -- build test ;;
    all) set -- build test sanitize bench train ;;
    build | test | sanitize | bench | train) set -- "$phase" ;;
    *) echo "gpu_check.sh: unknown phase '$phase' (quick, build, test, sanitize, bench, train, all)" >&2
       exit 2 ;;
  esac
  for p in "$@"; do
    note "---- $p ($(date -u +%H:%M:%S))"
    : >"$OUT/$p.log"
    phase_start=$SECONDS
    "phase_$p"
  done
done
exit $status
