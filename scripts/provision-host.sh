#!/usr/bin/env bash
# Provision one Vagrant host (zlan, zlan2 or zlan3) as a varpd host:
#   1. Debian packages, the vxlan and bridge modules;
#   2. varpd in a venv, /opt/varpd (built from a copy of the source: the synced folder stays clean;
#      skipped when the venv already holds this source, by its sha256), and /usr/local/bin/varpd;
#   3. /etc/varpd/varpd.toml and /etc/varpd/hosts.json generated from UNDERLAY (python3 -m varpd.lab.vagrant:
#      the seed's hosts.json with record N on host N's address);
#   4. man/ -> /usr/local/share/man; configs/varpd-netns@.service enabled for the namespace "guest" (made at
#      boot, before varpd: the daemon's sandbox cannot make namespaces the host sees); configs/varpd.service
#      enabled and (re)started: Type=notify, so the restart returns once the daemon serves its socket;
#   5. the guest with `varpd create-vnic`: vnic0 on overlay0's bridge, eth0 in namespace guest with this
#      host's MAC, overlay IPv4 and link-local IPv6 from hosts.json, MTU 1400. varpd saves it and
#      re-creates it into the namespace after a reboot (no provisioning needed).
# Idempotent: `vagrant provision` re-runs it (a restart leaves kernel state in place; the VNIC is made anew).
#
#   provision-host.sh HOSTNAME [UNDERLAY]   (root; UNDERLAY: ADDR/LEN,ADDR/LEN,ADDR/LEN in host order;
#                                            the repo is at $VARPD_SRC, default /vagrant)
set -euo pipefail

HOST=${1:?usage: provision-host.sh HOSTNAME [UNDERLAY]}
UNDERLAY=${2:-192.168.56.11/24,192.168.56.12/24,192.168.56.13/24}
SRC=${VARPD_SRC:-/vagrant}
VENV=/opt/varpd
ETC=/etc/varpd
say() { echo "[provision $HOST] $*"; }
die() { echo "[provision $HOST] error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
case "$HOST" in zlan|zlan2|zlan3) ;; *) die "unknown host $HOST (hosts: zlan, zlan2, zlan3)" ;; esac

say "packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    python3 python3-venv iproute2 iputils-ping procps kmod tcpdump man-db >/dev/null

say "kernel modules"
printf 'vxlan\nbridge\n' > /etc/modules-load.d/varpd.conf
modprobe vxlan
modprobe bridge

say "varpd into $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# pip builds in the source tree (build/, *.egg-info): build from a copy, not from the synced folder
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
tar -C "$SRC" --exclude=./.git --exclude=./.vagrant --exclude=./.venv -cf - . | tar -C "$BUILD" -xf -
# a re-provision of the same source installs nothing (each pip build of varpd took minutes emulated)
SOURCE=$(cd "$BUILD" && find . -type f ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum)
if [ -x "$VENV/bin/varpd" ] && [ "$(cat "$VENV/.varpd-source" 2>/dev/null)" = "$SOURCE" ]; then
    say "varpd in $VENV is already this source"
else
    rm -f "$VENV/.varpd-source"
    REINSTALL=0; [ -x "$VENV/bin/varpd" ] && REINSTALL=1
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$BUILD"
    # same version number on a re-run: reinstall the package itself so source changes take effect
    if [ "$REINSTALL" = 1 ]; then
        "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$BUILD"
    fi
    echo "$SOURCE" > "$VENV/.varpd-source"
fi
ln -sf "$VENV/bin/varpd" /usr/local/bin/varpd
varpd --version

say "configuration in $ETC for underlay $UNDERLAY"
install -d -m 0755 "$ETC"
# generated and checked with the daemon's own loaders (one line naming the file on a problem);
# prints this host's guest (MAC IPV4 IPV6 OVERLAY) and the other guests' IPv4 addresses
GUESTS=$("$VENV/bin/python" -m varpd.lab.vagrant --host "$HOST" --underlay "$UNDERLAY" --etc "$ETC" \
    --seed "$SRC/configs/hosts.json") || die "configuration refused"
{ read -r MAC IP4 IP6 OVERLAY; read -r OTHERS; } <<<"$GUESTS"
chmod 0644 "$ETC/varpd.toml" "$ETC/hosts.json"

say "manual pages"
install -D -m 0644 "$SRC/man/varpd.8" /usr/local/share/man/man8/varpd.8
install -D -m 0644 "$SRC/man/varpd.toml.5" /usr/local/share/man/man5/varpd.toml.5
install -D -m 0644 "$SRC/man/hosts.json.5" /usr/local/share/man/man5/hosts.json.5
mandb -q 2>/dev/null || true

say "systemd units"
install -m 0644 "$SRC/configs/varpd.service" /etc/systemd/system/varpd.service
install -m 0644 "$SRC/configs/varpd-netns@.service" /etc/systemd/system/varpd-netns@.service
systemctl daemon-reload
systemctl enable --quiet --now varpd-netns@guest.service   # the guest's namespace, now and at every boot
systemctl enable --quiet varpd.service
systemctl restart varpd.service   # Type=notify: returns once varpd serves its socket and overlays

say "guest: vnic0 on $OVERLAY, eth0 in namespace guest: $MAC $IP4 $IP6"
if varpd show-vnic vnic0 >/dev/null 2>&1; then
    varpd delete-vnic vnic0   # made anew: a changed MAC or address takes effect
elif ip link show dev vnic0 >/dev/null 2>&1; then
    ip link del vnic0   # a guest made by hand (or by the former add-guest.sh) that varpd does not know
fi
ADDRS=()
[ "$IP4" = "-" ] || ADDRS+=(--address "$IP4/24")
[ "$IP6" = "-" ] || ADDRS+=(--address "$IP6/64")
varpd create-vnic -m "$MAC" -l "$OVERLAY" --netns guest "${ADDRS[@]}" --mtu 1400 vnic0

systemctl --no-pager --lines=0 status varpd.service
varpd show-vnic
varpd show-overlay -f
PEER=${OTHERS%% *}
say "done; try: vagrant ssh $HOST -c 'sudo ip netns exec guest ping -c3 $PEER'"
