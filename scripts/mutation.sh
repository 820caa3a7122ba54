#!/usr/bin/env bash
# Mutation run (outside CI): how many small, realistic bugs in the plaintext protocol
# conventions, the oracle and the DP mechanisms the in-process tests catch.
#
#   bash scripts/mutation.sh            # ~20-40 min on 2 cores; prints mutmut's summary
#
# Scope, and why: mutmut maps each mutant to the tests that call the mutated function by
# tracing the test process. The CrypTen modules (mpc/clustering, secure_ops, secpc,
# aggregation, runtime, compat) run inside party subprocesses started by the tests, where
# that trace cannot see them, so they are checked by the multi-party tests against the
# oracle (tests/mpc/test_secpc.py) rather than here. What is mutated: the conventions both
# sides share (mpc/layout.py), the plaintext oracle (mpc/reference.py), the public projection
# (mpc/projection.py), the randomness (mpc/prg.py), pickle-free messages (mpc/wire.py),
# transcript statistics (mpc/transcript.py) and prompts/dp_mechanisms.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/env.sh"
python -m pip install -q "mutmut==3.8.1" -c "$root/constraints.txt" 2>/dev/null || python -m pip install -q "mutmut==3.8.1"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git -C "$root" archive HEAD | tar -x -C "$work"   # a clean copy: mutmut writes mutants/ beside the code
cd "$work"
cat > setup.cfg <<'CFG'
[mutmut]
source_paths=
    mpc/
    prompts/
only_mutate=
    mpc/layout.py
    mpc/reference.py
    mpc/projection.py
    mpc/prg.py
    mpc/wire.py
    mpc/transcript.py
    prompts/dp_mechanisms.py
also_copy=
    launcher/
    tests/
    pytest.ini
pytest_add_cli_args_test_selection=
    tests/mpc/test_layout.py
    tests/mpc/test_oracle_and_stats.py
    tests/prompts/test_dp_mechanisms.py
    tests/mpc/test_security.py::test_prg_keys_and_draws_without_crypten
    tests/mpc/test_security.py::test_prg_streams_agree_for_equal_keys_and_seeds_are_disabled
    tests/mpc/test_security.py::test_messages_roundtrip_and_are_never_unpickled
    tests/mpc/test_security.py::test_prompt_bound_keeps_the_aggregation_inside_the_ring
pytest_add_cli_args=
    -p
    no:cacheprovider
    -x
    -q
CFG
PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}" mutmut run --max-children "${MUTMUT_CHILDREN:-2}" || true
mutmut results > "${MUTATION_REPORT:-/tmp/secfpp-mutation-results.txt}" || true  # the survivors, by name
python - "$work/mutants" <<'PY'
import json, pathlib, sys
from mutmut.stats import status_by_exit_code  # mutmut's own reading of its exit codes
counts = {}
for meta in pathlib.Path(sys.argv[1]).rglob("*.meta"):
    for code in json.loads(meta.read_text()).get("exit_code_by_key", {}).values():
        counts[status_by_exit_code[code]] = counts.get(status_by_exit_code[code], 0) + 1
tested = counts.get("killed", 0) + counts.get("survived", 0) + counts.get("timeout", 0)
print(json.dumps({"mutants": sum(counts.values()), **counts,
                  "survival_rate_of_tested": round(counts.get("survived", 0) / max(tested, 1), 3)}))
PY
