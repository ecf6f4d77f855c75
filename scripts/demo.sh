#!/usr/bin/env bash
# The main job: a local demo of the whole flow on a real one-node cluster, cleaned up on exit/Ctrl-C.
#
#   a real node (scripts/node.sh: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#   containerd, runc, kubelet 1.20.2), PostgreSQL, Redis (all ephemeral), images built here
#   → the CRD → `helm install` of the chart: the operator as pods from its image (controller,
#     database mirror, admission webhook), watching the namespace bifrost
#   → a WorkspaceRequirements mirroring Bifrost's database row → a labelled worker Deployment
#   → the controller resolves the content once for the workers' interpreter (Resolved,
#     status.lock, requirements.lock in the ConfigMap snapshot)
#   → real pods: the injected init containers install the lock (hash-checked), the worker
#     starts, `kubectl exec` imports the packages
#   → `requirements add pandas` → the rolling update → the new pod imports real pandas and numpy.
#
# Packages come from a local PEP 503 index served on the node's bridge address (10.244.0.1, the
# only host address pods can reach): wheels built here, and real numpy and pandas wheels that
# scripts/real-packages.sh downloads once from the public index into ~/.cache.
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole run under the egress audit: every packet for a cluster address (the Service range,
# the pod range) that would leave the machine is dropped and counted, and a count above zero
# fails the run (scripts/lib/egress-audit.sh).
if [[ -z ${BIFROST_EGRESS_AUDITED:-} ]]; then
  export BIFROST_EGRESS_AUDITED=1
  exec bash scripts/lib/egress-audit.sh bash scripts/demo.sh "$@"
fi
ROOT=$PWD

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

bash scripts/setup.sh
bold "building bifrost-requirements"
cargo build --locked --quiet
BIN="$ROOT/target/debug/bifrost-requirements"
K8S_BIN=$(bash scripts/k8s-binaries.sh | tail -n 1)
KUBECTL="$K8S_BIN/kubectl"; [ -x "$KUBECTL" ] || KUBECTL=kubectl
export KUBECTL
bold "images for the node (built here, cached in ~/.cache: the operator image as the Dockerfile's final stage, a python3 worker, pause)"
IMAGES=$(bash scripts/node-images.sh all | tail -n 1)
# shellcheck disable=SC1091
. "$IMAGES/images.env"
note "$OPERATOR_IMAGE, $WORKER_IMAGE, $PAUSE_IMAGE"

# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh
services_init
NODE_DIR="$SERVICES_DIR/node"
HOST_IP=10.244.0.1
cleanup_all() {
  # The node first: its workloads are deleted while the kubelet runs, then everything it made.
  [ -d "$NODE_DIR" ] && bash scripts/node.sh stop "$NODE_DIR" || true
  services_cleanup
}
trap cleanup_all EXIT

bold "starting a real node (control plane, kube-scheduler, containerd, bridge CNI, kubelet 1.20.2)"
bash scripts/node.sh start "$NODE_DIR" >/dev/null
export KUBECONFIG="$NODE_DIR/cp/kubeconfig"
k() { "$KUBECTL" "$@"; }
k version --short 2>/dev/null | sed 's/^/   /' || true
k get nodes -o wide | sed 's/^/   /'

bold "starting PostgreSQL and Redis on free ports (on the bridge address too: the operator and the install containers are pods)"
PG_HOST=$HOST_IP start_postgres
REDIS_BIND="127.0.0.1 $HOST_IP" REDIS_HOST=$HOST_IP start_redis
export DATABASE_URL REDIS_URL
note "DATABASE_URL=$(echo "$DATABASE_URL" | sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#')"
note "REDIS_URL=$REDIS_URL"

bold "a local package index (wheels built here: bifrost-hello 1.0; real numpy and pandas, downloaded once)"
INDEX_REAL_SET=small BIND_HOST=$HOST_IP start_package_index
PANDAS=$(grep -E '^pandas==' "$(bash scripts/real-packages.sh small | tail -n 1)/requirements.txt")
note "index: $INDEX_URL"

bold "Bifrost's database: migrate, then a package install (requirements add bifrost-hello==1.0)"
"$BIN" migrate
"$BIN" requirements add bifrost-hello==1.0

bold "kubectl apply --server-side -f crds/"
k apply --server-side -f crds/ | sed 's/^/   /'
k create namespace bifrost >/dev/null
k -n bifrost create secret generic bifrost-db --from-literal=url="$DATABASE_URL" >/dev/null
k -n bifrost create secret generic bifrost-redis --from-literal=url="$REDIS_URL" >/dev/null

bold "helm install: the operator as a pod, from its image, watching the namespace bifrost"
note "the README's command, plus -f charts/bifrost-requirements/ci/node-values.yaml (this node only)"
note "and the demo's local index as the one index the operator may resolve against"
helm install bifrost-requirements charts/bifrost-requirements \
  --namespace bifrost-system --create-namespace \
  --set watchNamespace=bifrost \
  -f charts/bifrost-requirements/ci/node-values.yaml \
  --set-string "resolver.indexUrls[0]=$INDEX_URL" >"$SERVICES_DIR/helm-install.log"
sed -n '1,6p' "$SERVICES_DIR/helm-install.log" | sed 's/^/   /'
k -n bifrost-system rollout status deploy/bifrost-requirements --timeout=180s | sed 's/^/   /' \
  || { k -n bifrost-system get pods -o wide; k -n bifrost-system logs deploy/bifrost-requirements --tail=30; die "the operator did not become Ready"; }
for _ in $(seq 1 150); do
  [ -n "$(k get mutatingwebhookconfiguration bifrost-requirements -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ] && break
  sleep 0.2
done
[ -n "$(k get mutatingwebhookconfiguration bifrost-requirements -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ] \
  || { k -n bifrost-system logs deploy/bifrost-requirements --tail=30; die "the operator did not install its CA into the webhook configuration"; }
k -n bifrost-system get pods -o wide | sed 's/^/   /'
note "leader: $(k -n bifrost-system get lease bifrost-requirements-operator -o jsonpath='{.spec.holderIdentity}')"
note "webhook: Service bifrost-system/bifrost-requirements-webhook, called at its endpoints (self-managed CA, caBundle patched)"
note "resolver: the bundled uv in the operator pod, against $INDEX_URL only"

bold "a WorkspaceRequirements mirroring the database row, and a labelled worker Deployment (shaped like Bifrost's)"
k apply -f - <<EOF | sed 's/^/   /'
apiVersion: bifrost.io/v1alpha1
kind: WorkspaceRequirements
metadata: {name: default, namespace: bifrost}
spec:
  source:
    database: {urlSecretRef: {name: bifrost-db, key: url}}
  cache:
    redis: {urlSecretRef: {name: bifrost-redis, key: url}}
  install:
    indexUrls: ["$INDEX_URL"]
    python: {version: "3.11", platform: x86_64-manylinux_2_28}  # the worker image's python3
  rollout: {debounceSeconds: 2}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker, namespace: bifrost}
spec:
  replicas: 1
  selector: {matchLabels: {app: worker}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}
  template:
    metadata:
      labels: {app: worker, bifrost.io/requirements: default}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      securityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000, runAsNonRoot: true}
      volumes: [{name: home, emptyDir: {}}, {name: tmp, emptyDir: {}}]
      containers:
        - name: worker
          image: $WORKER_IMAGE
          imagePullPolicy: Never
          command: ["python3", "-c", "import time\nwhile True: time.sleep(3600)"]
          env: [{name: HOME, value: /home/bifrost}, {name: PYTHONPATH, value: /app}]
          securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}
          volumeMounts: [{name: home, mountPath: /home/bifrost}, {name: tmp, mountPath: /tmp}]
