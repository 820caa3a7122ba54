"""Party runtime: one process per party, CrypTen initialised the same way however it was launched.

Two launchers reach the same code path:

* ``mpirun -np N[+1]`` (real experiments): :func:`init_from_mpi` agrees on a rendezvous over
  mpi4py (buffer messages, :mod:`mpc.wire`), then every rank points CrypTen at it.
* :func:`run_parties` (tests, single-host simulations): spawns the parties as local
  processes with the same environment variables and the same :func:`start_party`.

Network. ``address="auto"`` (the default) or a loopback address with every rank on one host
(ranks are told apart by ``MPI.Get_processor_name()``): nothing listens on a network interface.
The rendezvous is a ``file://`` store in a fresh private directory (mode 0700) that rank 0
creates and names to the others, so there is no port to race for, and gloo's pair sockets are
bound to the loopback interface (``GLOO_SOCKET_IFNAME``). With ranks on several hosts, ``auto``
finds rank 0's routable address: every rank reports its non-loopback IPv4 addresses, and rank 0
takes the source address the kernel would use towards a peer host (:func:`routable_address`);
if there is none the run stops, naming ``mpc.address``. An explicit address wins (a loopback
one with ranks on several hosts is refused). Off loopback the TCP store listens on all of rank
0's interfaces, every rank binds gloo's pair sockets to its interface towards that address
(unless ``GLOO_SOCKET_IFNAME`` is set: gloo's own default, the address the hostname resolves
to, is often loopback), and shares, openings and dealer keys travel **unencrypted and
unauthenticated**: the links must be protected by the user (WireGuard, IPsec or a TLS
tunnel), as the README's threat model says.

With ``dealer="ttp"`` (default) the last rank is CrypTen's trusted dealer, which
makes the Beaver triples and never sees a share of the data. ``dealer="tfp"`` lets
party 0 make them, which is insecure against party 0; it is accepted only as an
explicit benchmarking choice and is flagged with a warning and in :class:`Party`.

Failure is bounded: every collective waits at most ``timeout_s`` (gloo's process-group
timeout), a peer that disappears makes the others raise, and :func:`run_parties`
terminates every party when one fails.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import ipaddress
import logging
import multiprocessing as mp
import os
import pickle
import queue
import shutil
import socket
import sys
import tempfile
import time
import traceback
import urllib.parse
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal

from mpc import dealer as dealers
from mpc.compat import import_crypten

log = logging.getLogger(__name__)

Dealer = Literal["ttp", "tfp"]  # a name in mpc.dealer.DEALERS

#: ``PartySpec.address`` (``mpc.address``) that lets the runtime choose: loopback on one host,
#: rank 0's routable address on several.
AUTO = "auto"

TFP_WARNING = (
    "dealer=tfp: party 0 generates the Beaver triples and can therefore learn other parties' "
    "secrets. INSECURE against party 0 - use only for benchmarking."
)


class PartyFailure(RuntimeError):
    """A party failed or the party world could not be formed."""


@dataclass(frozen=True)
class PartySpec:
    """How many clients take part, who deals the correlated randomness, and where to meet."""

    n_clients: int
    dealer: Dealer = "ttp"
    address: str = AUTO
    port: int | None = None
    timeout_s: float = 120.0
    allow_insecure: bool = False  # the explicit opt-in that ``dealer="tfp"`` needs
    # keep the offline dealer's plans between rounds (mpc.preprocessing.set_plan_cache): only
    # for code that does not change between rounds, as the launcher's does not
    reuse_plans: bool = False
    # the dealer makes its next batch while the parties compute (mpc.lookahead); on by default,
    # off to measure what it buys
    dealer_lookahead: bool = True

    def __post_init__(self) -> None:
        if self.n_clients < 2:
            raise ValueError(f"SecPC needs at least 2 clients, got n_clients={self.n_clients}")
        if dealers.get(self.dealer).insecure and not self.allow_insecure:
            raise ValueError("dealer=tfp lets party 0 make the Beaver triples and learn every party's secrets; "
                             "it needs the explicit opt-in allow_insecure=True (benchmarking only)")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")

    @property
    def world_size(self) -> int:
        """Processes needed: one per client, plus the dealer's when it is a separate party."""
        return self.n_clients + int(dealers.get(self.dealer).needs_process)

    @property
    def dealer_rank(self) -> int | None:
        return self.n_clients if dealers.get(self.dealer).needs_process else None

    def mpirun_hint(self, command: str = "python -m launcher run ...") -> str:
        extra = " (clients + 1 TTP dealer)" if dealers.get(self.dealer).needs_process else ""
        return f"mpirun -np {self.world_size} {command}   # {self.n_clients} clients{extra}"

    def check_world_size(self, world_size: int) -> None:
        if world_size != self.world_size:
            raise PartyFailure(
                f"MPI world size is {world_size}, but n_clients={self.n_clients} with "
                f"dealer={self.dealer} needs {self.world_size} processes. Run:\n  "
                + self.mpirun_hint()
            )


