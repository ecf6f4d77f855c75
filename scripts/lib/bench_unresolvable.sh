# shellcheck shell=bash
# scripts/bench-node.sh --unresolvable: how soon an edit to unresolvable content shows, today
# (each pod resolves: the new pod's install container exits non-zero) and with the controller
# resolving (Resolved=False, nothing rolls). Sourced by bench-node.sh once its node, Redis, local
# index and operator (with --resolver-index-url "$INDEX_URL") run in namespace bench; uses its
# `k`, `log`, `die`, `resource`, `pod_yaml` and $SERVICES_DIR.

GOOD='bifrost-hello==1.0\n'
PYTHON='{version: "3.11", platform: x86_64-manylinux_2_28}'

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{$(now) - float(sys.argv[1]):.3f}')" "$1"; }
sha() { printf '%b' "$1" | sha256sum | cut -d' ' -f1; }

# A resource `name` with the good content and `install` extra fields, and its labelled worker
# Deployment `name` (one replica, never taken down before its replacement is ready) of the pod
# bench's worker pods (pod_yaml's spec).
unresolvable_setup() { # name install-fields
  resource "$1" "$GOOD" "$2" "rollout: {debounceSeconds: 0}"
  k -n bench apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1}
spec:
  replicas: 1
  selector: {matchLabels: {app: $1}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}
  template:
    metadata: {labels: {app: $1, bifrost.io/requirements: $1}}
    spec:
$(pod_yaml "$1" "$1" | sed '1,/^spec:/d; s/^/    /')
EOF
}

set_content() { # name content (with \n escapes, as in a JSON string)
  k -n bench patch wsreq "$1" --type merge -p "{\"spec\": {\"content\": \"$2\"}}" >/dev/null
}

# Until the worker `name` runs one ready pod, injected for `hash`, and nothing else.
wait_worker() { # name hash
  local i
  for i in $(seq 1 600); do
    [ -n "$(k -n bench get pods -l "app=$1" -o json | python3 scripts/lib/show.py running-pod "$2")" ] && return 0
    sleep 0.2
  done
  k -n bench get pods -o wide >&2
  die "worker $1 not back on ${2:0:12}"
}

# Seconds from `t0` until `check ARGS…` succeeds, polled as fast as kubectl answers (a minute
# at most).
seconds_until() { # t0 what check args…
  local t0=$1 what=$2 i
  shift 2
  for i in $(seq 1 1200); do
    if "$@"; then
      since "$t0"
      return 0
    fi
    sleep 0.05
  done
  k -n bench get pods,wsreq -o wide >&2
  die "timed out waiting for $what"
}

# Whether a pod injected for `hash` has an install container that exited non-zero (this run or
# the previous one).
install_failed() { # hash
  local jp='{range .items[*]}{.metadata.annotations.bifrost\.io/injected-hash}'
  jp+=' {.status.initContainerStatuses[?(@.name=="bifrost-requirements-install")].state.terminated.exitCode}'
  jp+=' {.status.initContainerStatuses[?(@.name=="bifrost-requirements-install")].lastState.terminated.exitCode}{"\n"}{end}'
  k -n bench get pods -l app=pod-resolves -o jsonpath="$jp" \
    | awk -v h="$1" '$1 == h && (($2 != "" && $2 != 0) || ($3 != "" && $3 != 0)) {f=1} END {exit !f}'
}

# Whether controller-resolves says Resolved=False for `hash` (its message names the content's
# hash); keeps the message.
resolved_false() { # hash
  local jp='{.status.conditions[?(@.type=="Resolved")].status} {.status.conditions[?(@.type=="Resolved")].message}'
  local out
  out=$(k -n bench get wsreq controller-resolves -o jsonpath="$jp")
  [[ $out == False* && $out == *"sha256 ${1:0:12}"* ]] || return 1
  echo "$out" >"$SERVICES_DIR/resolved-false.txt"
}

# How many ReplicaSets of worker `name` carry a content other than `hash`: the rollouts started.
rolled() { # name hash
  k -n bench get rs -l "app=$1" \
    -o jsonpath='{range .items[*]}{.spec.template.metadata.annotations.bifrost\.io/requirements-hash}{"\n"}{end}' \
    | awk -v h="$2" '$1 != "" && $1 != h {n++} END {print n + 0}'
}

bench_unresolvable() { # n
  local n=$1 good i bad hash t0 today=() ctrl=()
  good=$(sha "$GOOD")
  unresolvable_setup pod-resolves "resolve: Pod"
  unresolvable_setup controller-resolves "python: $PYTHON"
  wait_worker pod-resolves "$good"
  wait_worker controller-resolves "$good"

  for i in $(seq 1 "$n"); do
    bad="bifrost-no-such-package\\n# edit $i\\n"
    hash=$(sha "$bad")
    t0=$(now)
    set_content pod-resolves "$bad"
    today+=("$(seconds_until "$t0" "an install container failing for ${hash:0:12}" install_failed "$hash")")
    set_content pod-resolves "$GOOD"
    wait_worker pod-resolves "$good"
  done
  log "today (resolve: Pod), edit -> install container exits non-zero: ${today[*]}"
  local rolled_today
  rolled_today=$(rolled pod-resolves "$good")

  for i in $(seq 1 "$n"); do
    bad="bifrost-no-such-package\\n# edit $i\\n"
    hash=$(sha "$bad")
    t0=$(now)
    set_content controller-resolves "$bad"
    ctrl+=("$(seconds_until "$t0" "Resolved=False for ${hash:0:12}" resolved_false "$hash")")
    set_content controller-resolves "$GOOD"
    for _ in $(seq 1 300); do
      [ "$(k -n bench get wsreq controller-resolves -o jsonpath='{.status.lock.contentHash}')" = "$good" ] && break
      sleep 0.1
    done
  done
  log "controller resolving, edit -> Resolved=False: ${ctrl[*]}"
  wait_worker controller-resolves "$good"
  [ "$(rolled controller-resolves "$good")" = 0 ] || die "an unresolvable content rolled controller-resolves"

  python3 - "$n" "${today[*]}" "${ctrl[*]}" "$rolled_today" "$(cut -d' ' -f1-3 /proc/loadavg)" "$SERVICES_DIR/resolved-false.txt" <<'PY'
import statistics, sys
n, today, ctrl, rolled, load, message = sys.argv[1:]
t = statistics.median(map(float, today.split()))
c = statistics.median(map(float, ctrl.split()))
print(f"an edit to unresolvable content (bifrost-no-such-package), median of {n} edits each, debounceSeconds 0:")
print(f"  today, each pod resolves (resolve: Pod): edit -> the new pod's install container exits non-zero  {t:.3f} s")
print(f"  the controller resolves:                 edit -> Resolved=False, nothing rolled                 {c:.3f} s")
print(f"  {t / c:.1f}x sooner; today {rolled} of the {n} edits rolled the worker (a ReplicaSet each), "
      "with the controller resolving none did")
print(f"  Resolved=False says: {open(message).read().strip()[:240]}")
print(f"load average (1/5/15 min): {load}")
PY
}
