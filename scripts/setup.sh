#!/usr/bin/env bash
# Create the venv (default .venv; VENV=... for another) and install the pinned stack; does
# nothing when it is already there (a hash of the requirement files and pyproject.toml is stamped into it).
# Needs only python3 (>= 3.10) with venv and the package index: MPI comes from PyPI.
#
# Two steps, so that pip resolves torch's own dependencies (the CUDA build's nvidia-* wheels
# on a GPU machine) while crypten and open_clip_torch, whose dependency lists would replace
# torch, go in without theirs:
#   pip install -r requirements.txt -c constraints.txt
#   pip install --no-deps -r requirements-nodeps.txt -c constraints.txt
#   pip install --no-deps -e .          (this project, so `python -m launcher` needs no PYTHONPATH)
# PIP_OPTS adds install options to each (scripts/check_install.sh passes --isolated).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
venv="${VENV:-.venv}"
read -r -a pip_opts <<<"${PIP_OPTS:-}"

"$python" - <<'PY' || { echo "setup: Python >= 3.10 is required (set PYTHON=...)" >&2; exit 1; }
import sys; sys.exit(sys.version_info < (3, 10))
PY

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  "$python" -m venv "$venv"
fi

want="$(cat requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
stamp="$venv/.requirements.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log="$venv/install.log"
  echo "setup: installing requirements into $venv (about a minute here; log in $log)"
  pip=("$venv/bin/python" -m pip install "${pip_opts[@]}")
  if ! { "${pip[@]}" -r requirements.txt -c constraints.txt &&
         "${pip[@]}" --no-deps -r requirements-nodeps.txt -c constraints.txt &&
         "${pip[@]}" --no-deps -e .; } >"$log" 2>&1; then
    grep -v "is ignored: it is neither" "$log" | tail -40 >&2
    echo "setup: pip install failed (full log: $log)" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
fi
