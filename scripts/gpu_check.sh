#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and a CUDA build of torch already installed
# (no network needed). Not CI. Uses the python on PATH (PYTHON=... for another); packages it
# lacks are installed offline from WHEELS=dir (pip --no-index --no-deps; make the directory
# elsewhere with scripts/gpu_wheels.sh). Prints, in order: the stack, `bench train` on cuda and
# on cpu, a 2-round SecFPP job under mpirun with train.device=auto (peer, then servers topology),
# `bench secpc` for 100 and 1,000 clients, and the device tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" SECFPP_CACHE="${SECFPP_CACHE:-$root/.gpu-cache}"
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
if [ -n "${WHEELS:-}" ]; then  # carry only the wheels of what is missing (the list is printed below)
  "$python" -m pip install -q --no-index --no-deps "$WHEELS"/*.whl
fi
missing=$("$python" - <<'PY'
import importlib.util
mods = ["torch", "torchvision", "crypten", "open_clip", "mpi4py", "numpy", "scipy", "sklearn", "matplotlib",
        "tqdm", "yaml", "dp_accounting", "cryptography", "omegaconf", "onnx", "ftfy", "regex", "safetensors", "pytest"]
print(" ".join(m for m in mods if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then echo "gpu_check: missing modules: $missing (pass WHEELS=dir)" >&2; exit 3; fi
bin="$(dirname "$("$python" -c 'import sys; print(sys.executable)')")"
mpirun="$(command -v mpirun || echo "$bin/mpirun")"
"$python" - <<'PY'
import torch
print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}, "
      f"device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}")
assert torch.cuda.is_available(), "no GPU visible to torch"
PY
echo "gpu_check: bench train (cuda, then cpu)"
"$python" -m launcher bench train --device cuda --steps 200
"$python" -m launcher bench train --device cpu --steps 200
echo "gpu_check: SecFPP, 3 clients + TTP, 2 rounds, train.device=auto"
start=$SECONDS
"$mpirun" --oversubscribe -np 4 "$python" -m launcher run --config launcher/configs/default.yaml \
  data.clients_per_domain=1 mpc.min_cluster_size=1 mpc.allow_insecure=true mpc.k_max=3 rounds=2 --run-dir "$root/runs/gpu-check" 2>&1 \
  | tr '\r' '\n' | grep -v "^secfpp:\|^pretraining"
echo "gpu_check: main job $((SECONDS - start)) s; devices: $("$python" -c "import json; print(json.load(open('$root/runs/gpu-check/summary.json'))['train_devices'])")"
echo "gpu_check: SecFPP, servers topology: 9 clients on 2 client ranks, 3 compute parties + TTP, 2 rounds"
start=$SECONDS
"$mpirun" --oversubscribe -np 6 "$python" -m launcher run --config launcher/configs/default.yaml \
  mpc.topology=servers mpc.client_ranks=2 rounds=2 --run-dir "$root/runs/gpu-check-servers" 2>&1 \
  | tr '\r' '\n' | grep -v "^secfpp:\|^pretraining"
echo "gpu_check: servers job $((SECONDS - start)) s; devices: $("$python" -c "import json; print(json.load(open('$root/runs/gpu-check-servers/summary.json'))['train_devices'])")"
echo "gpu_check: bench secpc, servers topology, N = 100 and 1,000 clients"
for n in 100 1000; do "$mpirun" --oversubscribe -np 6 "$python" -m launcher bench secpc --clients $n 2>&1 | grep '^{'; done
"$python" -m pytest -q -p no:cacheprovider tests/launcher/test_config.py::test_train_device_resolves_and_cuda_without_a_gpu_is_an_error tests/prompts/test_training.py
