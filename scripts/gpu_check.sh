#!/usr/bin/env bash
# Short GPU check (not part of CI): CUDA training, DDP on all GPUs, mixed precision, FAISS on
# the GPU. Prints PASS / FAIL / SKIP per item; exits 1 if any item failed.
# Usage: bash scripts/gpu_check.sh [--epochs N]    (from any directory, in the project's venv)
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec python scripts/gpu_check.py "$@"
