#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one go (device time is scarce): versions, the GPU-only tests
# (cuDNN against the reference scan) and the fused path's tests on the GPU, then the side-by-side
# benchmark and an unroll sweep of the fused path. Run from the repository root:
#   OUT=/tmp/gpu bash bench/gpu_session.sh
#   OUT=/tmp/gpu PEERS=jaxlstm-fused,torch UNROLLS= bash bench/gpu_session.sh   # fewer peers, no sweep
# Logs and bench/results_gpu.{md,json} go to $OUT.
set -u
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import jax, torch, flax, optax; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__, \
torch.cuda.is_available(), '| flax', flax.__version__, '| optax', optax.__version__)"
$PY -c "import jaxlstm; from jaxlstm.kernels import cudnn; print('jaxlstm imports; cudnn.available():', cudnn.available())"
timeout "${TEST_TIMEOUT:-150}" $PY -m pytest -q -n 4 -p no:cacheprovider tests/test_cudnn.py tests/test_fused.py \
  2>&1 | tee "$OUT/pytest_gpu.log" | tail -n 15
timeout "${BENCH_TIMEOUT:-300}" $PY bench/bench.py --device gpu ${PEERS:+--peers "$PEERS"} \
  --out "$OUT/results_gpu.md" > "$OUT/bench_gpu.log" 2>&1
echo "bench exit $?"; grep -E "^\s+\[|^- " "$OUT/bench_gpu.log" | cut -c1-160
for u in ${UNROLLS-1 8}; do
  timeout "${MICRO_TIMEOUT:-40}" $PY bench/fused_micro.py --configs S M L --mode train --impls fused --unroll $u --steps 20
done 2>&1 | grep -v Warning | tee "$OUT/unroll_gpu.log"
sed -n '/^## Summary/,/^### /p' "$OUT/results_gpu.md"
