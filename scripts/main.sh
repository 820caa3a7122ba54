#!/usr/bin/env bash
# Install what is missing, then run the main job: SecFPP under mpirun on the offline default
# (9 clients over 3 visual domains + the TTP dealer). Extra arguments are key=value overrides.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/setup.sh"
source "$here/env.sh"
cd "$root"
config=launcher/configs/default.yaml
n=$(python -m launcher ranks --config "$config" "$@")
# one host: Open MPI's TCP on loopback only (launcher/topology.py says why the launch channel is not)
exec mpirun --oversubscribe --mca btl_tcp_if_include lo -np "$n" python -m launcher run --config "$config" "$@"
