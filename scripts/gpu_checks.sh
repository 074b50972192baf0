#!/usr/bin/env bash
# The GPU checks of issue #14 in one run, for a GPU host with JAX, flax, optax, orbax, absl,
# Pillow and torch but no TensorFlow (as on the H200 of BENCHMARKS.md "GPU"):
#   1. versions and the GPU;
#   1a. first in priority, issue #32: the conv-tricks article's three sweeps
#       (experiments/sweeps/{conv_factorization,normalization,multi_branch}.flags) at their full
#       40 epochs on the real CIFAR-10 folder, device-resident, each configuration's seeds packed
#       as one program; the runs' records, summaries and logs to $OUT/sweeps/ (checkpoints stay in
#       $WORK); then scripts/conv_tricks_speed.sh on the GPU (stage tricks);
#   1b. packed runs first (issue #25): the train step of lenet5, convnet_cifar and vgg_cifar at
#       K = 1, 2, 4, 8, 16, 32 packed members, float32 and bfloat16 (`--pack`), to bench.jsonl;
#   1c. the DALI loader (issue #34), where NVIDIA DALI is installed: its images/s decoding on the
#       GPU (`device="mixed"`) per augmentation and for evaluation, beside vgg16's train step at
#       the same size (experiments.pipeline_benchmark --loaders=dali, to dali.jsonl), on
#       $DALI_FOLDER (default: the CIFAR-10 folder, whose 32x32 JPEGs time the resizes more than
#       the decoding: name a folder of ImageNet-size JPEGs for that);
#   2. the quick start under that JAX;
#   3. `experiments.benchmark` of vgg16 (batch 256, bfloat16 and float32) beside PyTorch on the GPU;
#   4. vgg16_cifar10_paddle.flags on the real CIFAR-10 folder, --device_resident, to completion
#      or until the time budget runs out (it is a time-boxed run: the log says which);
#   5. the other zoo benchmarks at their flagfiles' batch sizes while time is left.
#
#   OUT=results/ CIFAR10_TAR=../shared/data/cifar10_jpg.tar.gz BUDGET_S=570 bash scripts/gpu_checks.sh
#
# Everything it measures lands in $OUT (logs, benchmark JSON lines, the run's metrics.jsonl).
# PADDLE_ARGS appends flags to the CIFAR-10 run (e.g. --epochs=0.05 for a smoke test). STAGES picks
# what runs (default: all of quickstart,bench,paddle; the environment is always recorded): e.g.
# STAGES=paddle RESERVE_S=0 gives the CIFAR-10 run the whole budget (about 6 minutes on an H200).
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the results}
CIFAR10_TAR=${CIFAR10_TAR:?set CIFAR10_TAR to cifar10_jpg.tar.gz}
BUDGET_S=${BUDGET_S:-570}
PADDLE_ARGS=${PADDLE_ARGS:-}
RESERVE_S=${RESERVE_S:-100}          # kept for the benchmarks after the CIFAR-10 run
SWEEP_ARGS=${SWEEP_ARGS:-}          # appended to every sweep (e.g. --epochs=0.05 for a smoke test)
SWEEPS=${SWEEPS:-conv_factorization normalization multi_branch}
STAGES=${STAGES:-sweeps,tricks,pack,dali,quickstart,bench,paddle}
DALI_FOLDER=${DALI_FOLDER:-}        # default: the CIFAR-10 folder
DALI_ARGS=${DALI_ARGS:-}            # appended to the DALI benchmark (e.g. --batch_size=16 on a CPU)
PYTHON=${PYTHON:-python3}
WORK=${WORK:-/tmp/jaxcnn_gpu}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
start=$(date +%s)
left() { echo $((start + BUDGET_S - $(date +%s))); }
want() { [[ ",$STAGES," == *",$1,"* ]]; }
say() { echo "== $(date +%T) (+$(($(date +%s) - start)) s) $*"; }

bench() {  # model image batch classes dtype batches burn_in
  want bench || return 0
  local limit=$(( $(left) < 120 ? $(left) : 120 ))
  if (( limit < 30 )); then say "skipped benchmark $*: no time left"; return; fi
  say "benchmark $*"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 timeout "$limit" "$PYTHON" -m experiments.benchmark \
    --model="$1" --image_size="$2" --batch_size="$3" --num_classes="$4" --dtype="$5" \
    --num_batches="$6" --burn_in="$7" --modes=forward,forward_backward,train_step --json \
    >> "$OUT/bench.jsonl" 2>> "$OUT/bench.log" || say "benchmark $* failed or timed out ($?)"
}

say "environment" | tee "$OUT/env.txt"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  "$PYTHON" -c "import sys, jax, flax, optax, orbax.checkpoint as o, torch, PIL
print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax',
      optax.__version__, 'orbax', o.__version__, 'torch', torch.__version__, 'pillow',
      PIL.__version__, jax.devices())
import importlib.util
print('tensorflow importable:', importlib.util.find_spec('tensorflow') is not None)"
  nproc; } >> "$OUT/env.txt" 2>&1

cifar10() {  # the real CIFAR-10 folder, extracted once
  [[ -d "$WORK/cifar10/train" ]] || { mkdir -p "$WORK/cifar10" && tar xzf "$CIFAR10_TAR" -C "$WORK/cifar10"; }
}

