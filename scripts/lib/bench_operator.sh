# shellcheck shell=bash
# scripts/bench-node.sh --operator: the operator as its users run it. Sourced by bench-node.sh
# once its node, Redis and local index run (before any host operator starts); uses its `k`,
# `log`, `die`, `pod_yaml`, $SERVICES_DIR, $NODE_DIR, $REDIS_URL, $INDEX_PORT, $HOST_IP.
# Prints, median of N installs: `helm install` → operator Ready (both replicas, caBundle in) →
# the first labelled worker pod Running (injected); then the leader pod's RSS with 1 and with
# 1,001 WorkspaceRequirements in its namespace (goal: <= 40 MiB).

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{$(now) - float(sys.argv[1]):.3f}')" "$1"; }

# The RSS of an operator pod's container process, read on the host from its PID (containerd).
pod_rss_mib() { # pod
  local id pid
  id=$(k -n bench-system get pod "$1" -o jsonpath='{.status.containerStatuses[0].containerID}')
  id=${id#containerd://}
  pid=$(ctr -a "$NODE_DIR/containerd/containerd.sock" -n k8s.io tasks ls | awk -v id="$id" '$1 == id {print $2}')
  [ -n "$pid" ] || die "no task for container $id of $1"
  awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status"
}

install_once() { # run -> "ready_seconds first_worker_seconds"
  local t ready first
  k -n bench delete wsreq --all --wait=true >/dev/null 2>&1 || true
  k -n bench delete pod --all --grace-period=0 --wait=true >/dev/null 2>&1 || true
  t=$(now)
  helm install bench charts/bifrost-requirements --namespace bench-system --create-namespace \
    --set watchNamespace=bench -f charts/bifrost-requirements/ci/node-values.yaml \
    --set resolver.enabled=false >/dev/null
  k -n bench-system rollout status deploy/bench-bifrost-requirements --timeout=180s >/dev/null \
    || die "operator not Ready"
  until [ -n "$(k get mutatingwebhookconfiguration bench-bifrost-requirements -o jsonpath='{.webhooks[0].clientConfig.caBundle}' 2>/dev/null)" ]; do sleep 0.05; done
  ready=$(since "$t")
  k -n bench apply -f - >/dev/null <<YAML
apiVersion: bifrost.io/v1alpha1
kind: WorkspaceRequirements
metadata: {name: demo}
spec:
  content: "bifrost-hello==1.0\n"
  cache: {redis: {urlSecretRef: {name: bifrost-redis, key: url}}}
  install: {indexUrls: ["http://$HOST_IP:$INDEX_PORT/"]}
YAML
  pod_yaml "first-$1" demo | k apply -f - >/dev/null
  for _ in $(seq 1 2400); do
    [ "$(k -n bench get pod "first-$1" -o jsonpath='{.status.phase}')" = Running ] && break
    sleep 0.05
  done
  [ "$(k -n bench get pod "first-$1" -o jsonpath='{.metadata.annotations.bifrost\.io/injected-hash}')" ] \
    || die "first-$1 was not injected"
  first=$(since "$t")
  echo "$ready $first"
}

bench_operator() { # n
  local n=$1 i readies=() firsts=() r
  for i in $(seq 1 "$n"); do
    read -r ready first < <(install_once "$i")
    readies+=("$ready")
    firsts+=("$first")
    log "install $i: operator Ready $ready s, first injected worker Running $first s"
    [ "$i" = "$n" ] && break
    helm uninstall bench --namespace bench-system >/dev/null
    k delete namespace bench-system --wait=true >/dev/null
  done
  local leader rss1 rss1001
  leader=$(k -n bench-system get lease bench-bifrost-requirements-operator -o jsonpath='{.spec.holderIdentity}')
  sleep 5
  rss1=$(pod_rss_mib "$leader")
  log "creating 1,000 more WorkspaceRequirements"
  for i in $(seq 1 1000); do
    printf -- '---\napiVersion: bifrost.io/v1alpha1\nkind: WorkspaceRequirements\nmetadata: {name: r%04d}\nspec: {content: "bifrost-hello==1.0\\n"}\n' "$i"
  done >"$SERVICES_DIR/many.yaml"
  k -n bench apply -f "$SERVICES_DIR/many.yaml" >/dev/null
  # Until the controller has looked at every one of them (each gets a status).
  local seen=0
  for _ in $(seq 1 180); do
    seen=$(k -n bench get wsreq -o jsonpath='{range .items[*]}{.status.contentHash}{"\n"}{end}' | grep -c . || true)
    [ "$seen" -ge 1001 ] && break
    sleep 1
  done
  log "$seen of 1,001 resources have a status"
  sleep 10
  rss1001=$(pod_rss_mib "$leader")
  python3 - "$n" "${readies[*]}" "${firsts[*]}" "$rss1" "$rss1001" <<'PY'
import statistics, sys
n, readies, firsts, rss1, rss1001 = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
med = lambda v: statistics.median(map(float, v.split()))
print(f"the operator as a pod (the chart, 2 replicas), median of {n} installs:")
print(f"  helm install -> operator Ready (both replicas, caBundle in): {med(readies):.1f} s  ({readies})")
print(f"  helm install -> first labelled worker Running, injected:    {med(firsts):.1f} s  ({firsts})")
print(f"leader pod RSS: {rss1:.1f} MiB with 1 resource, {rss1001:.1f} MiB with 1,001 (goal <= 40 MiB)")
PY
}
