#!/usr/bin/env bash
# A real one-node Kubernetes 1.20.2 cluster on this machine, for tests, the demo and the benchmark:
# control plane (scripts/control-plane.sh) + kube-scheduler + containerd (own config, root, state
# and socket) + a bridge CNI network + kubelet, everything in DIR, ports picked free.
#
#   node.sh start DIR   start it all, import the images (scripts/node-images.sh), wait until the
#                       node is Ready; prints `export KUBECONFIG=DIR/cp/kubeconfig`
#   node.sh stop DIR    tear it all down (see `stop`); safe to run twice or after a failed start
#   node.sh check       list what a node could have left behind (exit 1 if anything is)
#
# Needs root. One node per machine: the bridge name and the host paths the kubelet uses are
# fixed. Network safety: the bridge bifrost0 owns 10.244.0.1/24 before containerd starts, so
# traffic for pod addresses stays on it (checked with `ip route get`); pods get no default route
# (the bridge plugin without isGateway, no routes in IPAM), no iptables rule is written (no
# portmap/firewall plugin, ipMasq off, kubelet makeIPTablesUtilChains off), ip_forward is left as
# it is. Pods can reach only the bridge's host address: a package index or Redis meant for them
# listens on NODE_HOST_IP (10.244.0.1). The API server listens there too (port 6443, in its
# certificate), so operator pods reach it as users' clusters do; host tools use that address.
set -euo pipefail
shopt -s globstar
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

BRIDGE=bifrost0
HOST_IP=10.244.0.1
SUBNET=10.244.0.0/24
# The pod range around the bridge's subnet: nothing of it but the bridge's /24 exists here, so the
# rest routes nowhere rather than off the machine (no component should dial it; this makes sure).
POD_RANGE=10.244.0.0/16
# Host paths the kubelet (or libcni) uses whatever its --root-dir; removed on stop if start
# created them.
HOST_PATHS=(/var/log/pods /var/log/containers /var/lib/kubelet /var/lib/cni)
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
# The API server's port on HOST_IP (ci/node-values.yaml names it as KUBERNETES_SERVICE_PORT).
APISERVER_PORT=6443
# Held by stop for its whole run, so a start never records sysctls or host paths half-restored.
LOCK=/run/lock/bifrost-node.lock

log() { echo "node: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# shellcheck source=scripts/lib/ports.sh
. "$HERE/lib/ports.sh"

alive() { # pidfile
  local pid state
  pid=$(cat "$1" 2>/dev/null) && kill -0 "$pid" 2>/dev/null || return 1
  # A killed process not yet reaped (its parent is gone) is a zombie: not alive.
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ ${state%% *} != Z ]]
}

stop_pid() { # pidfile [seconds]
  local f=$1 wait=${2:-20} pid
  pid=$(cat "$f" 2>/dev/null) || return 0
  if alive "$f"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((wait * 2))); do alive "$f" || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# The route for a pod address must leave through the bridge, never the default route.
check_route() { # ip
  local dev
  dev=$(ip -o route get "$1" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')
  [[ $dev == "$BRIDGE" ]] || die "route to $1 goes through '${dev:-nothing}', not $BRIDGE: refusing to go on"
}

# An address of the Service range must route nowhere (control-plane.sh holds the route).
check_unroutable() { # ip
  if ip -o route get "$1" >/dev/null 2>&1; then
    die "route to $1 exists ($(ip -o route get "$1")): the Service range must be unreachable; refusing to go on"
  fi
}

write_configs() {
  local dir=$1
  local sock=$dir/containerd/containerd.sock
  mkdir -p "$dir"/{containerd/root,containerd/state,containerd/opt,cni/net.d,cni/ipam,kubelet,logs,pids}
  cat >"$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: runc cannot lower the sandbox's oom_score_adj otherwise.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$dir/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
    max_conf_num = 1
EOF
  # No isGateway (no default route in pods, no ip_forward), no ipMasq, no portmap: no iptables.
  cat >"$dir/cni/net.d/10-bifrost.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "bifrost",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$SUBNET", "rangeStart": "10.244.0.10", "rangeEnd": "10.244.0.250"}]],
        "dataDir": "$dir/cni/ipam"
      }
    }
  ]
}
EOF
  # Pods resolve nothing: no name lookup may leave the machine.
  echo "nameserver 127.0.0.1" >"$dir/resolv.conf"
  cat >"$dir/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failSwapOn: false
