"""Party runtime: real spawned parties, a real TTP dealer, bounded failure, the rendezvous address."""

from __future__ import annotations

import os
import time

import pytest
import torch

from mpc.compat import import_crypten
from mpc import runtime
from mpc.runtime import PartyFailure, PartySpec, rendezvous_address, routable_address, run_parties


def _sum_of_secrets(party):
    crypten = import_crypten()
    shares = [crypten.cryptensor(torch.tensor([float(party.rank + 1)]), src=r) for r in range(party.n_clients)]
    total = crypten.cat(shares).sum()
    product = (shares[0] * shares[-1]).get_plain_text().item()  # needs a Beaver triple
    return party.rank, total.get_plain_text().item(), product, party.insecure_dealer


def _dies_midway(party):
    crypten = import_crypten()
    x = crypten.cryptensor(torch.ones(4), src=0)
    if party.rank == 1:
        os._exit(3)  # a crash: no goodbye to the others
    (x * x).get_plain_text()  # the survivors wait on party 1 here
    return "unreachable"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("dealer", ["ttp", "tfp"])
def test_parties_compute_together(dealer):
    out = run_parties(_sum_of_secrets, PartySpec(3, dealer=dealer, allow_insecure=dealer == "tfp"))
    assert [o[0] for o in out] == [0, 1, 2]
    # only the owner's value counts for each src, so the secrets are 1, 2, 3
    assert all(abs(o[1] - 6.0) < 1e-3 for o in out)
    assert all(abs(o[2] - 3.0) < 1e-3 for o in out)
    assert all(o[3] == (dealer == "tfp") for o in out)


@pytest.mark.timeout(120)
def test_dead_party_fails_everyone_within_bound():
    spec = PartySpec(3, dealer="ttp", timeout_s=20)
    t0 = time.monotonic()
    with pytest.raises(PartyFailure) as err:
        run_parties(_dies_midway, spec, deadline_s=90)
    elapsed = time.monotonic() - t0
    assert elapsed < 60, f"failure took {elapsed:.0f} s to surface"
    assert "party" in str(err.value)


def test_world_size_message_names_the_right_mpirun():
    spec = PartySpec(6, dealer="ttp")
    with pytest.raises(PartyFailure, match=r"mpirun -np 7"):
        spec.check_world_size(6)
    PartySpec(6, dealer="tfp", allow_insecure=True).check_world_size(6)


def test_bad_specs_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        PartySpec(1)
    with pytest.raises(ValueError, match="dealer"):
        PartySpec(3, dealer="server")
    with pytest.raises(ValueError, match="allow_insecure"):  # the insecure dealer is opt-in
        PartySpec(3, dealer="tfp")


# ------------------------------------------------- rendezvous address (in-process, fake routes)

ONE_HOST = [["h0", ["10.0.0.1"]], ["h0", ["10.0.0.1"]], ["h0", ["10.0.0.1"]]]
TWO_HOSTS = [["h0", ["10.0.0.1", "172.17.0.1"]], ["h0", ["10.0.0.1", "172.17.0.1"]],
             ["h1", ["172.17.0.1", "10.0.0.2"]], ["h1", ["172.17.0.1", "10.0.0.2"]]]


def _routes(table):
    """A fake ``source_address`` that records what it was asked."""
    asked = []

    def source(destination):
        asked.append(destination)
        return table.get(destination)

    return source, asked


@pytest.mark.parametrize("address", ["auto", "127.0.0.1", "localhost"])
def test_one_host_keeps_the_private_file_store(address):
    assert rendezvous_address(address, ONE_HOST) is None


def test_auto_across_hosts_is_rank0_source_towards_a_peer(monkeypatch):
    source, asked = _routes({"10.0.0.2": "10.0.0.1"})
    monkeypatch.setattr(runtime, "source_address", source)
    assert rendezvous_address("auto", TWO_HOSTS) == "10.0.0.1"
    # docker0's 172.17.0.1 is on both hosts: a route to it never leaves rank 0's host
    assert asked == ["10.0.0.2"]


def test_auto_skips_peers_that_route_to_loopback_or_nowhere():
    source, asked = _routes({"10.0.0.7": "127.0.0.1", "10.0.0.8": None, "10.0.0.9": "10.0.0.1"})
    assert routable_address(["10.0.0.1"], ["127.0.1.1", "10.0.0.7", "10.0.0.8", "10.0.0.9"], source) == "10.0.0.1"
    assert asked == ["10.0.0.7", "10.0.0.8", "10.0.0.9"]
    assert routable_address(["10.0.0.1"], ["10.0.0.7", "10.0.0.8"], source) is None


def test_auto_without_a_route_names_the_key(monkeypatch):
    monkeypatch.setattr(runtime, "source_address", lambda destination: None)
    # the peer's name is the fallback; localhost resolves without DNS, to loopback, which is skipped
    reports = [["h0", ["10.0.0.1"]], ["localhost", ["10.0.0.2"]]]
    with pytest.raises(PartyFailure, match=r"2 hosts \(h0, localhost\) and mpc.address=auto found no address.*"
                                           r"set mpc.address"):
        rendezvous_address("auto", reports)


def test_explicit_address_wins_and_loopback_across_hosts_is_refused(monkeypatch):
    monkeypatch.setattr(runtime, "source_address", lambda destination: pytest.fail("no route look-up"))
    assert rendezvous_address("10.9.9.9", TWO_HOSTS) == "10.9.9.9"
    assert rendezvous_address("10.9.9.9", ONE_HOST) == "10.9.9.9"  # one host, off loopback: TCP as asked
    with pytest.raises(PartyFailure, match=r"2 hosts \(h0, h1\) but mpc.address=127.0.0.1 is loopback: set "
                                           r"mpc.address to auto"):
        rendezvous_address("127.0.0.1", TWO_HOSTS)


def test_real_routes_to_own_addresses():
    assert runtime.source_address("127.0.0.1") == "127.0.0.1"
    found = runtime.interface_addresses()
    assert all(not a.startswith("127.") for _, a in found), found
    for name, address in found:  # what start_party puts in GLOO_SOCKET_IFNAME off loopback
        assert runtime.interface_towards(address) == name


def test_the_dealer_registry_says_what_each_dealer_needs():
    from mpc.dealer import DEALERS, get

    assert get("ttp").needs_process and not get("ttp").insecure and get("ttp").provider == "TTP"
    assert get("tfp").insecure and not get("tfp").needs_process
    assert PartySpec(3).world_size == 4 and PartySpec(3, dealer="tfp", allow_insecure=True).world_size == 3
    with pytest.raises(ValueError, match="one of"):
        get("server")
    assert set(DEALERS) == {"ttp", "tfp"}