@dataclass(frozen=True)
class Party:
    """This process's place in the party world."""

    rank: int
    spec: PartySpec

    @property
    def is_dealer(self) -> bool:
        return self.rank == self.spec.dealer_rank

    @property
    def n_clients(self) -> int:
        return self.spec.n_clients

    @property
    def insecure_dealer(self) -> bool:
        """True when party 0 makes the triples (``tfp``); carried into results."""
        return dealers.get(self.spec.dealer).insecure


def free_port(address: str = "127.0.0.1") -> int:
    """A port free now on ``address`` (multi-host rendezvous only; another process may take it
    before rank 0 binds it, in which case start-up fails loudly and can be retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(address)).is_loopback
    except (OSError, ValueError):
        return False


def loopback_interface() -> str:
    """Name of the loopback interface (``lo`` on Linux, ``lo0`` on macOS)."""
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    return names[0] if names else "lo"


def interface_addresses() -> list[tuple[str, str]]:
    """(interface, IPv4 address) of this host's non-loopback interfaces that have one.

    Linux only (the ``SIOCGIFADDR`` ioctl, one primary address per interface); elsewhere an
    empty list, and rank 0 falls back on resolving its peers' host names.
    """
    if not sys.platform.startswith("linux"):
        return []
    import fcntl
    import struct

    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                ifreq = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:  # no IPv4 address on this interface
                continue
            address = socket.inet_ntoa(ifreq[20:24])
            if not ipaddress.ip_address(address).is_loopback:
                found.append((name, address))
    return found


def source_address(destination: str) -> str | None:
    """The local address the kernel would send from towards ``destination``, or None without a
    route. A connected UDP socket only looks the route up: no packet is sent."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((destination, 9))
            return s.getsockname()[0]
    except OSError:
        return None


def routable_address(
    own: list[str], peers: list[str], source: Callable[[str], str | None] | None = None
) -> str | None:
    """Rank 0's address as seen from its peers' hosts: its source address towards the first peer
    address that is neither loopback nor one of rank 0's own (a bridge such as docker0 can carry
    the same address on every host, and a route to it never leaves rank 0's host). None when no
    peer address gives a non-loopback source."""
    for peer in peers:
        if peer in own or is_loopback(peer):
            continue
        mine = (source or source_address)(peer)
        if mine is not None and not is_loopback(mine):
            return mine
    return None


def interface_towards(address: str) -> str | None:
    """The interface this host would use to reach ``address`` (for ``GLOO_SOCKET_IFNAME``)."""
    mine = source_address(address)
    return next((name for name, a in interface_addresses() if a == mine), None)


def private_rendezvous() -> tuple[str, str]:
    """(``file://`` rendezvous, its directory): a store only this user's processes can open."""
    directory = tempfile.mkdtemp(prefix="secfpp-rendezvous-")  # mode 0700
    return "file://" + os.path.join(directory, "store"), directory


def configure_crypten(dealer: Dealer) -> None:
    """Process-wide CrypTen settings that every party must share."""
    import torch

    crypten = import_crypten()
    if crypten.cfg.debug.validation_mode:
        raise ValueError("CrypTen's debug validation mode is not supported (mpc.compat reads it once, not per access)")
    torch.set_num_threads(1)  # several parties share few cores; extra intra-op threads only thrash
    crypten.cfg.mpc.provider = dealers.get(dealer).provider
    crypten.cfg.communicator.verbose = True  # rounds/bytes statistics (mpc.stats)
    # Pairwise max costs far fewer rounds than the default log-reduction for the small k of SecPC.
    crypten.cfg.functions.max_method = "pairwise"


def _set_process_group_timeout(timeout_s: float) -> None:
    """Bound every gloo wait: a dead peer must not leave the others hanging for 30 minutes."""
    import torch.distributed.distributed_c10d as c10d

    c10d.default_pg_timeout = datetime.timedelta(seconds=timeout_s)


