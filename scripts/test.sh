#!/usr/bin/env bash
# The test command (README quick start, and what CI runs): set-up, lint, then every test against
# real PostgreSQL, Redis, python3/uv/pip and a real Kubernetes control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole run under the egress audit: every packet for a cluster address (the Service range,
# the pod range) that would leave the machine is dropped and counted, and a count above zero
# fails the run (scripts/lib/egress-audit.sh).
if [[ -z ${BIFROST_EGRESS_AUDITED:-} ]]; then
  export BIFROST_EGRESS_AUDITED=1
  exec bash scripts/lib/egress-audit.sh bash scripts/test.sh "$@"
fi

bash scripts/setup.sh
# One build per run: incremental data (tens of GB across rebuilds) only costs time and disk here.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# kube-apiserver/kube-controller-manager: KUBEBUILDER_ASSETS, or built once and cached in ~/.cache.
KUBEBUILDER_ASSETS=$(bash scripts/k8s-binaries.sh | tail -n 1)
export KUBEBUILDER_ASSETS

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --locked --all-targets -- -D warnings
echo "== house rules: no import circle between modules, no Rust file over 700 lines" >&2
python3 scripts/lib/house.py
echo "== cargo check against Kubernetes 1.37's client types (k8s-openapi's newest)" >&2
cargo check --locked --quiet --no-default-features --features k8s-v1_37 --all-targets
echo "== hadolint Dockerfile" >&2
hadolint Dockerfile
echo "== helm lint" >&2
helm lint --strict charts/bifrost-requirements
"${XDG_CACHE_HOME:-$HOME/.cache}/bifrost-requirements/helm4/helm" lint --strict charts/bifrost-requirements
# The Dockerfile's build, without a container engine: the same script, target and flags.
echo "== static (musl) build of the image's binary, and its uv" >&2
bash scripts/build-static.sh all >/dev/null
echo "== cargo test" >&2
cargo test --locked --all-targets -- --test-threads="${TEST_THREADS:-4}"
