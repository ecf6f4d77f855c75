#!/usr/bin/env bash
# Run a command while counting (and dropping) every packet this machine sends towards a cluster
# address through any interface but loopback and the node's bridge:
#
#   egress-audit.sh CMD [ARGS...]
#
# The harness keeps those addresses on the machine by routing (control-plane.sh makes the Service
# range unreachable before any API server starts; node.sh gives the pod range to the bridge
# before containerd starts). This is the check that the routing held: an iptables chain of our
# own, hooked first into OUTPUT, counts what would have left for the Service range or the pod
# range and drops it. After CMD, it prints the count and removes the chain; it exits with CMD's
# status, or 1 if any packet was counted. The chain only counts and drops our own outgoing
# cluster traffic: nothing else on the machine is touched. Needs root (as the rest of the harness);
# without iptables it says so and runs CMD unaudited.
set -euo pipefail

RANGES=(10.0.0.0/24 10.244.0.0/16) # the Service range (control-plane.sh), the pod range (node.sh)
ALLOWED=(lo bifrost0)              # loopback, the node's bridge
CHAIN=BIFROST_EGRESS_$$

log() { echo "egress-audit: $*" >&2; }

(($#)) || {
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
}

if ! command -v iptables >/dev/null 2>&1 || ! iptables -w -L OUTPUT -n >/dev/null 2>&1; then
  log "iptables is not usable here: running without the audit"
  exec "$@"
fi

remove() {
  iptables -w -D OUTPUT -j "$CHAIN" 2>/dev/null || true
  iptables -w -F "$CHAIN" 2>/dev/null || true
  iptables -w -X "$CHAIN" 2>/dev/null || true
}

iptables -w -N "$CHAIN"
trap remove EXIT
for range in "${RANGES[@]}"; do
  for dev in "${ALLOWED[@]}"; do
    iptables -w -A "$CHAIN" -d "$range" -o "$dev" -j RETURN
  done
  iptables -w -A "$CHAIN" -d "$range" -j DROP
done
iptables -w -I OUTPUT 1 -j "$CHAIN"
log "counting packets to ${RANGES[*]} that would leave through any interface but ${ALLOWED[*]}"

rc=0
"$@" || rc=$?

# The DROP rules' packet counters (-x: exact numbers).
packets=$(iptables -w -L "$CHAIN" -n -v -x | awk '$3 == "DROP" {n += $1} END {print n + 0}')
log "$packets packet(s) to the Service range or the pod range would have left the machine"
if ((packets > 0)); then
  iptables -w -L "$CHAIN" -n -v -x >&2
  ((rc)) || rc=1
fi
exit "$rc"