makeIPTablesUtilChains: false
# Images cannot be pulled again (no registry): never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
nodeStatusUpdateFrequency: 2s
syncFrequency: 5s
resolvConf: $dir/resolv.conf
serializeImagePulls: false
containerLogMaxSize: 1Mi
EOF
}

start() {
  local dir=$1
  [[ $(id -u) == 0 ]] || die "needs root (containerd, kubelet, a bridge)"
  # A node whose test binary just exited is still being torn down by its watcher: wait for it.
  local waited=0
  while ip link show "$BRIDGE" >/dev/null 2>&1; do
    ((waited < 120)) || die "$BRIDGE exists: another node is running (or a stop was missed: node.sh stop ITS_DIR)"
    ((waited == 0)) && log "waiting for the node that owns $BRIDGE to go"
    sleep 1
    waited=$((waited + 1))
  done
  # Taken and released at once: no process this start spawns may inherit the lock.
  (flock -w 300 9) 9>"$LOCK" || die "a node teardown holds $LOCK for more than 300 s"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local bin images
  bin=$("$HERE/k8s-binaries.sh" | tail -n1)
  for b in kube-scheduler kubelet kubectl; do [[ -x $bin/$b ]] || die "no $b in $bin"; done
  for b in containerd containerd-shim-runc-v2 runc ctr; do command -v $b >/dev/null || die "no $b: run scripts/setup.sh"; done
  [[ -x /usr/lib/cni/bridge ]] || die "no /usr/lib/cni/bridge: run scripts/setup.sh"
  images=$("$HERE/node-images.sh" all | tail -n1)
  # shellcheck disable=SC1091
  source "$images/images.env"
  echo "$bin" >"$dir/bin"
  cp "$images/images.env" "$dir/images.env"

  # What stop restores or removes: only what this start changed.
  : >"$dir/created"
  for p in "${HOST_PATHS[@]}"; do [[ -e $p ]] || echo "$p" >>"$dir/created"; done
  for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$dir/sysctls"

  trap 'rc=$?; if ((rc)); then log "start failed; tearing down"; stop "$dir"; fi' EXIT
  local t0=$SECONDS

  # The bridge and its host address first: from now on pod addresses route through it.
  ip link add "$BRIDGE" type bridge
  ip addr add "$HOST_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  ip route replace unreachable "$POD_RANGE"
  check_route 10.244.0.10
  check_unroutable 10.244.1.1

  # The API server on the bridge's host address (pods reach nothing else), on a fixed port so
  # that charts/bifrost-requirements/ci/node-values.yaml can point in-cluster clients at it.
  APISERVER_ADDRESS=$HOST_IP APISERVER_PORT=$APISERVER_PORT bash "$HERE/control-plane.sh" start "$dir/cp" >/dev/null
  check_unroutable 10.0.0.1
  local kc=$dir/cp/kubeconfig
  KUBELET_PORT=$(free_port)
  KUBELET_HEALTHZ_PORT=$(free_port)
  echo "KUBELET_PORT=$KUBELET_PORT" >"$dir/ports.env"
  write_configs "$dir"

  nohup "$bin/kube-scheduler" --kubeconfig="$kc" --leader-elect=false --port=0 --secure-port=0 --v=1 \
    >"$dir/logs/kube-scheduler.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/kube-scheduler.pid"

  nohup containerd --config "$dir/containerd/config.toml" >"$dir/logs/containerd.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/containerd.pid"
  local sock=$dir/containerd/containerd.sock
  for _ in $(seq 1 60); do ctr -a "$sock" version >/dev/null 2>&1 && break; alive "$dir/pids/containerd.pid" || break; sleep 0.5; done
  ctr -a "$sock" version >/dev/null 2>&1 || { tail -n 30 "$dir/logs/containerd.log" >&2; die "containerd did not start"; }
  for a in "$PAUSE_ARCHIVE" "$WORKER_ARCHIVE" "$WORKER_APP_ARCHIVE" "$OPERATOR_ARCHIVE"; do
    ctr -a "$sock" -n k8s.io images import "$a" >/dev/null
  done
  log "containerd ready, images imported ($((SECONDS - t0))s)"

  nohup "$bin/kubelet" --config="$dir/kubelet/config.yaml" --kubeconfig="$kc" \
    --container-runtime=remote --container-runtime-endpoint="unix://$sock" \
    --root-dir="$dir/kubelet/root" --cert-dir="$dir/kubelet/pki" \
    --hostname-override=127.0.0.1 --pod-infra-container-image="$PAUSE_IMAGE" --v=1 \
    >"$dir/logs/kubelet.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/kubelet.pid"

  local k=("$bin/kubectl" --kubeconfig "$kc")
  local deadline=$((SECONDS + 120))
  until [[ $("${k[@]}" get node 127.0.0.1 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]] \
    && [[ -z $("${k[@]}" get node 127.0.0.1 -o jsonpath='{.spec.taints}' 2>/dev/null) ]]; do
    alive "$dir/pids/kubelet.pid" || { tail -n 30 "$dir/logs/kubelet.log" >&2; die "kubelet exited"; }
    alive "$dir/pids/containerd.pid" || { tail -n 30 "$dir/logs/containerd.log" >&2; die "containerd exited"; }
    ((SECONDS < deadline)) || { tail -n 30 "$dir/logs/kubelet.log" >&2; die "node not Ready (untainted) after 120s"; }
    sleep 0.5
  done
  check_route 10.244.0.10
  trap - EXIT
  log "node 127.0.0.1 Ready in $((SECONDS - t0))s; logs in $dir/logs"
  echo "export KUBECONFIG=$kc"
}

# The processes in any kubepods cgroup (of every hierarchy: each lists its own).
kubepods_pids() {
  cat /sys/fs/cgroup/*/kubepods/**/cgroup.procs 2>/dev/null | sort -un | xargs
}

# SIGKILL every process in the kubepods cgroups and wait until they are gone (10 s at most).
kill_kubepods() {
  local f pids
  # A frozen process gets its SIGKILL only once thawed (v1 freezer.state, v2 cgroup.freeze).
  for f in /sys/fs/cgroup/*/kubepods/**/freezer.state /sys/fs/cgroup/*/kubepods/**/cgroup.freeze; do
    [[ -f $f ]] || continue
    case $f in
      *freezer.state) grep -q FROZEN "$f" && echo THAWED >"$f" ;;
      *) echo 0 >"$f" ;;
    esac 2>/dev/null || true
  done
  for _ in $(seq 1 40); do
    pids=$(kubepods_pids)
    [[ -z $pids ]] && return 0
    # shellcheck disable=SC2086 # one word per pid
    kill -KILL $pids 2>/dev/null || true
    sleep 0.25
  done
  log "still in kubepods cgroups after SIGKILL: $pids"
}

