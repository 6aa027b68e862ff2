#!/usr/bin/env bash
# The GPU benchmark of issue 9, as one prepared script: gpt_small and bert_base in bf16 compute (f32 master weights)
# at realistic batch sizes on one NVIDIA GPU, cuDNN attention, each measured by lm.bench (MFU against the best bf16
# matmul measured in the run and against the datasheet peak; H100/H200: 989 TFLOP/s dense bf16). Results land in
# $OUT (default bench_gpu/) as one JSON line per run. Not run yet: no GPU was lent when it was written (WORKSPACE.md,
# Benchmarks). Usage, from the repository root on the GPU machine:
#   pip install -r requirements.txt "jax[cuda12]" && bash launch/bench_gpu.sh
set -uo pipefail
OUT=${OUT:-bench_gpu}
mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
BF16="--config.model.dtype=bfloat16 --config.model.param_dtype=float32"
run() {  # name, then lm.bench arguments
  local name=$1; shift
  echo "== $name: python -m lm.bench $*"
  timeout 900 python -m lm.bench "$@" --mode=train --mode=data --steps=20 --warmup_steps=3 \
    > "$OUT/$name.log" 2>&1
  echo "rc=$?"; tail -1 "$OUT/$name.log" | tee -a "$OUT/results.jsonl"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c 'import jax; print(jax.__version__, jax.devices())' | tee -a "$OUT/gpu.txt"
run gpt_small_b32_cudnn --config=configs/gpt_small.py --config.batch_size=32 $BF16 --config.model.attention_impl=cudnn
run gpt_small_b32_einsum --config=configs/gpt_small.py --config.batch_size=32 $BF16
run gpt_small_b64_cudnn_remat --config=configs/gpt_small.py --config.batch_size=64 $BF16 \
  --config.model.attention_impl=cudnn --config.model.remat=dots
run bert_base_b128 --config=configs/bert_base.py --config.batch_size=128 $BF16
run bert_base_b256_remat --config=configs/bert_base.py --config.batch_size=256 $BF16 --config.model.remat=dots
