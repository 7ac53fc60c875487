#!/usr/bin/env bash
# One-command GPU benchmark: CoLeaF (CMPAE) and the HAN Anchor at batch 128, full float32
# (config.matmul_precision = 'highest', the default) and TF32 ('default'), training step,
# 1,200-video evaluation, FLOP rate against the GPU's own matmul rate.
#   tools/gpu_bench.sh OUT_DIR        (after: pip install -e '.[cuda]')
set -uo pipefail
out=${1:-bench_gpu}
mkdir -p "$out"
py=${PYTHON:-python}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1
$py -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" | tee -a "$out/gpu.txt"
run() { name=$1; shift; $py -m coleaf_jax.bench --steps 10 --eval-videos 1200 --json "$out/$name.json" "$@" 2>&1 | tee "$out/$name.log"; }
run cmpae_f32 --config configs/llp.py
run han_f32 --config configs/llp.py:han
run cmpae_tf32 --config configs/llp.py --set matmul_precision=default
