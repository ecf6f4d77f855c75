#!/usr/bin/env bash
# A real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager, 1.20.2) on
# free loopback ports, for tests and the demo. No scheduler or kubelet here: scripts/node.sh adds
# them (nodelifecycle untaints the node it registers; the API server reaches that kubelet by its
# InternalIP, 127.0.0.1, for logs and exec).
#
#   control-plane.sh start DIR    prepare DIR, start the three processes, wait until ready
#   control-plane.sh stop DIR     stop the processes started by `start DIR`
#   control-plane.sh env DIR      print `export KUBECONFIG=DIR/kubeconfig`
#   control-plane.sh prepare DIR  only write keys, token file, kubeconfigs and the flag lists
#                                 DIR/<component>.args (one argument per line); the Rust test
#                                 helper (tests/common/k8s.rs) uses this and starts the processes
#                                 itself so they die with the test binary.
#   control-plane.sh kubeconfigs DIR  write DIR/kubeconfig and DIR/controller-manager.kubeconfig
#                                 once the API server has written DIR/certs/apiserver.crt
#   control-plane.sh hold-range DIR PID   make the Service range unreachable on this machine for
#                                 the control plane in DIR, kept while PID lives (see below)
#   control-plane.sh release-range DIR    that control plane no longer needs it
#   control-plane.sh range-check  exit 0 when the Service range routes nowhere, 1 with the route
#
# Network safety: the API server dials a Service's ClusterIP (a webhook's `clientConfig.service`,
# an aggregated API) and nothing on this machine answers there: without kube-proxy the Service
# range follows the default route off the machine. Before any API server starts, the whole range
# gets an `unreachable` route (a connect fails at once, locally, EHOSTUNREACH), and
# `--enable-aggregator-routing` makes the API server call webhooks at their Service's endpoints
# (pod addresses on the node's bridge) instead. Several control planes share one route: each
# holds it under a file in $RANGE_HOLDERS naming its DIR and the PID that keeps it; the last one
# released (or found dead) removes it, under a lock, so no cluster ever runs without it.
#
# Ports may be chosen by the caller with ETCD_PORT, ETCD_PEER_PORT and APISERVER_PORT; otherwise
# free ones are picked. APISERVER_ADDRESS (default 127.0.0.1) is where the API server binds and
# what it advertises; the node serves it on its bridge's host address (10.244.0.1), the one
# address pods reach, so that address is in its serving certificate and every kubeconfig. Binaries come from scripts/k8s-binaries.sh (or K8S_BIN_DIR).
# DIR layout: etcd/ (data), certs/ (apiserver serving cert), logs/, pids/, sa.key, sa.pub,
# tokens.csv, token, kubeconfig (admin), controller-manager.kubeconfig, ports.env, *.args.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
COMPONENTS=(etcd kube-apiserver kube-controller-manager)
# The Service range: the API server's flag and the unreachable route are the same value.
SERVICE_CIDR=10.0.0.0/24
# Addresses of that range that must not route (the first, a typical ClusterIP, the last).
SERVICE_PROBES=(10.0.0.1 10.0.0.111 10.0.0.254)
RANGE_HOLDERS=/run/bifrost-service-range
RANGE_LOCK=/run/lock/bifrost-service-range.lock

log() { echo "control-plane: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  echo "usage: $0 {start|stop|env|prepare|kubeconfigs|release-range} DIR | hold-range DIR PID | range-check" >&2
  exit 2
}

# shellcheck source=scripts/lib/ports.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/ports.sh"

bin_dir() {
  if [[ -n ${K8S_BIN_DIR:-} ]]; then
    echo "$K8S_BIN_DIR"
  else
    "$HERE/k8s-binaries.sh" | tail -n1
  fi
}

write_args() { # file, args...
  local f=$1; shift
  printf '%s\n' "$@" >"$f"
}