def start_party(rank: int, spec: PartySpec, rendezvous: str) -> Party:
    """Join the party world as ``rank``. Client ranks return once CrypTen is initialised.

    The dealer rank (``ttp``) does not return until the clients shut down: it serves
    triple requests, then returns its :class:`Party` so the caller can exit cleanly.
    """
    configure_crypten(spec.dealer)
    _set_process_group_timeout(spec.timeout_s)
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(spec.n_clients),  # CrypTen counts the TTP outside WORLD_SIZE
            "RENDEZVOUS": rendezvous,
            "DISTRIBUTED_BACKEND": "gloo",
        }
    )
    if rendezvous.startswith("file://"):  # one host: gloo's sockets on loopback only
        os.environ["GLOO_SOCKET_IFNAME"] = loopback_interface()
    elif "GLOO_SOCKET_IFNAME" not in os.environ:  # the interface that reaches rank 0's store
        interface = interface_towards(urllib.parse.urlsplit(rendezvous).hostname or "")
        if interface is not None:
            os.environ["GLOO_SOCKET_IFNAME"] = interface
    party = Party(rank=rank, spec=spec)
    if dealers.get(spec.dealer).insecure and rank == 0:
        warnings.warn(TFP_WARNING, stacklevel=2)
        log.warning(TFP_WARNING)
    if party.is_dealer:
        _serve_as_dealer(spec.dealer_lookahead)
        return party
    from mpc import preprocessing

    preprocessing.set_plan_cache(spec.reuse_plans)
    crypten = import_crypten()
    crypten.init()
    return party


def _serve_as_dealer(lookahead: bool = True) -> None:
    """Run CrypTen's TTP server (:func:`mpc.lookahead.serve`: batches streamed, and made ahead
    unless ``lookahead`` is off), but fail loudly when a client vanishes.

    ``TTPServer`` returns normally both on a clean "terminate" and when its peer dies
    (it swallows the RuntimeError); we tell them apart so a crash exits non-zero.
    """
    crypten = import_crypten()
    comm = crypten.communicator
    state = {"terminated": False}
    original_recv_obj = comm.DistributedCommunicator.recv_obj

    def recv_obj(self, src, group=None):  # noqa: ANN001 - CrypTen's signature
        obj = original_recv_obj(self, src, group)
        if isinstance(obj, str) and obj == "terminate":
            state["terminated"] = True
        return obj

    comm.DistributedCommunicator.recv_obj = recv_obj
    stopped = ""
    try:
        from mpc import lookahead as ahead

        try:
            ahead.serve(lookahead)
        except RuntimeError as err:  # what TTPServer swallows (a peer gone, a bad request): said below
            stopped = f": {type(err).__name__}: {err}"
    finally:
        comm.DistributedCommunicator.recv_obj = original_recv_obj
    if not state["terminated"]:
        raise PartyFailure(f"TTP dealer lost its clients before a clean shutdown{stopped}")
    if comm.is_initialized():
        import torch.distributed as dist

        dist.destroy_process_group()
        comm.DistributedCommunicator.instance = None


def shutdown(party: Party) -> None:
    """Leave the party world; party 0 also releases the dealer."""
    if party.is_dealer:
        return
    crypten = import_crypten()
    if crypten.is_initialized():
        crypten.uninit()


def rendezvous_address(address: str, reports: list[list[Any]]) -> str | None:
    """Where rank 0 opens the TCP store, from ``mpc.address`` and every rank's ``[host name,
    addresses]`` (rank order); None for one host's private ``file://`` store.

    An explicit address wins; ``auto`` across hosts is :func:`routable_address` towards the
    addresses the other hosts reported, else towards what their names resolve to. Run at rank 0
    (the route look-ups are its host's). Raises :class:`PartyFailure`, naming ``mpc.address``,
    when ``auto`` finds nothing or a loopback address meets several hosts.
    """
    host0, own = reports[0]
    others = list(dict.fromkeys(name for name, _ in reports if name != host0))
    if not others and (address == AUTO or is_loopback(address)):
        return None
    hosts = f"the ranks run on {len(others) + 1} hosts ({', '.join([host0, *others])})"
    if address != AUTO:
        if is_loopback(address):
            raise PartyFailure(f"{hosts} but mpc.address={address} is loopback: set mpc.address to auto or "
                               "to rank 0's address that every host can reach")
        return address
    found = routable_address(own, [a for name, addrs in reports if name != host0 for a in addrs])
    if found is None:  # no usable report (not Linux?): what the peers' names resolve to
        resolved: list[str] = []
        for name in others:
            with contextlib.suppress(OSError):
                resolved += socket.gethostbyname_ex(name)[2]
        found = routable_address(own, resolved)
    if found is None:
        raise PartyFailure(f"{hosts} and mpc.address=auto found no address of rank 0's host that routes to "
                           "the others: set mpc.address to rank 0's address that every host can reach")
    return found


