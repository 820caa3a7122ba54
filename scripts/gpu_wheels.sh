#!/usr/bin/env bash
# Download, on a machine with network, the wheels scripts/gpu_check.sh may need on an offline GPU
# machine: everything in constraints.txt except torch and torchvision (the GPU machine brings
# its own CUDA torch; pass TORCHVISION=torchvision==X matching it), for PY (default 3.12).
# Usage: bash scripts/gpu_wheels.sh DIR
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: gpu_wheels.sh DIR}"
pins=$(grep -vE '^(#|$|torch==|torchvision==|nvidia-|triton)' "$root/constraints.txt")
python3 -m pip download -q --isolated --index-url https://pypi.org/simple --only-binary=:all: --no-deps \
  --python-version "${PY:-3.12}" --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform any -d "$out" $pins ${TORCHVISION:-}
du -sh "$out"