# Write everything the processes need, and their flag lists. Does not start anything.
prepare() {
  local dir=$1
  mkdir -p "$dir"/{etcd,certs,logs,pids}
  dir=$(cd "$dir" && pwd)

  local etcd_port=${ETCD_PORT:-$(free_port)}
  local peer_port=${ETCD_PEER_PORT:-$(free_port)}
  local api_port=${APISERVER_PORT:-$(free_port)}
  local api_addr=${APISERVER_ADDRESS:-127.0.0.1}
  cat >"$dir/ports.env" <<EOF
ETCD_PORT=$etcd_port
ETCD_PEER_PORT=$peer_port
APISERVER_PORT=$api_port
APISERVER_ADDRESS=$api_addr
EOF

  if [[ ! -s $dir/sa.key ]]; then
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
  fi
  if [[ ! -s $dir/token ]]; then
    openssl rand -hex 24 >"$dir/token"
  fi
  local token
  token=$(cat "$dir/token")
  # token,user,uid,"groups"
  echo "$token,admin,admin,\"system:masters\"" >"$dir/tokens.csv"
  chmod 600 "$dir/sa.key" "$dir/token" "$dir/tokens.csv"

  write_args "$dir/etcd.args" \
    --name=default \
    "--data-dir=$dir/etcd" \
    "--listen-client-urls=http://127.0.0.1:$etcd_port" \
    "--advertise-client-urls=http://127.0.0.1:$etcd_port" \
    "--listen-peer-urls=http://127.0.0.1:$peer_port" \
    "--initial-advertise-peer-urls=http://127.0.0.1:$peer_port" \
    "--initial-cluster=default=http://127.0.0.1:$peer_port" \
    --initial-cluster-state=new \
    --logger=zap \
    --log-level=warn

  write_args "$dir/kube-apiserver.args" \
    "--etcd-servers=http://127.0.0.1:$etcd_port" \
    --insecure-port=0 \
    "--secure-port=$api_port" \
    "--bind-address=$api_addr" \
    "--advertise-address=$api_addr" \
    "--cert-dir=$dir/certs" \
    "--token-auth-file=$dir/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    "--service-account-key-file=$dir/sa.pub" \
    "--service-account-signing-key-file=$dir/sa.key" \
    "--service-cluster-ip-range=$SERVICE_CIDR" \
    --enable-aggregator-routing=true \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    --kubelet-preferred-address-types=InternalIP \
    --v=1

  # The serving cert is generated by the API server at start-up; kubeconfigs embed it as CA.
  write_args "$dir/kube-controller-manager.args" \
    "--kubeconfig=$dir/controller-manager.kubeconfig" \
    "--service-account-private-key-file=$dir/sa.key" \
    "--root-ca-file=$dir/certs/apiserver.crt" \
    --leader-elect=false \
    --port=0 \
    --secure-port=0 \
    --controllers=nodelifecycle,deployment,replicaset,statefulset,daemonset,job,cronjob,replicationcontroller,serviceaccount,serviceaccount-token,namespace,garbagecollector,endpoint,endpointslice,podgc \
    --concurrent-gc-syncs=5 \
    --v=1
}

# Write DIR/kubeconfig and DIR/controller-manager.kubeconfig; needs the serving cert.
write_kubeconfigs() {
  local dir=$1
  # shellcheck disable=SC1091
  source "$dir/ports.env"
  local ca token f
  ca=$(base64 -w0 <"$dir/certs/apiserver.crt")
  token=$(cat "$dir/token")
  for f in kubeconfig controller-manager.kubeconfig; do
    cat >"$dir/$f.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://${APISERVER_ADDRESS:-127.0.0.1}:$APISERVER_PORT
    certificate-authority-data: $ca
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context:
    cluster: local
    user: admin
    namespace: default
current-context: local
EOF
    chmod 600 "$dir/$f.tmp"
    mv "$dir/$f.tmp" "$dir/$f"
  done
}

# --- the Service range ------------------------------------------------------------------------

# True when no probe address of the Service range has a route (the unreachable route answers
# `ip route get` with an error).
range_unreachable() {
  local ip
  for ip in "${SERVICE_PROBES[@]}"; do
    ip -o route get "$ip" >/dev/null 2>&1 && return 1
  done
  return 0
}

range_holder() { # dir -> the holder file's name
  printf '%s' "$1" | sha256sum | cut -c1-16
}