if want sweeps; then
  cifar10
  for sweep in $SWEEPS; do
    limit=$(( $(left) - RESERVE_S )); (( limit < 60 )) && { say "skipped sweep $sweep: no time left"; continue; }
    say "sweep $sweep (packed, up to $limit s)"
    timeout "$limit" "$PYTHON" -m experiments.ablate --sweep_file="experiments/sweeps/$sweep.flags" \
      --dataset="folder:$WORK/cifar10" --device_resident --cache_dir="$WORK/cache" --pack=4 \
      --workdir="$WORK/sweeps/$sweep" $SWEEP_ARGS > "$OUT/sweep_$sweep.log" 2>&1
    say "sweep $sweep exit status $? (124: stopped by the time budget; its finished runs count)"
    mkdir -p "$OUT/sweeps"   # the records, not the checkpoints
    (cd "$WORK/sweeps" && find "$sweep" -not -path '*/launches/*' \( -name result.json -o -name \
      failed.json -o -name metrics.jsonl -o -name job.log -o -name 'summary.*' -o -name runs.csv \
      -o -name sweep.flags \) -print0 | tar cf - --null -T - | tar xf - -C "$OUT/sweeps")
  done
fi

if want tricks; then
  say "conv tricks' cost (scripts/conv_tricks_speed.sh)"
  OUT="$OUT/conv_tricks.jsonl" ROUNDS=4 PYTHON="$PYTHON" timeout 240 bash scripts/conv_tricks_speed.sh \
    > "$OUT/conv_tricks.md" 2> "$OUT/conv_tricks.log" || say "conv tricks' cost failed ($?)"
fi

if want pack; then   # what packing gains on a GPU
  for model in "lenet5 32 64 10" "convnet_cifar 24 128 10" "vgg_cifar 32 128 10"; do
    set -- $model
    for dtype in float32 bfloat16; do
      say "packed benchmark $1 $dtype"
      XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 timeout 150 "$PYTHON" -m experiments.benchmark \
        --model="$1" --image_size="$2" --batch_size="$3" --num_classes="$4" --dtype="$dtype" \
        --modes=train_step --pack=2,4,8,16,32 --num_batches=20 --burn_in=3 --notorch --json \
        >> "$OUT/pack.jsonl" 2>> "$OUT/pack.log" || say "packed benchmark $1 $dtype failed ($?)"
    done
  done
fi

if want dali; then
  if "$PYTHON" -c "import nvidia.dali" 2> /dev/null; then
    [[ -n "$DALI_FOLDER" ]] || { cifar10; DALI_FOLDER="$WORK/cifar10"; }
    say "DALI loader on $DALI_FOLDER beside vgg16's train step"
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 timeout 240 "$PYTHON" -m experiments.pipeline_benchmark \
      --dataset="folder:$DALI_FOLDER" --cache_dir="$WORK/cache" --image_size=224 \
      --augments=random_resized_crop,scale_jitter --eval --loaders=dali --feed=vgg16 \
      --dtype=bfloat16 --batch_size=256 --timed_batches=20 --json $DALI_ARGS \
      >> "$OUT/dali.jsonl" 2> "$OUT/dali.log"
    say "DALI benchmark exit status $?"
  else
    say "skipped dali: NVIDIA DALI is not installed for $PYTHON (pip install nvidia-dali-cuda130," \
      "or nvidia-dali-cuda120 for CUDA 12)"
  fi
fi

if want quickstart; then
  say "quick start"
  timeout 120 "$PYTHON" -m experiments.run --workdir="$WORK/quickstart" > "$OUT/quickstart.log" 2>&1
  say "quick start exit status $?"
fi

bench vgg16 224 256 1000 bfloat16 20 5
bench vgg16 224 256 1000 float32 20 5

if want paddle; then
  say "CIFAR-10 folder + vgg16_cifar10_paddle.flags"
  cifar10
  limit=$(( $(left) - RESERVE_S )); (( limit < 60 )) && limit=60
  timeout "$limit" "$PYTHON" -m experiments.run \
    --flagfile=experiments/flags/vgg16_cifar10_paddle.flags --dataset="folder:$WORK/cifar10" \
    --device_resident --cache_dir="$WORK/cache" --workdir="$WORK/paddle" $PADDLE_ARGS \
    > "$OUT/paddle.log" 2>&1
  say "CIFAR-10 run exit status $? (124: stopped by the time budget)"
  cp "$WORK/paddle/metrics.jsonl" "$OUT/paddle_metrics.jsonl" 2>/dev/null
  cp "$WORK/paddle/curves.png" "$OUT/paddle_curves.png" 2>/dev/null
fi

bench alexnet 224 128 1000 bfloat16 20 5
bench vgg_cifar 32 128 10 bfloat16 50 10
bench convnet_cifar 24 128 10 bfloat16 50 10
bench lenet5 150 64 2 bfloat16 50 10
bench alexnet 224 128 1000 float32 20 5
bench vgg_cifar 32 128 10 float32 50 10
bench convnet_cifar 24 128 10 float32 50 10
bench lenet5 150 64 2 float32 50 10
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu,power.draw --format=csv >> "$OUT/env.txt"
say "done"
