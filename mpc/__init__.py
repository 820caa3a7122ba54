"""Everything that touches CrypTen or the party world; plaintext tensors in, plaintext tensors out.

The public API the launcher builds on (``mpc`` never imports ``prompts`` or ``launcher``):

* party world: :class:`PartySpec`, :class:`Party`, :class:`PartyFailure`, :func:`init_from_mpi`,
  :func:`run_parties`, :func:`shutdown` (:mod:`mpc.runtime`);
* one SecPC round: :class:`SecPCConfig`, :func:`secpc_round`, :class:`SecPCResult`,
  :class:`InputError`, :func:`max_prompt_abs`, and the encrypted warm-start
  :class:`SecureState` that serialises itself;
* the server-aided topology (``mpc.topology: servers``): :class:`ServerLayout`, the clients'
  :func:`client_round` and the compute parties' :func:`serve_round` (:mod:`mpc.servers`);
* its plaintext oracle :func:`secpc_reference` and the public projection
  :func:`projection_matrix` / :func:`reduce_prompt`;
* pickle-free MPI messages (:mod:`mpc.wire`) and transcript recording (:mod:`mpc.transcript`).

Importing this package does not import CrypTen; :func:`mpc.compat.import_crypten` does, with
the compatibility and randomness fixes applied.
"""

from mpc.clustering import SecureState
from mpc.layout import SecPCConfig
from mpc.projection import projection_matrix, reduce_prompt
from mpc.reference import secpc_reference
from mpc.runtime import Party, PartyFailure, PartySpec, init_from_mpi, run_parties, shutdown
from mpc.secpc import InputError, SecPCResult, max_prompt_abs, secpc_round
from mpc.servers import ServerLayout, client_round, serve_round

__all__ = [
    "InputError",
    "Party",
    "PartyFailure",
    "PartySpec",
    "SecPCConfig",
    "SecPCResult",
    "SecureState",
    "ServerLayout",
    "client_round",
    "init_from_mpi",
    "max_prompt_abs",
    "projection_matrix",
    "reduce_prompt",
    "run_parties",
    "secpc_reference",
    "secpc_round",
    "serve_round",
    "shutdown",
]