# Forget holders whose process is gone; remove the route when nobody holds it. Caller has the lock.
range_prune() {
  local f pid
  for f in "$RANGE_HOLDERS"/*; do
    [[ -f $f ]] || continue
    read -r pid _ <"$f" || pid=
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && continue
    rm -f "$f"
  done
  if [[ -z $(ls -A "$RANGE_HOLDERS" 2>/dev/null) ]]; then
    ip route del unreachable "$SERVICE_CIDR" 2>/dev/null || true
    rmdir "$RANGE_HOLDERS" 2>/dev/null || true
  fi
}

hold_range() { # dir pid
  local dir=$1 pid=$2
  [[ $pid =~ ^[0-9]+$ ]] || die "hold-range: '$pid' is not a process id"
  mkdir -p "$(dirname "$RANGE_LOCK")"
  (
    flock -w 120 9 || die "hold-range: $RANGE_LOCK held for more than 120 s"
    mkdir -p "$RANGE_HOLDERS"
    ip route replace unreachable "$SERVICE_CIDR" || die "cannot make $SERVICE_CIDR unreachable (needs root)"
    range_unreachable || die "the Service range $SERVICE_CIDR still routes: $(ip -o route get "${SERVICE_PROBES[0]}" 2>&1): refusing to go on"
    echo "$pid $dir" >"$RANGE_HOLDERS/$(range_holder "$dir")"
  ) 9>"$RANGE_LOCK"
}

release_range() { # dir
  local dir=$1
  mkdir -p "$(dirname "$RANGE_LOCK")"
  (
    flock -w 120 9 || die "release-range: $RANGE_LOCK held for more than 120 s"
    rm -f "$RANGE_HOLDERS/$(range_holder "$dir")"
    range_prune
  ) 9>"$RANGE_LOCK"
}

range_check() {
  if ip route show type unreachable | grep -q "^unreachable $SERVICE_CIDR"; then
    echo "route unreachable $SERVICE_CIDR (holders: $(cat "$RANGE_HOLDERS"/* 2>/dev/null | tr '\n' ';'))"
    return 1
  fi
}

read_args() { # file -> ARGS array
  mapfile -t ARGS <"$1"
}

start_one() { # dir, bin, component
  local dir=$1 bin=$2 c=$3
  read_args "$dir/$c.args"
  nohup "$bin/$c" "${ARGS[@]}" >"$dir/logs/$c.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$c.pid"
}

alive() { # dir, component
  local pid
  pid=$(cat "$1/pids/$2.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null
}

tail_log() {
  log "--- tail of $1 ---"
  tail -n 30 "$1" >&2 || true
}

wait_until() { # description, timeout seconds, dir, component, command...
  local what=$1 timeout=$2 dir=$3 c=$4
  shift 4
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$dir" "$c"; then
      tail_log "$dir/logs/$c.log"
      die "$c exited while waiting for $what"
    fi
    if ((SECONDS > deadline)); then
      tail_log "$dir/logs/$c.log"
      die "timed out after ${timeout}s waiting for $what"
    fi
    sleep 0.5
  done
}

api_get() { # dir, path
  local dir=$1
  # shellcheck disable=SC1091
  source "$dir/ports.env"
  curl -sf --cacert "$dir/certs/apiserver.crt" -H "Authorization: Bearer $(cat "$dir/token")" \
    "https://${APISERVER_ADDRESS:-127.0.0.1}:$APISERVER_PORT$2"
}

readyz() { [[ $(api_get "$1" /readyz) == ok ]]; }

start() {
  local dir=$1
  for c in "${COMPONENTS[@]}"; do
    alive "$dir" "$c" && die "$c is already running in $dir (stop it first)"
  done
  local bin
  bin=$(bin_dir)
  [[ -x $bin/kube-apiserver ]] || die "no kube-apiserver in $bin"
  rm -f "$dir/certs/apiserver.crt" "$dir/certs/apiserver.key" 2>/dev/null || true
  prepare "$dir"
  dir=$(cd "$dir" && pwd)
  # shellcheck disable=SC1091
  source "$dir/ports.env"
  # Do not leave half a control plane running when something fails.
  trap 'rc=$?; if ((rc)); then stop "$dir"; fi' EXIT

  # Before any API server: the Service range is unreachable, held by this script until the API
  # server runs, then by the API server itself.
  hold_range "$dir" $$
  start_one "$dir" "$bin" etcd
  wait_until "etcd" 30 "$dir" etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
  start_one "$dir" "$bin" kube-apiserver
  hold_range "$dir" "$(cat "$dir/pids/kube-apiserver.pid")"
  wait_until "the API server's serving certificate" 60 "$dir" kube-apiserver test -s "$dir/certs/apiserver.crt"
  write_kubeconfigs "$dir"
  wait_until "/readyz" 120 "$dir" kube-apiserver readyz "$dir"
  start_one "$dir" "$bin" kube-controller-manager
  wait_until "the default ServiceAccount" 120 "$dir" kube-controller-manager \
    api_get "$dir" /api/v1/namespaces/default/serviceaccounts/default
  trap - EXIT
  log "ready: API server https://${APISERVER_ADDRESS:-127.0.0.1}:$APISERVER_PORT, logs in $dir/logs"
  echo "export KUBECONFIG=$dir/kubeconfig"
}

stop() {
  local dir c pid i
  dir=$(cd "$1" && pwd)
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[i]}
    pid=$(cat "$dir/pids/$c.pid" 2>/dev/null) || continue
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pids/$c.pid"
  done
  release_range "$dir"
  log "stopped"
}

case ${1:-} in
  hold-range) [[ $# -eq 3 ]] || usage; hold_range "$(cd "$2" && pwd)" "$3"; exit ;;
  release-range) [[ $# -eq 2 ]] || usage; release_range "$(cd "$2" 2>/dev/null && pwd || echo "$2")"; exit ;;
  range-check) [[ $# -eq 1 ]] || usage; range_check; exit ;;
esac
[[ $# -eq 2 ]] || usage
case $1 in
  start) start "$2" ;;
  stop) stop "$2" ;;
  env) echo "export KUBECONFIG=$(cd "$2" && pwd)/kubeconfig" ;;
  prepare) prepare "$2" ;;
  kubeconfigs) write_kubeconfigs "$(cd "$2" && pwd)" ;;
  *) usage ;;
esac