# Everything this machine could hold of a node (any DIR): used by stop and `check`.
leftovers() { # [dir]
  local dir=${1:-} p
  for p in $(kubepods_pids); do
    echo "process $p in kubepods: $(tr '\0\n' '  ' <"/proc/$p/cmdline" 2>/dev/null)"
  done
  pgrep -x kubelet | sed 's/^/process kubelet /' || true
  pgrep -x containerd | sed 's/^/process containerd /' || true
  pgrep -x containerd-shim | sed 's/^/process shim /' || true
  ls -d /sys/fs/cgroup/*/kubepods 2>/dev/null | sed 's/^/cgroup /' || true
  grep -E ' (/[^ ]*(kubelet|containerd)[^ ]*) ' /proc/self/mountinfo | awk '{print "mount " $5}' || true
  ip link show "$BRIDGE" >/dev/null 2>&1 && echo "bridge $BRIDGE"
  ip route show type unreachable | grep -q "^unreachable $POD_RANGE" && echo "route unreachable $POD_RANGE"
  [[ -n $dir && -d $dir ]] && echo "folder $dir"
  # The Service range's unreachable route (while a control plane runs, it holds it).
  bash "$HERE/control-plane.sh" range-check || true
  return 0
}

stop() {
  local dir=$1
  [[ -d $dir ]] || { log "no $dir"; return 0; }
  dir=$(cd "$dir" && pwd)
  exec 9>"$LOCK"
  flock 9
  local t0=$SECONDS
  local bin kc sock
  bin=$(cat "$dir/bin" 2>/dev/null || echo "")
  kc=$dir/cp/kubeconfig
  sock=$dir/containerd/containerd.sock

  # 1. Workloads, while the kubelet still runs, so it stops their containers and unmounts volumes.
  if [[ -n $bin ]] && alive "$dir/pids/kubelet.pid" && [[ -s $kc ]]; then
    local k=("$bin/kubectl" --kubeconfig "$kc" --request-timeout=10s)
    "${k[@]}" delete deploy,statefulset,rs,job,daemonset --all -A --wait=false >/dev/null 2>&1 || true
    "${k[@]}" delete pods --all -A --grace-period=1 --wait=false >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
      [[ -z $("${k[@]}" get pods -A -o name 2>/dev/null) ]] && break
      sleep 0.5
    done
    # The kubelet stops the sandboxes of deleted pods shortly after; what remains is killed below.
    for _ in $(seq 1 10); do
      [[ -z $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
  # Whatever the kubelet did not stop.
  if alive "$dir/pids/containerd.pid"; then
    local t
    for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks rm -f "$t" >/dev/null 2>&1 || true
    done
  fi

  log "workloads gone ($((SECONDS - t0))s)"
  # 2. The processes.
  stop_pid "$dir/pids/kubelet.pid"
  stop_pid "$dir/pids/kube-scheduler.pid"
  stop_pid "$dir/pids/containerd.pid"
  # Shims outlive containerd; ours name our socket or state folder on their command line.
  local p cmd
  for p in /proc/[0-9]*; do
    cmd=$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
    [[ $cmd == *containerd-shim* && $cmd == *"$dir/"* ]] && kill -KILL "${p#/proc/}" 2>/dev/null || true
  done
  # What still runs in the pod cgroups: containers whose shim died with a killed run live on,
  # reparented to init, and hold their mounts and cgroups (a cgroup with a process cannot go).
  kill_kubepods
  [[ -d $dir/cp ]] && bash "$HERE/control-plane.sh" stop "$dir/cp" >/dev/null 2>&1 || true
  log "processes stopped ($((SECONDS - t0))s)"

  # 3. Mounts under DIR (volumes, rootfs, netns, shm), deepest first.
  local m
  for _ in 1 2 3; do
    mapfile -t mounts < <(awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
    ((${#mounts[@]})) || break
    for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  done

  # 4. Pod cgroups, deepest first (their processes were killed above, so they are empty).
  local cg
  for cg in /sys/fs/cgroup/*/kubepods; do
    [[ -d $cg ]] || continue
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done

  # 5. Network: the bridge (veth ends went with the pods' namespaces), the pod range's route.
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
  ip route del unreachable "$POD_RANGE" 2>/dev/null || true

  # 6. Host paths the kubelet and libcni created; the sysctls the kubelet changed.
  if [[ -s $dir/created ]]; then
    while read -r p; do [[ -n $p ]] && rm -rf "$p"; done <"$dir/created"
  fi
  if [[ -s $dir/sysctls ]]; then
    while IFS= read -r line; do sysctl -qw "$line" >/dev/null || log "could not restore $line"; done <"$dir/sysctls"
  fi

  local left
  # Other owners' processes, and the Service range's route that other control planes may still
  # hold, are not ours to judge; mounts, cgroups and the bridge are.
  left=$(leftovers | grep -v '^process \(kubelet\|containerd\|shim\) \|^route unreachable 10\.0\.' || true)
  mapfile -t mounts < <(awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo)
  if ((${#mounts[@]})); then
    log "still mounted under $dir: ${mounts[*]} (folder kept)"
    return 1
  fi
  rm -rf "$dir"
  if [[ -n $left ]]; then
    log "left behind: $left"
    return 1
  fi
  log "stopped in $((SECONDS - t0))s; nothing left"
}

case ${1:-} in
  start) [[ $# -eq 2 ]] || die "usage: $0 start DIR"; start "$2" ;;
  stop) [[ $# -eq 2 ]] || die "usage: $0 stop DIR"; stop "$2" ;;
  check)
    out=$(leftovers)
    [[ -z $out ]] && { log "nothing left"; exit 0; }
    echo "$out"
    exit 1
    ;;
  *) die "usage: $0 {start DIR|stop DIR|check}" ;;
esac
