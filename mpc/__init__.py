"""Everything that touches CrypTen or the party world; plaintext tensors in, plaintext tensors out.

``mpc`` never imports ``prompts`` or ``launcher`` (``tests/test_layering.py``). Callers import
the module that holds what they need; there is no facade to keep in step with them:

* :mod:`mpc.layout`: SecPC's public conventions: the ring and fixed-point constants, the input
  contract, the placement of rows on parties, the minimum rows, :class:`~mpc.layout.SecPCConfig`;
* :mod:`mpc.runtime`: the party world (MPI or spawned parties), :mod:`mpc.dealer` its dealers;
* :mod:`mpc.secpc`: one SecPC round in the peer topology; :mod:`mpc.servers` the server-aided one;
* :mod:`mpc.clustering`, :mod:`mpc.aggregation`, :mod:`mpc.comparison`, :mod:`mpc.bitprods`,
  :mod:`mpc.secure_ops`: the protocol's pieces; :mod:`mpc.preprocessing` the dealer's offline
  phase, :mod:`mpc.lookahead` the dealer making its next batch before it is asked;
  :mod:`mpc.reference` the plaintext oracle;
* :mod:`mpc.wire` (pickle-free MPI messages), :mod:`mpc.transcript` (transcript recording),
  :mod:`mpc.stats` (rounds, bytes and seconds per phase).

Importing this package does not import CrypTen; :func:`mpc.compat.import_crypten` does, with
the compatibility and randomness fixes applied.
"""
