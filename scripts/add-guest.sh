#!/usr/bin/env bash
# Create a guest "VM" on this host: a network namespace whose eth0 is one end of a veth
# pair; the other end (the VNIC) is enslaved to the overlay's bridge.  Used by
# scripts/provision-host.sh on the Vagrant hosts.
#
#   add-guest.sh [options] MAC IPV4 IPV6        (IPV4 or IPV6 may be "-": none)
#     --ns NAME        guest namespace (default guest)
#     --vnic NAME      the host end of the veth pair (default vnic0)
#     --bridge NAME    the overlay bridge varpd creates (default br-overlay0)
#     --mtu N          MTU of both ends (default 1400: below VXLAN's 1450 on a 1500 underlay)
#     --no-attach      leave the VNIC unbridged
#     --timeout S      how long to wait for the bridge to appear (default 60)
#     -n, --dry-run    print the commands that change state instead of running them
#
# These are, command for command, the steps of varpd.lab.topology.Lab.add_guest (and
# attach_guest) with the lab's host namespace being this machine's own namespace;
# tests/unit/docs/test_docs_guest.py runs this script with --dry-run and checks that
# both make the same MAC, MTU, sysctls (accept_dad 0), addrgenmode none and addresses.
# The lab itself cannot be reused here: it names guests <prefix><host>-<tag> and
# expects every host to be a named namespace.
#
# Run it in the host's own network namespace, not under `ip netns exec` (whose private mount
# namespace would hide the guest namespace's /run/netns entry from everyone else; use nsenter --net).
# Re-running replaces the guest (its namespace is removed first, which removes the pair).
set -euo pipefail

NS=guest VNIC=vnic0 BRIDGE=br-overlay0 MTU=1400 ATTACH=1 TIMEOUT=60 DRY=0
usage() { sed -n '6,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --ns) NS=$2; shift 2 ;;
        --vnic) VNIC=$2; shift 2 ;;
        --bridge) BRIDGE=$2; shift 2 ;;
        --mtu) MTU=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --no-attach) ATTACH=0; shift ;;
        -n|--dry-run) DRY=1; shift ;;
        -h|--help) usage 0 ;;
        --) shift; break ;;
        -*) echo "add-guest.sh: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
[ $# -eq 3 ] || usage
MAC=$1 IP4=$2 IP6=$3
[ "$IP4" = "-" ] && IP4=""
[ "$IP6" = "-" ] && IP6=""

die() { echo "add-guest.sh: $*" >&2; exit 1; }
run() {
    if [ "$DRY" = 1 ]; then
        printf '%s\n' "$*"
    else
        "$@" || die "failed: $*"
    fi
}

if [ "$DRY" = 0 ]; then
    [ "$(id -u)" = 0 ] || die "must run as root"
    if [ -e "/run/netns/$NS" ]; then  # replace a previous guest: stop what runs in it, then remove it
        for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$NS"
    fi
    for _ in $(seq 50); do  # the pair goes with the namespace, asynchronously
        ip link show dev "$VNIC" >/dev/null 2>&1 || break
        sleep 0.1
    done
    if ip link show dev "$VNIC" >/dev/null 2>&1; then ip link del "$VNIC"; fi
fi

# Lab._add_ns
run ip netns add "$NS"
run ip -n "$NS" link set lo up
# Lab.add_guest
run ip link add "$VNIC" mtu "$MTU" type veth peer name eth0 address "$MAC" mtu "$MTU" netns "$NS"
run sysctl -qw "net.ipv6.conf.$VNIC.disable_ipv6=1"   # a bridge port needs no address
run ip link set "$VNIC" up
run ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.eth0.disable_ipv6=0 \
    net.ipv6.conf.eth0.accept_dad=0
# only the mapping's link-local: an EUI-64 one could be picked as source and never be resolvable
run ip -n "$NS" link set eth0 addrgenmode none
if [ -n "$IP4" ]; then run ip -n "$NS" addr add "$IP4/24" dev eth0; fi
run ip -n "$NS" link set eth0 up
if [ -n "$IP6" ]; then run ip -n "$NS" addr add "$IP6/64" dev eth0 nodad; fi

# Lab.attach_guest: varpd creates the bridge when it starts the overlay
if [ "$ATTACH" = 1 ]; then
    if [ "$DRY" = 0 ]; then
        deadline=$((SECONDS + TIMEOUT))
        until ip link show dev "$BRIDGE" >/dev/null 2>&1; do
            [ "$SECONDS" -lt "$deadline" ] || die "bridge $BRIDGE did not appear within ${TIMEOUT}s (is varpd running? journalctl -u varpd)"
            sleep 0.2
        done
    fi
    run ip link set "$VNIC" master "$BRIDGE"
    # port security (illumos: protection=mac-nospoof): the guest's MAC is pinned to its port,
    # which drops frames from any other source MAC and learns nothing
    run bridge fdb replace "$MAC" dev "$VNIC" master static sticky
    run bridge link set dev "$VNIC" learning off locked on
fi
where=$VNIC; [ "$ATTACH" = 1 ] && where="$VNIC on $BRIDGE"
[ "$DRY" = 1 ] || echo "add-guest.sh: guest namespace $NS: eth0 $MAC mtu $MTU ${IP4:+$IP4/24 }${IP6:+$IP6/64 }(host end $where)"
