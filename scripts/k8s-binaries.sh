#!/usr/bin/env bash
# Provide etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet (and kubectl) for
# tests and the demo (the last two run the node: scripts/node.sh).
#
# The last line of stdout is the folder holding the binaries. Idempotent:
#   - if KUBEBUILDER_ASSETS names a folder with the binaries, print it and stop;
#   - if the cache folder is complete, print it and stop;
#   - otherwise build Kubernetes 1.20.2 once from Debian's `kubernetes` source package (see
#     design.md, "Test environment") into the cache, and print it.
# The build happens in a temporary folder next to the cache and is moved into place only when it
# is complete, so an interrupted build is never taken as done. Needs root for apt-get.
set -euo pipefail

K8S_VERSION=1.20.2
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/bifrost-requirements
DEST=$CACHE/k8s-$K8S_VERSION/bin
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)
MAKE_WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl cmd/kube-scheduler cmd/kubelet"

log() { echo "k8s-binaries: $*" >&2; }

complete() {
  local dir=$1 b
  for b in "${BINARIES[@]}"; do
    [[ -x $dir/$b ]] || return 1
  done
}

if [[ -n ${KUBEBUILDER_ASSETS:-} ]] && complete "$KUBEBUILDER_ASSETS"; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi
if [[ -n ${KUBEBUILDER_ASSETS:-} ]]; then
  log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks some of ${BINARIES[*]}; using the cache"
fi
if complete "$DEST"; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$CACHE"
# One build at a time (parallel test binaries may all call this script).
exec 9>"$CACHE/k8s-$K8S_VERSION.lock"
flock 9
if complete "$DEST"; then
  echo "$DEST"
  exit 0
fi

start=$(date +%s)
log "building Kubernetes $K8S_VERSION from Debian's source package into $DEST (takes ~10 minutes)"

# --- system packages -------------------------------------------------------------------------
SRC_LIST=/etc/apt/sources.list.d/bifrost-deb-src.sources
has_source() { apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes'; }
need_update=0
if ! has_source; then
  if [[ ! -e $SRC_LIST ]]; then
    log "adding $SRC_LIST"
    cat >"$SRC_LIST" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  need_update=1
fi
PACKAGES=(etcd-server golang-go rsync jq dpkg-dev golang-github-modern-go-reflect2-dev openssl)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
export DEBIAN_FRONTEND=noninteractive
# apt may be busy (scripts/setup.sh running at the same time): wait for its locks.
APT_OPTS=(-o DPkg::Lock::Timeout=600)
if ((need_update)) || ((${#missing[@]})); then
  apt-get "${APT_OPTS[@]}" update -qq >&2
fi
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# --- source ----------------------------------------------------------------------------------
# Left-overs of builds that were killed before their EXIT trap ran (we hold the lock).
for stale in "$CACHE"/k8s-build.*; do
  [[ -d $stale ]] || continue
  log "removing stale $stale"
  chmod -R u+w "$stale" 2>/dev/null || true
  rm -rf "$stale"
done
WORK=$(mktemp -d "$CACHE/k8s-build.XXXXXX")
cleanup() { chmod -R u+w "$WORK" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
log "apt-get source kubernetes (in $WORK)"
apt-get source -qq kubernetes >&2
SRC=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
[[ -n $SRC && -d $SRC/cmd/kube-apiserver ]] || { log "no kubernetes source tree in $WORK"; exit 1; }

# reflect2 v1.0.1 makes Go >= 1.18 builds segfault on the first custom resource stored.
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
[[ -d $REFLECT2 ]] || { log "missing $REFLECT2 (golang-github-modern-go-reflect2-dev)"; exit 1; }
rm -rf "$SRC/vendor/github.com/modern-go/reflect2"
cp -rL "$REFLECT2" "$SRC/vendor/github.com/modern-go/reflect2"
rm -f "$SRC/vendor/github.com/modern-go/reflect2/go.mod"

# --- build -----------------------------------------------------------------------------------
cd "$SRC"
mkdir -p .go/src/k8s.io
ln -sfn "$SRC" .go/src/k8s.io/kubernetes
export GOPATH=$SRC/.go CGO_ENABLED=0
log "make WHAT=\"$MAKE_WHAT\""
(cd .go/src/k8s.io/kubernetes && make WHAT="$MAKE_WHAT") >&2

OUT=$SRC/_output/local/bin/linux/amd64
[[ -d $OUT ]] || OUT=$(dirname "$(find "$SRC/_output" -type f -name kube-apiserver | head -n1)")
STAGE=$WORK/bin
mkdir -p "$STAGE"
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
  if [[ -x $OUT/$b ]]; then
    cp "$OUT/$b" "$STAGE/$b"
  elif [[ $b != kubectl ]]; then
    log "build produced no $b"; exit 1
  fi
done
cp "$(command -v etcd || echo /usr/bin/etcd)" "$STAGE/etcd"
complete "$STAGE"
# The node's pause image is built from this source tree's pause.c (scripts/node-images.sh).
mkdir -p "$CACHE/k8s-$K8S_VERSION/src"
cp "$SRC/build/pause/linux/pause.c" "$CACHE/k8s-$K8S_VERSION/src/pause.c"

# File by file, each replaced atomically: a cache that lacked only the node's binaries may be in
# use by running tests while it is completed.
mkdir -p "$DEST"
for f in "$STAGE"/*; do
  cp "$f" "$DEST/.$(basename "$f").tmp"
  mv -f "$DEST/.$(basename "$f").tmp" "$DEST/$(basename "$f")"
done
log "done in $(($(date +%s) - start))s: $DEST"
echo "$DEST"
