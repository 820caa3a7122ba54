#!/usr/bin/env bash
# Two "hosts" on one machine, then a real multi-party CrypTen job across them under mpirun.
#
# Each host is a network namespace (one end of a veth pair: 10.77.0.1/24, 10.77.0.2/24) with its
# own UTS namespace (hostname secfpp-a, secfpp-b): MPI, the rendezvous and gloo see two hosts
# that reach each other only over the veth pair. mpirun runs on host a and starts its daemon on
# host b through plm_rsh_agent, a wrapper that enters b's namespaces where ssh would log in.
# The job: `bench cluster`, 3 clients + the TTP dealer, ranks 0-1 on a and 2-3 on b,
# mpc.address left at auto. Extra arguments go to `bench cluster`. Needs root (namespaces,
# veth); without it exits 77. Everything is torn down on exit.
#
# What it takes, and why:
# * the hostfile names the hosts by address: PRRTE knows 10.77.0.1 as itself (an address of its
#   own interfaces) and needs no name service;
# * --bind-to none and mpi_yield_when_idle: both hosts share this machine's cores, but each
#   host's Open MPI believes the cores are its own: it pinned ranks 0 and 2 to core 0 and ranks
#   1 and 3 to core 1 (under load a pinned rank was seen runnable yet without CPU for seconds),
#   and it yields in waits only when it sees a host oversubscribed (ranks spinning in a wait
#   take the CPU of the ranks still computing);
# * no btl_tcp_if_include / oob_tcp_if_include: each namespace has only lo and the veth, and
#   Open MPI leaves loopback out between hosts (hosts with more interfaces may need them);
# * GLOO_SOCKET_IFNAME: mpc.runtime sets it to the interface towards the rendezvous; gloo's
#   default, the address the host name resolves to, is loopback here (forced empty:
#   "Gloo connectFullMesh failed ... remote=[127.0.0.1]");
# * c10d's "hostname of the client socket cannot be retrieved" warnings come from the rendezvous
#   store looking up its peers' names, which have none here; harmless.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
cd "$root"

id=$$  # names unique to this run (interface names: at most 15 characters)
ns_a="secfpp-a-$id" ns_b="secfpp-b-$id" veth_a="sfa$id" veth_b="sfb$id"
work="$(mktemp -d)"
cleanup() {
  ip netns del "$ns_a" 2>/dev/null || true  # deleting a namespace deletes its veth end, and the pair
  ip netns del "$ns_b" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Without the privileges (not root, no network namespaces, no veth) there are no two hosts to
# make: exit 77, which the test reads as "skip".
need() {
  "$@" 2>"$work/err" || { echo "two_hosts: cannot make two hosts here ($*: $(cat "$work/err"));" \
    "needs root and network namespaces" >&2; exit 77; }
}
[ "$(id -u)" = 0 ] || { echo "two_hosts: cannot make two hosts here: needs root, running as $(id -un)" >&2; exit 77; }
need ip netns add "$ns_a"
need ip netns add "$ns_b"
need ip link add "$veth_a" type veth peer name "$veth_b"
need ip link set "$veth_a" netns "$ns_a"
need ip link set "$veth_b" netns "$ns_b"
need ip -n "$ns_a" addr add 10.77.0.1/24 dev "$veth_a"
need ip -n "$ns_b" addr add 10.77.0.2/24 dev "$veth_b"
for ns in "$ns_a" "$ns_b"; do
  need ip -n "$ns" link set lo up
done
need ip -n "$ns_a" link set "$veth_a" up
need ip -n "$ns_b" link set "$veth_b" up
need ip netns exec "$ns_b" unshare --uts true

# Host names in the hostfile are the addresses: PRRTE then knows 10.77.0.1 as itself (an address of
# its own interfaces) without any name service.
printf '10.77.0.1 slots=2\n10.77.0.2 slots=2\n' >"$work/hostfile"
# The "ssh": PRRTE calls it as `agent HOST COMMAND...`; run COMMAND inside HOST's namespaces.
cat >"$work/agent" <<EOF
#!/bin/sh
case "\$1" in
  10.77.0.1) ns=$ns_a name=secfpp-a ;;
  10.77.0.2) ns=$ns_b name=secfpp-b ;;
  *) echo "agent: unknown host \$1" >&2; exit 1 ;;
esac
shift
exec ip netns exec "\$ns" unshare --uts sh -c 'hostname "\$0" && exec sh -c "\$*"' "\$name" "\$@"
EOF
chmod +x "$work/agent"

t0=$(date +%s)
# on host a, as host a
ip netns exec "$ns_a" unshare --uts sh -c 'hostname secfpp-a && exec "$@"' sh \
  mpirun --hostfile "$work/hostfile" -np 4 \
    --mca plm_rsh_agent "$work/agent" --bind-to none --mca mpi_yield_when_idle 1 \
    python -m launcher bench cluster --rows 24 --dim 8 --k 3 --iters 3 --spread 0.2 --no-naive --no-adaptive "$@"
echo "two hosts: mpirun exit 0 after $(( $(date +%s) - t0 )) s;" \
  "veth bytes a->b $(ip netns exec "$ns_a" cat "/sys/class/net/$veth_a/statistics/tx_bytes")," \
  "b->a $(ip netns exec "$ns_b" cat "/sys/class/net/$veth_b/statistics/tx_bytes")"
