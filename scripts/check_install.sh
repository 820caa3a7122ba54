#!/usr/bin/env bash
# Install the project as scripts/setup.sh does, but into a throw-away venv with pip's own
# configuration ignored (--isolated: no local wheel directory, no site constraints) and the
# public index only, as on an ordinary machine; then import torch, crypten, open_clip and
# mpi4py and run a 3-party CrypTen sum. Heavy (downloads GBs: on Linux x86_64 torch==2.13.0
# is the CUDA build with its nvidia-* wheels), so not part of CI. Prints what it found.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/secfpp-check.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
VENV="$tmp/venv" PIP_OPTS="--isolated --no-cache-dir --index-url https://pypi.org/simple" bash "$here/setup.sh" \
  || { cat "$tmp/venv/install.log" >&2; exit 1; }
echo "check_install: installed in $((SECONDS - start)) s, $(du -sh "$tmp/venv" | cut -f1)"
grep -E "^Successfully installed" "$tmp/venv/install.log" | tr ' ' '\n' | grep -cE -- "-[0-9]" \
  | sed 's/^/check_install: packages installed: /'
cd "$root"
PYTHONPATH="$root" "$tmp/venv/bin/python" "$here/check_install.py"