EOF
k -n bifrost wait --for=condition=Ready wsreq/default --timeout=90s >/dev/null \
  || { k -n bifrost get wsreq default -o yaml; die "the resource did not become Ready"; }

rollout_hash() { k -n bifrost get deploy worker -o jsonpath='{.spec.template.metadata.annotations.bifrost\.io/requirements-hash}'; }
wait_hash() { # hash
  for _ in $(seq 1 150); do [ "$(rollout_hash)" = "$1" ] && return 0; sleep 0.2; done
  die "the Deployment did not get hash $1"
}
HASH1=$(k -n bifrost get wsreq default -o jsonpath='{.status.contentHash}')
wait_hash "$HASH1"

bold "kubectl get wsreq -n bifrost"
k -n bifrost get wsreq | sed 's/^/   /'
bold "status conditions (Resolved: the controller's lock of this content)"
k -n bifrost get wsreq default -o json | python3 scripts/lib/show.py status
bold "the lock in the ConfigMap snapshot (kubectl get cm default-requirements, requirements.lock)"
k -n bifrost get cm default-requirements -o jsonpath='{.data.requirements\.lock}' | sed 's/^/   /'
running_pod() { # hash -> name of the one Running, ready, injected pod of that hash, once the others are gone
  k -n bifrost get pods -l app=worker -o json | python3 scripts/lib/show.py running-pod "$1"
}
wait_pod() {
  local p=""
  for _ in $(seq 1 600); do p=$(running_pod "$1"); [ -n "$p" ] && { echo "$p"; return 0; }; sleep 0.2; done
  k -n bifrost get pods -o wide >&2
  die "no Running pod injected for hash $1"
}
imports() { # pod module
  k -n bifrost exec "$1" -c worker -- python3 -c "import $2, os; print('   $1 (uid', os.getuid(), 'read-only /usr:', not os.access('/usr', os.W_OK), ') imports', $2.__name__, 'from', $2.__file__)"
}
POD=$(wait_pod "$HASH1")
bold "the worker pod, injected by the webhook and Running ($POD)"
k -n bifrost get pods -o wide | sed 's/^/   /'
k -n bifrost get pod "$POD" -o json | python3 scripts/lib/show.py pod
bold "the install container's log (kubectl logs $POD -c bifrost-requirements-install)"
k -n bifrost logs "$POD" -c bifrost-requirements-install | tee "$SERVICES_DIR/install.log" | sed 's/^/   /'
grep -q "as locked (hash-checked)" "$SERVICES_DIR/install.log" || die "the install container did not install from the lock"
bold "kubectl exec: the worker imports the package"
imports "$POD" bifrost_hello

