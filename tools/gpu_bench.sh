#!/usr/bin/env bash
# Every GPU figure of docs/performance.md in one call (issue 22's budget: under 8 minutes on
# one H100/H200), after: pip install -c constraints.txt -e '.[cuda]'
#   tools/gpu_bench.sh OUT_DIR [STAGES]      STAGES: any of "step whole seeds prepare" (default: all)
#
# step:  python -m coleaf_jax.bench: CoLeaF (CMPAE) and HAN at batch 128, float32 and TF32,
#        training step, 1,200-video evaluation, FLOP rate against the GPU's own matmul rate.
# whole: the full-size LLP layout (python -m coleaf_jax.data.synthetic ROOT --videos $VIDEOS),
#        then python train.py --config configs/llp.py for $EPOCHS epochs with validation every
#        epoch and the final test: run 1 prepares the copy (cold compilation cache), run 2 has
#        the prepared copy and an empty cache (the goal: under 60 s), run 3 the filled cache
#        (under 30 s). Wall clock per process (/usr/bin/time) and the phase budget from the
#        run's own records (tools/time_to_result.py).
# seeds: the same with --config.num_seeds=$SEEDS against one seed (time per seed).
# prepare: preparing the full-size layout's copy with $PREPARE_PROCESSES worker processes
#        (config.data.prepare_processes; default "1 4 16"), each into an empty folder.
set -uo pipefail
out=${1:-bench_gpu}
stages=${2:-step whole seeds prepare}
videos=${VIDEOS:-11849}
epochs=${EPOCHS:-10}
seeds=${SEEDS:-5}
prepare_processes=${PREPARE_PROCESSES:-1 4 16}
py=${PYTHON:-python}
mkdir -p "$out"
out=$(cd "$out" && pwd)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1
$py -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" | tee -a "$out/gpu.txt"

bench() { name=$1; shift; $py -m coleaf_jax.bench --steps 10 --eval-videos 1200 --json "$out/$name.json" "$@" 2>&1 | tee "$out/$name.log"; }
# train NAME CACHE_DIR [--config.KEY=VALUE ...]: one whole run, timed, with its phase budget
train() {
  name=$1; cache=$2; shift 2
  start=$(date +%s.%N)
  $py train.py --config configs/llp.py --config.data.root="$out/llp" --workdir "$out/$name" \
    --config.num_epochs="$epochs" --config.compilation_cache_dir="$cache" "$@" \
    > "$out/$name.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  echo "$name: rc $rc, wall $(echo "$end - $start" | bc) s" | tee -a "$out/whole.txt"
  $py tools/time_to_result.py "$out/$name" --json "$out/$name.phases.json" | tee -a "$out/whole.txt"
}

case " $stages " in *" step "*)
  bench cmpae_f32 --config configs/llp.py
  bench han_f32 --config configs/llp.py:han
  bench cmpae_tf32 --config configs/llp.py --set matmul_precision=default
;; esac
case " $stages " in *" whole "*|*" seeds "*|*" prepare "*)
  if [ ! -e "$out/llp/.complete" ]; then
    start=$(date +%s)
    $py -m coleaf_jax.data.synthetic "$out/llp" --videos "$videos" > "$out/generate.log" 2>&1
    echo "generated $videos videos in $(( $(date +%s) - start )) s" | tee -a "$out/whole.txt"
  fi
;; esac
case " $stages " in *" whole "*)
  rm -rf "$out/xla_1" "$out/xla_2"
  train run1_prepare_cold "$out/xla_1"        # prepares the copy, empty cache
  train run2_cold "$out/xla_2"                # prepared copy, empty cache: the goal
  train run3_cached "$out/xla_2"              # prepared copy, cache filled by run 2
;; esac
case " $stages " in *" seeds "*)
  train seeds1 "$out/xla_seeds" --config.num_epochs=2
  train seeds$seeds "$out/xla_seeds" --config.num_epochs=2 --config.num_seeds="$seeds"
;; esac
case " $stages " in *" prepare "*)
  nproc | sed 's/^/cores: /' | tee -a "$out/prepare.txt"
  for n in $prepare_processes; do
    rm -rf "$out/tfds_prepare"
    start=$(date +%s.%N)
    $py -c "from coleaf_jax.data import llp; llp.prepare('$out/llp', tfds_dir='$out/tfds_prepare', processes=$n)" \
      > "$out/prepare_$n.log" 2>&1
    echo "prepare, $n processes: rc $?, wall $(echo "$(date +%s.%N) - $start" | bc) s" | tee -a "$out/prepare.txt"
  done
  rm -rf "$out/tfds_prepare"
;; esac
