#!/usr/bin/env bash
# What injection costs a worker pod on a real node (scripts/node.sh): `kubectl apply` → Running,
# median of N (default 10) new pods each, for
#   - an unlabelled worker pod (no injection: the baseline),
#   - a labelled worker pod whose resource lists no package (bootstrap copy + an empty install),
#   - a labelled worker pod with the demo's packages (bifrost-hello, bifrost-extra from a local
#     index), every pod new, so every install is cold.
# Prints the overhead over the baseline, the bytes the bootstrap init container copies (the
# static binary and uv), how long that copy takes on this machine, and where each kind of pod
# spends its time (scripts/lib/pod_timeline.py: containerd's CRI log against the apply and
# Running times; the kubelet notices a container's exit only at its next 1 s PLEG relist).
#
#   scripts/bench-node.sh [N]     BENCH_LOGS=DIR keeps the node's logs, pods and install logs
#
#   scripts/bench-node.sh --operator [N]   instead: the operator as users run it (the chart on the
#     node, 2 replicas): `helm install` -> Ready -> the first injected worker Running, median of
#     N (default 5) installs, and the leader pod's RSS with 1 and 1,001 resources
#     (scripts/lib/bench_operator.sh).
#
#   scripts/bench-node.sh --unresolvable [N]   instead: how soon an edit to unresolvable content
#     (`bifrost-no-such-package`) shows, median of N (default 5) edits each, on a labelled
#     one-replica worker already running: today (`resolve: Pod`) the edit rolls and the new pod's
#     install container exits non-zero; with the controller resolving (`install.python`, the
#     operator's --resolver-index-url naming the local index) the resource says `Resolved=False`
#     and nothing rolls. Both with debounceSeconds 0; each edit is a new content (a new hash) and
#     is reverted, the worker back on the good content, before the next.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=pods
case "${1:-}" in
  --unresolvable) MODE=unresolvable; shift ;;
  --operator) MODE=operator; shift ;;
esac
case $MODE in unresolvable | operator) N=${1:-5} ;; *) N=${1:-10} ;; esac
HOST_IP=10.244.0.1

log() { echo "bench-node: $*" >&2; }
die() { log "$*"; exit 1; }

cargo build --locked --quiet
BIN="$ROOT/target/debug/bifrost-requirements"
K8S_BIN=$(bash scripts/k8s-binaries.sh | tail -n 1)
IMAGES=$(bash scripts/node-images.sh all | tail -n 1)
# shellcheck disable=SC1091
. "$IMAGES/images.env"
STATIC=$ROOT/target/static

# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh
services_init
NODE_DIR="$SERVICES_DIR/node"
cleanup_all() {
  if [ -n "${BENCH_LOGS:-}" ] && [ -d "$NODE_DIR/logs" ]; then
    mkdir -p "$BENCH_LOGS" && cp -r "$NODE_DIR/logs" "$SERVICES_DIR/pods" "$SERVICES_DIR/operator.log" "$BENCH_LOGS/" 2>/dev/null || true
  fi
  [ -d "$NODE_DIR" ] && bash scripts/node.sh stop "$NODE_DIR" || true
  services_cleanup
}
trap cleanup_all EXIT

t=$(date +%s.%N)
bash scripts/node.sh start "$NODE_DIR" >/dev/null
NODE_START=$(python3 -c "import time; print(f'{time.time() - $t:.1f}')")
export KUBECONFIG="$NODE_DIR/cp/kubeconfig"
k() { "$K8S_BIN/kubectl" "$@"; }

REDIS_BIND="127.0.0.1 $HOST_IP" REDIS_HOST=$HOST_IP start_redis
BIND_HOST=$HOST_IP start_package_index

k apply --server-side -f crds/ >/dev/null
k create namespace bench >/dev/null
k -n bench create secret generic bifrost-redis --from-literal=url="$REDIS_URL" >/dev/null
METRICS_PORT=$(free_port)
WEBHOOK_PORT=$(free_port)
# The host operator's webhook (the --operator bench installs the chart, which registers its own).
[ "$MODE" = operator ] || k apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: bifrost-requirements-bench}
webhooks:
  - name: inject.requirements.bifrost.io
    clientConfig: {url: "https://127.0.0.1:$WEBHOOK_PORT/mutate"}
    rules: [{apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE"], resources: ["pods"]}]
    objectSelector: {matchExpressions: [{key: bifrost.io/requirements, operator: Exists}]}
    failurePolicy: Fail
    sideEffects: None
    timeoutSeconds: 5
    admissionReviewVersions: ["v1"]
EOF

pod_yaml() { # name label
  local labels="{app: bench}"
  [ -n "$2" ] && labels="{app: bench, bifrost.io/requirements: $2}"
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: bench, labels: $labels}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
  securityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000, runAsNonRoot: true}
  volumes: [{name: home, emptyDir: {}}, {name: tmp, emptyDir: {}}]
  containers:
    - name: worker
      image: $WORKER_IMAGE
      imagePullPolicy: Never
      command: ["python3", "-c", "import time\\nwhile True: time.sleep(3600)"]
      securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}
      volumeMounts: [{name: home, mountPath: /home/bifrost}, {name: tmp, mountPath: /tmp}]
EOF
}

