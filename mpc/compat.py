"""Make CrypTen 0.4.1 (2022, unmaintained) import and run securely on torch 2.13 / numpy 2.

CrypTen is pinned at its last release and must not be edited in place, so the fixes live
here and are applied by :func:`import_crypten`, which every module of this package uses
instead of a bare ``import crypten``:

* **Import.** torch moved the TorchScript ONNX exporter internals that CrypTen imports; the
  old module path is aliased (only where it no longer exists).
* **Randomness.** Every random ring element, k-bit mask, PRZS stream and dealer stream comes
  from ChaCha20 keyed with 256 bits of ``os.urandom`` (:mod:`mpc.prg`) instead of torch's
  Mersenne Twister, whose 32-bit-searchable seeds let one client unmask the dealer's
  triples. Keys travel between parties as 4 int64 words over CrypTen's own channels.
  ``crypten.manual_seed`` is disabled: reproducible shares are exactly what must not exist.
* **Dealer.** The default provider is the TTP dealer, not CrypTen's insecure TFP.

No CrypTen class is allow-listed for torch's ``weights_only`` loader: the project never
pickles CrypTen objects (encrypted state is checkpointed as plain share tensors, see
:meth:`mpc.clustering.SecureState.state_dict`), so the safe loader stays as strict as torch
ships it.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

_APPLIED = False

_MODULE_ALIASES = {
    "torch.onnx._internal.registration": "torch.onnx._internal.torchscript_exporter.registration",
}

# CrypTen modules that bound the rng helpers by name at import time
_RNG_USERS = (
    "crypten.common.rng",
    "crypten.mpc.provider.ttp_provider",
    "crypten.mpc.provider.tfp_provider",
    "crypten.mpc.primitives.binary",
    "crypten.mpc.primitives.arithmetic",
)


def _alias_moved_modules() -> None:
    for old, new in _MODULE_ALIASES.items():
        if old in sys.modules:
            continue
        try:
            importlib.import_module(old)
        except ImportError:
            sys.modules[old] = importlib.import_module(new)


class _AnyDevice(dict):
    """CrypTen looks generators up per device; every device draws from the CPU stream."""

    def __missing__(self, device):  # noqa: ANN001
        import torch

        return self[torch.device("cpu")]


def _setup_prng() -> None:
    """Replacement for ``crypten._setup_prng``: fresh 256-bit keys for the prev/next (PRZS),
    local and global streams, exchanged exactly as CrypTen exchanges its 64-bit seeds."""
    import crypten
    import torch

    from mpc import prg

    comm = crypten.communicator.get()
    ws, rank = comm.get_world_size(), comm.get_rank()
    next_key, local_key = os.urandom(prg.KEY_BYTES), os.urandom(prg.KEY_BYTES)
    next_words = prg.key_to_words(next_key)
    prev_words = torch.zeros(prg.KEY_WORDS, dtype=torch.long)
    if ws >= 2:
        req0 = comm.isend(next_words, (rank + 1) % ws)
        req1 = comm.irecv(prev_words, src=(rank - 1) % ws)
        req0.wait()
        req1.wait()
    else:
        prev_words = next_words.clone()
    global_words = comm.broadcast(prg.key_to_words(os.urandom(prg.KEY_BYTES)), 0)
    keys = {
        "prev": prg.words_to_key(prev_words),
        "next": next_key,
        "local": local_key,
        "global": prg.words_to_key(global_words),
    }
    for name, key in keys.items():
        crypten.generators[name] = _AnyDevice({torch.device("cpu"): prg.ChaChaGenerator(key)})


def _ttp_client_setup_generators(self) -> None:  # noqa: ANN001 - CrypTen's method
    """Replacement for ``TTPClient._setup_generators``: receive a 256-bit key from the dealer."""
    import crypten
    import torch
    import torch.distributed as dist

    from mpc import prg

    comm = crypten.communicator.get()
    words = torch.zeros(prg.KEY_WORDS, dtype=torch.long)
    dist.irecv(tensor=words, src=comm.get_ttp_rank(), group=self.ttp_group).wait()
    dist.barrier(group=self.ttp_group)
    self.generator = prg.ChaChaGenerator(prg.words_to_key(words))
    self.generator_cuda = self.generator
    from mpc import preprocessing

    preprocessing.reset()  # a new dealer key: no plan or mismatch of an earlier world applies


def _ttp_server_setup_generators(self) -> None:  # noqa: ANN001 - CrypTen's method
    """Replacement for ``TTPServer._setup_generators``: one fresh 256-bit key per client
    (CrypTen drew them with ``torch.randint`` on a default generator with a fixed seed)."""
    import crypten
    import torch.distributed as dist

    from mpc import prg

    ws = crypten.communicator.get().get_world_size()
    keys = [os.urandom(prg.KEY_BYTES) for _ in range(ws)]
    words = [prg.key_to_words(k) for k in keys]
    reqs = [dist.isend(tensor=words[i], dst=i, group=self.ttp_group) for i in range(ws)]
    self.generators = [prg.ChaChaGenerator(k) for k in keys]
    self.generators_cuda = self.generators
    for r in reqs:
        r.wait()
    dist.barrier(group=self.ttp_group)


def _no_manual_seed(*args, **kwargs):  # noqa: ANN002, ANN003
    raise RuntimeError(
        "crypten.manual_seed is disabled: shares and masks come from ChaCha20 keyed by os.urandom "
        "(mpc.prg); seeded, reproducible shares would be guessable"
    )


def _install_cryptographic_prg() -> None:
    import crypten
    from crypten.mpc.provider import ttp_provider

    from mpc import prg

    for name in _RNG_USERS:
        mod = importlib.import_module(name)
        for fn in ("generate_random_ring_element", "generate_kbit_random_tensor"):
            if hasattr(mod, fn):
                setattr(mod, fn, getattr(prg, fn))
    crypten._setup_prng = _setup_prng
    crypten.manual_seed = _no_manual_seed
    ttp_provider.TTPClient._TTPClient__TTPClient._setup_generators = _ttp_client_setup_generators
    ttp_provider.TTPServer._setup_generators = _ttp_server_setup_generators


def _default_to_ttp() -> None:
    """CrypTen ships with the TFP provider, in which party 0 makes every Beaver triple and can
    learn everyone's secrets. Here a bare ``crypten.init()`` gets the TTP dealer instead (and
    needs its process); TFP only where asked for, with the insecure opt-in
    (:func:`mpc.runtime.configure_crypten`)."""
    import crypten

    from mpc.dealer import DEALERS

    crypten.cfg.mpc.provider = DEALERS["ttp"].provider


def _skip_attribute_validation() -> None:
    """CrypTen wraps every attribute access of a CrypTensor in a check of
    ``cfg.debug.validation_mode``, an omegaconf lookup (~9,000 per SecPC round and party, ~0.5 s
    of CPU each round at each party, which nine parties on two cores pay one after the other).
    The project never turns validation mode on; the check is read once here instead, and
    :func:`mpc.runtime.configure_crypten` refuses validation mode rather than ignore it."""
    from crypten.cryptensor import CrypTensor

    plain = getattr(CrypTensor.__getattribute__, "__wrapped__", None)
    if plain is not None:
        CrypTensor.__getattribute__ = plain


def _empty_mpc_tensor_without_zero_sharing() -> None:
    """``MPCTensor([])`` is meant to make an empty shell: ``clone``, ``shallow_copy`` and
    ``from_shares`` put a ``_tensor`` into it at once. CrypTen tests ``tensor is []``, which is
    never true (a new list each time), so every shell builds an ArithmeticSharedTensor: a
    fixed-point encoder (a config lookup) and a zero sharing drawn from two ChaCha20 streams
    (zero bytes, so no stream moves), ~0.1 ms each and ~1,000 times per party per SecPC round.
    The shell is made as CrypTen means it instead; every other input goes to CrypTen's code."""
    import torch
    from crypten.cryptensor import CrypTensor
    from crypten.mpc.mpc import MPCTensor
    from crypten.mpc.ptype import ptype as Ptype

    init = MPCTensor.__init__

    def __init__(self, tensor, ptype=Ptype.arithmetic, device=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if type(tensor) is list and not tensor and not args and not kwargs:
            CrypTensor.__init__(self, requires_grad=False)
            self._tensor = torch.tensor([], device=device)
            self.ptype = ptype
            return
        init(self, tensor, ptype, device, *args, **kwargs)

    MPCTensor.__init__ = __init__


def apply() -> None:
    """Apply every fix once per process; safe to call repeatedly."""
    global _APPLIED
    if _APPLIED:
        return
    _alias_moved_modules()
    _install_cryptographic_prg()
    _default_to_ttp()
    _skip_attribute_validation()
    _empty_mpc_tensor_without_zero_sharing()
    from mpc import preprocessing  # the dealer's offline phase (inactive outside planned blocks)

    preprocessing.install()
    from mpc import transport  # openings in one hop instead of gloo's ring

    transport.install()
    _APPLIED = True


def import_crypten() -> ModuleType:
    """Return the ``crypten`` module with the compatibility and security fixes applied."""
    apply()
    import crypten

    return crypten
