#!/usr/bin/env bash
# End-to-end check of the Vagrantfile, run by hand (never from the unit suite; ~20 min emulated):
#   1. vagrant up;
#   2. every guest pings every other guest over IPv4 and IPv6 (link-local, proxied NDP);
#   3. vagrant reload of one host (a reboot), then the same pings with no `vagrant provision`;
#   4. a re-provision of every host, whose output must hold no error line;
#   5. vagrant destroy -f (also on failure, unless KEEP=1).
# Prints the time of each step; a failed ping round or error line is reported and the run goes on
# (so one run shows every problem); exits non-zero if anything failed.
#
#   scripts/vagrant-check.sh                 # with the environment the Vagrantfile reads (VARPD_*)
#   RELOAD_HOST=zlan2 PROVIDER=libvirt scripts/vagrant-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PROVIDER=${PROVIDER:-libvirt}
RELOAD_HOST=${RELOAD_HOST:-zlan3}
HOSTS=(zlan zlan2 zlan3)
# the seed's guests, in host order (configs/hosts.json: record N is host N's guest)
mapfile -t GUEST4 < <(python3 -c 'import json; [print(r["arp"]) for r in json.load(open("configs/hosts.json")).values()]')
mapfile -t GUEST6 < <(python3 -c 'import json; [print(r["ndp"]) for r in json.load(open("configs/hosts.json")).values()]')
LOG=$(mktemp -d)/vagrant-check
mkdir -p "$LOG"
declare -a TIMES=()
FAILED=0

say() { echo "[vagrant-check $(date +%T)] $*"; }
fail() { say "FAIL: $*"; exit 1; }
failed() { say "FAIL: $*"; FAILED=1; }
timed() {  # timed LABEL CMD...: run, log to $LOG/LABEL.log, remember the time
    local label=$1 t0 rc=0; shift
    t0=$(date +%s)
    say "$label: $*"
    "$@" >"$LOG/$label.log" 2>&1 || rc=$?
    TIMES+=("$label $(( $(date +%s) - t0 ))s rc=$rc")
    [ "$rc" = 0 ] || { tail -n 30 "$LOG/$label.log"; fail "$label exited $rc (log: $LOG/$label.log)"; }
}
finish() {
    local rc=$?
    if [ "${KEEP:-0}" != 1 ]; then
        say "destroy"
        t0=$(date +%s)
        vagrant destroy -f >"$LOG/destroy.log" 2>&1 || say "destroy failed (log: $LOG/destroy.log)"
        TIMES+=("destroy $(( $(date +%s) - t0 ))s")
    fi
    say "times:"
    printf '  %s\n' "${TIMES[@]}"
    say "logs in $LOG"
    [ "$rc" = 0 ] && [ "$FAILED" = 0 ] && { say "PASS"; exit 0; }
    say "FAILED"
    exit 1
}
trap finish EXIT

pings() {  # pings ROUND: every guest to every other, IPv4 and IPv6
    local round=$1 i j n=0 bad=0
    for i in "${!HOSTS[@]}"; do
        for j in "${!HOSTS[@]}"; do
            [ "$i" = "$j" ] && continue
            for dst in "${GUEST4[$j]}" "${GUEST6[$j]}%eth0"; do
                if vagrant ssh "${HOSTS[$i]}" -c "sudo ip netns exec guest ping -c3 -W2 $dst" \
                        >>"$LOG/ping-$round.log" 2>&1; then
                    n=$((n + 1))
                    say "$round: ${HOSTS[$i]} guest -> $dst ok"
                else
                    bad=$((bad + 1))
                    failed "$round: ${HOSTS[$i]} guest -> $dst (log: $LOG/ping-$round.log)"
                fi
            done
        done
    done
    TIMES+=("pings-$round $n/$((n + bad)) ok")
}

timed up vagrant up --provider="$PROVIDER"
pings after-up
timed reload vagrant reload "$RELOAD_HOST"
pings after-reload
# what the rebooted host's varpd did at boot (the VNIC re-created into varpd-netns@guest's namespace)
vagrant ssh "$RELOAD_HOST" -c "sudo sh -c 'systemctl --no-pager status varpd-netns@guest varpd | head -n 30; \
    varpd show-vnic; journalctl -b --no-pager -u varpd | grep vnic='" >"$LOG/after-reload-state.log" 2>&1 || true
grep -E 'event=(re-created|adopted|restore-failed)|vnic0 ' "$LOG/after-reload-state.log" | sed 's/^/  /' || true
timed provision vagrant provision
if grep -n -i -E '(^|[^a-z_])(error|traceback|cannot reach)' "$LOG/provision.log"; then
    failed "re-provision printed error lines (above; log: $LOG/provision.log)"
fi
