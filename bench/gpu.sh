#!/usr/bin/env bash
# The GPU figures and checks, in one run on a machine with a CUDA GPU (under 8 minutes on an
# H100/H200): the loader benchmark, one AMP channels_last training epoch of seresnet50 at 112 and
# 224 px (and at 224 px fed by the memmap-streaming loader), and the GPU-only paths (bench/gpu_checks.py). Run from the repository root:
#     bash bench/gpu.sh 2>&1 | tee gpu.log
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_bf16_supported())"
$PY bench/gpu_checks.py
$PY bench/loader.py --device cuda --n 8192 --batch-size 256 --model-steps 8192
$PY bench/train_throughput.py --arch seresnet50 --size 112 --n 8192 --batch-size 256 --device cuda
$PY bench/train_throughput.py --arch seresnet50 --size 224 --n 4096 --batch-size 128 --device cuda
$PY bench/train_throughput.py --arch seresnet50 --size 224 --n 4096 --batch-size 128 --device cuda --stream
