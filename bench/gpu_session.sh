#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one go (device time is scarce): versions; the GPU-only tests (the
# compiled Pallas kernels and cuDNN against the reference paths) and the fused path's tests on the GPU; then the
# side-by-side benchmark at matched precision: full float32 on every side (the headline), then TF32 and
# bfloat16 on S and M, and GRU layers at full float32 on S and M (PyTorch's nn.GRU, Flax's GRUCell, the Pallas
# GRU kernel). Run from the repository root:
#   OUT=/tmp/gpu bash bench/gpu_session.sh
#   OUT=/tmp/gpu PEERS=jaxlstm,jaxlstm-pallas,torch PRECISIONS=highest bash bench/gpu_session.sh   # fewer
# Logs and the reports results_gpu_<precision>.{md,json} go to $OUT.
set -u
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
PEERS=${PEERS:-jaxlstm,jaxlstm-fused,jaxlstm-pallas,jaxlstm-ref,jax-cudnn,flax,torch}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
git log -1 --format='commit %h %s' 2>/dev/null
$PY -c "import jax, torch, flax, optax; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__, \
torch.cuda.is_available(), '| flax', flax.__version__, '| optax', optax.__version__)"
$PY -c "import jaxlstm, jax; from jaxlstm.kernels import cudnn; print('cudnn.available():', cudnn.available()); \
print(jaxlstm.explain(jaxlstm.lstm_init(jax.random.key(0), 10, 128), jax.numpy.ones((32, 5, 10))))"
timeout "${TEST_TIMEOUT:-150}" $PY -m pytest -q -n 4 -p no:cacheprovider tests/test_pallas.py tests/test_cudnn.py \
  tests/test_fused.py 2>&1 | tee "$OUT/pytest_gpu.log" | tail -n 15
for prec in ${PRECISIONS-highest tf32 bf16}; do
  if [ "$prec" = highest ]; then cfgs=${CONFIGS:-S,M,L,DB}; else cfgs=${CONFIGS_OTHER:-S,M}; fi
  timeout "${BENCH_TIMEOUT:-150}" $PY bench/bench.py --device gpu --precision "$prec" --peers "$PEERS" \
    --configs "$cfgs" --infer-configs "$cfgs" --steps "${STEPS:-20}" --out "$OUT/results_gpu_$prec.md" \
    > "$OUT/bench_gpu_$prec.log" 2>&1
  echo "bench $prec exit $?"; grep -E "^\s+\[|^- " "$OUT/bench_gpu_$prec.log" | cut -c1-160
  sed -n '/^## Summary/,/^### /p' "$OUT/results_gpu_$prec.md" 2>/dev/null
done
if [ -n "${GRU_CONFIGS-S,M}" ]; then
  timeout "${BENCH_TIMEOUT:-150}" $PY bench/bench.py --device gpu --precision highest --cell gru \
    --peers "${GRU_PEERS:-jaxlstm,jaxlstm-fused,jaxlstm-pallas,jaxlstm-ref,flax,torch}" --configs "${GRU_CONFIGS-S,M}" \
    --infer-configs "${GRU_CONFIGS-S,M}" --steps "${STEPS:-20}" --out "$OUT/results_gpu_gru_highest.md" \
    > "$OUT/bench_gpu_gru_highest.log" 2>&1
  echo "bench gru highest exit $?"; grep -E "^\s+\[|^- " "$OUT/bench_gpu_gru_highest.log" | cut -c1-160
  sed -n '/^## Summary/,/^### /p' "$OUT/results_gpu_gru_highest.md" 2>/dev/null
fi