def init_from_mpi(spec: PartySpec, comm: Any = None) -> Party:
    """Bootstrap a party started by ``mpirun``: agree on a rendezvous over MPI, then CrypTen.

    ``comm``: the MPI communicator of exactly the CrypTen ranks (default ``COMM_WORLD``; the
    server-aided topology passes the compute parties' and dealer's, see :mod:`mpc.servers`).

    Every rank reports its host name (``MPI.Get_processor_name()``) and addresses; rank 0
    decides with :func:`rendezvous_address` and broadcasts the rendezvous, or the reason there
    is none, which every rank then raises as :class:`PartyFailure`.
    """
    from mpi4py import MPI

    from mpc import wire

    world = comm if comm is not None else MPI.COMM_WORLD
    spec.check_world_size(world.Get_size())
    rank = world.Get_rank()
    reports = wire.allgather(world, [MPI.Get_processor_name(), [a for _, a in interface_addresses()]])
    decision = None
    if rank == 0:
        try:
            address = rendezvous_address(spec.address, reports)
            if address is None:
                rendezvous, directory = private_rendezvous()
                atexit.register(shutil.rmtree, directory, True)
            else:  # an explicit address rank 0 does not have fails here, for every rank to report
                rendezvous = f"tcp://{address}:{spec.port if spec.port is not None else free_port(address)}"
            decision = [rendezvous, None]
        except PartyFailure as err:
            decision = [None, str(err)]
        except OSError as err:
            decision = [None, f"rank 0 cannot listen on mpc.address={spec.address} ({err.strerror}): set it to "
                              "an address of rank 0's host, or to auto"]
    rendezvous, error = wire.bcast(world, decision, root=0)
    if error is not None:
        raise PartyFailure(error)
    hosts = sorted({name for name, _ in reports})
    if rank == 0 and len(hosts) > 1:
        log.warning(
            "rendezvous %s (mpc.address=%s), ranks on %d hosts (%s): shares, openings and dealer keys "
            "cross the links between hosts unencrypted; protect them (README, threat model)",
            rendezvous, spec.address, len(hosts), ", ".join(hosts),
        )
    return start_party(rank, spec, rendezvous)


# ------------------------------------- spawned parties (tests, the transcript audit, the install check)


def _party_main(
    rank: int,
    spec: PartySpec,
    rendezvous: str,
    fn: Callable[..., Any],
    args: tuple,
    results: "mp.Queue[tuple[int, bool, Any]]",
) -> None:
    try:
        party = start_party(rank, spec, rendezvous)
        out = None if party.is_dealer else fn(party, *args)
        shutdown(party)
        # Plain pickle bytes: torch's queue reducers would pass tensors through shared memory,
        # which is gone (and the result silently lost) once this process exits.
        results.put((rank, True, pickle.dumps(out)))
    except BaseException:  # report anything, including KeyboardInterrupt, to the parent
        results.put((rank, False, traceback.format_exc()))
        raise SystemExit(1)


def run_parties(
    fn: Callable[..., Any],
    spec: PartySpec,
    *args: Any,
    deadline_s: float = 600.0,
) -> list[Any]:
    """Run ``fn(party, *args)`` in every client of a freshly spawned party world.

    Returns the clients' results ordered by rank. ``fn`` and its results must be
    picklable. If any party fails or the deadline passes, every party is terminated
    and :class:`PartyFailure` carries the failing party's traceback.
    """
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()
    rendezvous, directory = private_rendezvous()
    procs = [
        ctx.Process(
            target=_party_main,
            args=(rank, spec, rendezvous, fn, args, results),
            name=f"party-{rank}",
            daemon=True,
        )
        for rank in range(spec.world_size)
    ]
    for p in procs:
        p.start()
    outputs: dict[int, Any] = {}
    end = time.monotonic() + deadline_s
    try:
        while len(outputs) < spec.world_size:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise PartyFailure(f"parties did not finish within {deadline_s:.0f} s")
            try:
                rank, ok, value = results.get(timeout=min(remaining, 1.0))
            except queue.Empty:  # check for parties that died without reporting
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead and all(p.exitcode is not None for p in dead):
                    time.sleep(0.5)  # let a dying party's report arrive first
                    if results.empty():
                        raise PartyFailure(
                            ", ".join(f"{p.name} exited with code {p.exitcode}" for p in dead)
                        )
                continue
            if not ok:
                raise PartyFailure(f"party {rank} failed:\n{value}")
            outputs[rank] = pickle.loads(value)
    finally:
        for p in procs:
            p.join(timeout=5 if len(outputs) == spec.world_size else 0.1)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        shutil.rmtree(directory, ignore_errors=True)
    return [outputs[r] for r in range(spec.n_clients)]