bold "the Redis payload Bifrost's workers read"
note "$(redis-cli -u "$REDIS_URL" GET bifrost:requirements:content)"
note "TTL $(redis-cli -u "$REDIS_URL" TTL bifrost:requirements:content) s"

bold "a user installs a real package: requirements add $PANDAS (numpy comes with it)"
"$BIN" requirements add "$PANDAS"
HASH2=$("$BIN" requirements show | python3 -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
note "new hash $HASH2: NOTIFY → mirror → reconcile → Redis + rollout"
wait_hash "$HASH2"
for _ in $(seq 1 150); do
  k -n bifrost get rs -l app=worker -o jsonpath='{range .items[*]}{.spec.template.metadata.annotations.bifrost\.io/requirements-hash}{"\n"}{end}' | grep -q "$HASH2" && break
  sleep 0.2
done
bold "the rollout: ReplicaSets of the worker (the newest carries the new hash)"
k -n bifrost get rs -l app=worker -o json | python3 scripts/lib/show.py replicasets
k -n bifrost get rs -l app=worker -o jsonpath='{.items[*].spec.template.metadata.annotations.bifrost\.io/requirements-hash}' | grep -q "$HASH2" \
  || die "no ReplicaSet with the new hash"

k -n bifrost rollout status deploy/worker --timeout=180s | sed 's/^/   /'
POD2=$(wait_pod "$HASH2")
bold "the rolled pod is Running ($POD2); the old one ($POD) is gone"
k -n bifrost get pods -o wide | sed 's/^/   /'
k -n bifrost get pod "$POD" >/dev/null 2>&1 && die "the old pod $POD is still there"
bold "the new content's lock (status.lock) and how the new pod installed"
k -n bifrost get wsreq default -o json | python3 scripts/lib/show.py lock
k -n bifrost logs "$POD2" -c bifrost-requirements-install | grep -E "installing the lock|installed:" | sed 's/^/   /'
bold "kubectl exec: the new pod imports the new packages"
k -n bifrost exec "$POD2" -c worker -- python3 -c "import numpy, pandas; print('   worker says: pandas', pandas.__version__, 'numpy', numpy.__version__, '->', pandas.Series([1, 2, 3]).sum())"
imports "$POD2" pandas

bold "the operator's log (kubectl logs -n bifrost-system, the leader's last lines)"
k -n bifrost-system logs "$(k -n bifrost-system get lease bifrost-requirements-operator -o jsonpath='{.spec.holderIdentity}')" --tail=5 | sed 's/^/   /' || true
bold "the operator's Events (kubectl get events.events.k8s.io -n bifrost)"
k -n bifrost get events.events.k8s.io -o json | python3 scripts/lib/show.py events

bold "demo finished; stopping everything"
