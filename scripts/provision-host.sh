#!/usr/bin/env bash
# Provision one Vagrant host (zlan, zlan2 or zlan3) as a varpd host:
#   1. Debian packages, the vxlan and bridge modules;
#   2. varpd in a venv, /opt/varpd (pip install /vagrant);
#   3. configs/HOST.toml -> /etc/varpd/varpd.toml, configs/hosts-vagrant.json -> /etc/varpd/hosts.json;
#   4. man/ -> /usr/local/share/man; configs/varpd.service -> /etc/systemd/system/varpd.service, enabled and (re)started;
#   5. the guest namespace "guest" with scripts/add-guest.sh: vnic0 on the overlay bridge,
#      this host's MAC, overlay IPv4 and link-local IPv6 from hosts.json, MTU 1400.
# Idempotent: `vagrant provision` re-runs it (a restart leaves kernel state in place).
#
#   provision-host.sh HOSTNAME        (run as root; the repo is at $VARPD_SRC, default /vagrant)
set -euo pipefail

HOST=${1:?usage: provision-host.sh HOSTNAME}
SRC=${VARPD_SRC:-/vagrant}
VENV=/opt/varpd
ETC=/etc/varpd
say() { echo "[provision $HOST] $*"; }
die() { echo "[provision $HOST] error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
[ -f "$SRC/configs/$HOST.toml" ] || die "no $SRC/configs/$HOST.toml (hosts: zlan, zlan2, zlan3)"

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
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$SRC"
# same version number on a re-run: reinstall the package itself so source changes take effect
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$SRC"
"$VENV/bin/varpd" --version

say "configuration in $ETC"
install -d -m 0755 "$ETC"
install -m 0644 "$SRC/configs/$HOST.toml" "$ETC/varpd.toml"
install -m 0644 "$SRC/configs/hosts-vagrant.json" "$ETC/hosts.json"
# refuse a bad config here, with the daemon's own messages, rather than in a restart loop;
# print this host's guest: MAC IPV4 IPV6 BRIDGE (the record whose "ip" is our vxlan/listen_ip)
read -r MAC IP4 IP6 BRIDGE < <("$VENV/bin/python" - "$ETC/varpd.toml" "$ETC/hosts.json" <<'PY'
import ipaddress, sys
from varpd.config.daemon import load_config
from varpd.config.hosts import load_hosts

try:
    cfg, mapping = load_config(sys.argv[1]), load_hosts(sys.argv[2])
except Exception as exc:  # ConfigError: one line naming the file (and line)
    sys.exit(str(exc))
if not cfg.overlays:
    sys.exit(f"{sys.argv[1]}: no [[overlays]]")
ov = cfg.overlays[0]
me = ipaddress.ip_address(str(ov.properties["vxlan/listen_ip"]))
mine = [r for r in mapping.by_mac.values() if r.dest.ip == me]
if len(mine) != 1:
    sys.exit(f"{sys.argv[2]}: expected one record with ip {me}, found {len(mine)}")
r = mine[0]
print(r.mac, r.arp or "-", r.ndp or "-", ov.bridge or "-")
PY
) || die "configuration refused"
[ "$BRIDGE" != "-" ] || die "$ETC/varpd.toml: the overlay needs a bridge for the guest"

say "manual pages"
install -D -m 0644 "$SRC/man/varpd.8" /usr/local/share/man/man8/varpd.8
install -D -m 0644 "$SRC/man/varpd.toml.5" /usr/local/share/man/man5/varpd.toml.5
install -D -m 0644 "$SRC/man/hosts.json.5" /usr/local/share/man/man5/hosts.json.5
mandb -q 2>/dev/null || true

say "systemd unit"
install -m 0644 "$SRC/configs/varpd.service" /etc/systemd/system/varpd.service
systemctl daemon-reload
systemctl enable --quiet varpd.service
systemctl restart varpd.service

say "guest namespace: $MAC $IP4 $IP6 on $BRIDGE"
bash "$SRC/scripts/add-guest.sh" --ns guest --vnic vnic0 --bridge "$BRIDGE" --mtu 1400 "$MAC" "$IP4" "$IP6"

systemctl --no-pager --lines=0 status varpd.service || true
"$VENV/bin/varpd" show-overlay -f || true
say "done; try: vagrant ssh $HOST -c 'sudo ip netns exec guest ping -c3 10.55.55.3'"
