#!/usr/bin/env bash
# The CUDA checks of benchmarks/gpu_check.py (parity, AMP training, torchrun + NCCL, slide inference,
# the papers' FPS protocol) in one run of about 8 minutes on one GPU. Run from the repository root:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]        # default benchmarks/results/gpu
#
# Uses the python3 that has torch with CUDA (and transformers); this checkout goes on PYTHONPATH,
# nothing is installed. Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.log; exit status 1 if
# a section failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-benchmarks/results/gpu}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu_check.log"
timeout 900 "${PYTHON:-python3}" benchmarks/gpu_check.py --out "$out" 2>&1 | tee -a "$out/gpu_check.log"
