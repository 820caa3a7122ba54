#!/usr/bin/env bash
# SIGKILL a client and the dealer at every phase (or the phases given); print the README's fault table
# (~15 min, not CI).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/setup.sh"
source "$here/env.sh"
cd "$root"
exec python scripts/fault_matrix.py "$@"