resource() { # name content [more install fields [more spec]]
  k -n bench apply -f - >/dev/null <<EOF
apiVersion: bifrost.io/v1alpha1
kind: WorkspaceRequirements
metadata: {name: $1}
spec:
  content: "$2"
  cache: {redis: {urlSecretRef: {name: bifrost-redis, key: url}}}
  install: {indexUrls: ["http://$HOST_IP:$INDEX_PORT/"]${3:+, $3}}
  ${4:-}
EOF
  k -n bench wait --for=condition=CacheWarmed "wsreq/$1" --timeout=60s >/dev/null
}

if [ "$MODE" = operator ]; then
  # shellcheck source=scripts/lib/bench_operator.sh
  . scripts/lib/bench_operator.sh
  bench_operator "$N"
  exit 0
fi

# The pod bench's resources name no interpreter: they are resolved by their pods, as before the
# lock. The unresolvable bench lets the operator resolve against the local index.
RESOLVER=()
[ "$MODE" = unresolvable ] && RESOLVER=(--resolver-index-url "$INDEX_URL" --resolver-cache-dir "$SERVICES_DIR/resolver-cache")
"$BIN" operator --namespace bench --lease-namespace bench \
  --metrics-addr "127.0.0.1:$METRICS_PORT" --webhook-addr "127.0.0.1:$WEBHOOK_PORT" \
  --webhook-service-namespace bench --webhook-extra-san 127.0.0.1 \
  --webhook-config-name bifrost-requirements-bench \
  --operator-image "$OPERATOR_IMAGE" --operator-image-pull-policy Never "${RESOLVER[@]}" \
  >"$SERVICES_DIR/operator.log" 2>&1 &
SERVICES_PIDS+=($!)
wait_port "$METRICS_PORT" "operator metrics"
for _ in $(seq 1 150); do
  [ -n "$(k get mutatingwebhookconfiguration bifrost-requirements-bench -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ] && break
  sleep 0.2
done
if [ "$MODE" = unresolvable ]; then
  # shellcheck source=scripts/lib/bench_unresolvable.sh
  . scripts/lib/bench_unresolvable.sh
  bench_unresolvable "$N"
  exit 0
fi

resource empty '# no packages\n'
resource demo 'bifrost-extra==2.0\nbifrost-hello==1.0\n'

# Seconds from `kubectl apply` to Running (polling every 50 ms).
measure() { # name label
  local start phase
  pod_yaml "$1" "$2" >"$SERVICES_DIR/pod.yaml"
  start=$(date +%s.%N)
  k apply -f "$SERVICES_DIR/pod.yaml" >/dev/null
  for _ in $(seq 1 1200); do
    phase=$(k -n bench get pod "$1" -o jsonpath='{.status.phase}')
    [ "$phase" = Running ] && break
    [ "$phase" = Failed ] && die "pod $1 failed"
    sleep 0.05
  done
  [ "$phase" = Running ] || die "pod $1 not Running"
  mkdir -p "$SERVICES_DIR/pods"
  echo "$start" >"$SERVICES_DIR/pods/$1.applied"
  python3 -c "import time; print(f'{time.time() - $start:.3f}')" | tee "$SERVICES_DIR/pods/$1.seconds"
  k -n bench get pod "$1" -o json >"$SERVICES_DIR/pods/$1.json"
  [ -n "$2" ] && k -n bench logs "$1" -c bifrost-requirements-install --timestamps >"$SERVICES_DIR/pods/$1.install.log" 2>&1
  k -n bench delete pod "$1" --grace-period=0 --wait=true >/dev/null 2>&1
}

declare -A RESULTS
for kind in unlabelled empty demo; do
  label=""
  [ "$kind" != unlabelled ] && label=$kind
  measure "warmup-$kind" "$label" >/dev/null # the first pod of a kind also warms page caches
  times=()
  for i in $(seq 1 "$N"); do times+=("$(measure "bench-$kind-$i" "$label")"); done
  RESULTS[$kind]="${times[*]}"
  log "$kind: ${times[*]}"
done

BYTES=$(($(stat -c %s "$STATIC/bifrost-requirements") + $(stat -c %s "$STATIC/uv")))
COPY=$(python3 - "$STATIC/bifrost-requirements" <<'PY'
import statistics, subprocess, sys, tempfile, time
runs = []
for _ in range(10):
    with tempfile.TemporaryDirectory() as d:
        t = time.time()
        subprocess.run([sys.argv[1], "bootstrap", "--to", d + "/bin"], check=True, capture_output=True)
        runs.append(time.time() - t)
print(f"{statistics.median(runs):.3f}")
PY
)
python3 - "$N" "$NODE_START" "$BYTES" "$COPY" "${RESULTS[unlabelled]}" "${RESULTS[empty]}" "${RESULTS[demo]}" <<'PY'
import statistics, sys
n, node_start, nbytes, copy = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
med = {k: statistics.median(map(float, v.split())) for k, v in zip(["unlabelled", "empty", "demo"], sys.argv[5:8])}
print(f"node start (node.sh start): {node_start} s")
print(f"apply -> Running, median of {n} new pods each:")
for k, v in med.items():
    print(f"  {k:<11} {v:.3f} s")
print(f"overhead, no packages:      {med['empty'] - med['unlabelled']:+.3f} s")
print(f"overhead, demo's packages:  {med['demo'] - med['unlabelled']:+.3f} s  (target <= 1.5 s)")
print(f"bootstrap copy: {nbytes} bytes (bifrost-requirements + uv), {copy:.3f} s on this machine's disk")
PY
echo "where the time goes (median per phase; gap: an init container's exit -> the next container):"
python3 scripts/lib/pod_timeline.py "$NODE_DIR/logs/containerd.log" "$SERVICES_DIR/pods" bench- | sed 's/^/  /'
