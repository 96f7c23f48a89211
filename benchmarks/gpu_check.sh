#!/usr/bin/env bash
# GPU check: what only a CUDA machine shows, in one run of under 10 minutes.
#
#   bash benchmarks/gpu_check.sh            # from the repository root of a fresh checkout
#
# 1. installs what is missing (kornia from shared/wheels/device-py312 when the machine has
#    no registry; the project itself with --no-deps, so the machine's torch is kept);
# 2. runs `pytest -m gpu` (tests/test_gpu.py, tests/test_edges.py's CUDA case): bf16/fp16
#    autocast training steps of AGW and TSME, kornia augmentation on the device, batched
#    pair generation on the device, --compile, CPU vs CUDA feature agreement, edge maps on
#    CUDA under bf16 autocast equal to the CPU ones;
# 3. runs benchmarks/bench_train.py and benchmarks/bench_generate.py on the device;
# 4. prints one summary table (device name first).
# Without CUDA it runs the CPU-safe parts (the CUDA tests are reported as skipped, the
# benchmarks run briefly on the CPU) and says so.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=${GPU_CHECK_LOG:-gpu_check.log}
: > "$LOG"
rows=()
row() { rows+=("$(printf '%-46s %s' "$1" "$2")"); }
limit() { timeout "$1" "${@:2}" >> "$LOG" 2>&1; }

# ------------------------------------------------------------------ install
if ! $PY -c "import kornia" 2>/dev/null; then
  for wheels in shared/wheels/device-py312 ../shared/wheels/device-py312 "${VIREID_WHEELS:-/nonexistent}"; do
    if ls "$wheels"/kornia*.whl >/dev/null 2>&1; then
      $PY -m pip install --no-deps "$wheels"/*.whl >> "$LOG" 2>&1 && break
    fi
  done
  $PY -c "import kornia" 2>/dev/null || $PY -m pip install kornia >> "$LOG" 2>&1
fi
$PY -m pip install --no-deps -e . >> "$LOG" 2>&1 || echo "gpu_check: pip install -e . failed (see $LOG)"
$PY -c "import pytest" 2>/dev/null || $PY -m pip install pytest >> "$LOG" 2>&1

device=$($PY - <<'EOF'
import torch
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
EOF
)
if [ "$device" = "none" ]; then
  echo "gpu_check: no CUDA GPU visible to PyTorch: the CUDA checks are skipped; running the CPU-safe parts only"
  dev=cpu
else
  dev=cuda
fi
row "device" "$device (torch $($PY -c 'import torch;print(torch.__version__)'))"

# ------------------------------------------------------------------ tests
t0=$(date +%s)
limit 300 $PY -m pytest -q -m gpu tests/ -p no:cacheprovider -rs
status=$?
summary=$(grep -E "^[0-9]+ (passed|failed|skipped)|passed|skipped|failed" "$LOG" | tail -n 1)
row "pytest -m gpu (exit $status, $(( $(date +%s) - t0 )) s)" "${summary:-no summary}"

# ------------------------------------------------------------------ benchmarks
bench() {  # name, timeout, command...
  local name=$1 secs=$2; shift 2
  local out; out=$(timeout "$secs" "$@" 2>>"$LOG" | tee -a "$LOG" | tail -n 1)
  row "$name" "${out:-failed or timed out (see $LOG)}"
}
if [ "$dev" = cuda ]; then
  bench "bench_train demo (agw, 20 steps)" 120 $PY benchmarks/bench_train.py --device cuda --workers 4
  bench "bench_train paper (agw 288x144, 20 steps)" 240 $PY benchmarks/bench_train.py --device cuda --profile paper --workers 8
  bench "bench_train paper, --compile" 240 $PY benchmarks/bench_train.py --device cuda --profile paper --workers 8 --compile
  bench "bench_generate demo (2048 images)" 60 $PY benchmarks/bench_generate.py --device cuda --images 2048
  bench "bench_generate paper (512 images)" 120 $PY benchmarks/bench_generate.py --device cuda --profile paper --images 512
else
  bench "bench_train demo on CPU (5 steps)" 240 $PY benchmarks/bench_train.py --device cpu --steps 5 --warmup 1
  bench "bench_generate demo on CPU (256 images)" 120 $PY benchmarks/bench_generate.py --device cpu --images 256
fi

echo
echo "GPU check summary (full output: $LOG)"
printf '%s\n' "${rows[@]}"
[ "$status" -eq 0 ] || [ "$status" -eq 5 ]
