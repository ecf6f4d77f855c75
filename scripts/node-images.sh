#!/usr/bin/env bash
# The node's container images, built here without any registry or container engine, cached as
# docker archives under ~/.cache/bifrost-requirements/images (scripts/node.sh imports them into
# its containerd; pods use them with imagePullPolicy: Never).
#
#   node-images.sh operator   localhost/bifrost-requirements:<version>: the Dockerfile's final stage
#                             rebuilt here: distroless/python3-debian12 is Debian 12's python3 with
#                             no shell and the nonroot user (65532), so the image is the worker's
#                             debootstrap rootfs (Debian 12's python3) without shells or pip, a
#                             `nonroot` user and /home/nonroot, plus scripts/build-static.sh's
#                             static binary at /usr/local/bin/bifrost-requirements and static uv
#                             next to it; uid 65532. The operator runs from it as a pod (the chart)
#                             and its resolver's uv queries that python3
#   node-images.sh worker     localhost/bifrost-worker:bookworm: Debian's python3 and pip from
#                             `debootstrap --variant=minbase` (trimmed), standing in for Bifrost's
#                             worker image
#   node-images.sh worker-app localhost/bifrost-worker:app: the worker plus what Bifrost's own image
#                             does to it (python:3.x-slim + its Dockerfile): ENV PYTHONPATH=/app, a
#                             package in /app (bifrost_app, `python -m bifrost_app`), WORKDIR /app,
#                             `python` on PATH, no PEP 668 EXTERNALLY-MANAGED marker (so its own
#                             `pip install -r` runs, as in Bifrost's worker)
#   node-images.sh pause      localhost/pause:3.2: build/pause/linux/pause.c of the Kubernetes
#                             source, built with musl-gcc -static
#   node-images.sh all        the four (default)
#
# Each archive is rebuilt only when its inputs change (the operator's: the two static binaries).
# The last line of stdout is the cache folder; `images.env` there names the archives and tags.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/bifrost-requirements
IMAGES=$CACHE/images
K8S_SRC=$CACHE/k8s-1.20.2/src
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
OPERATOR_TAG=localhost/bifrost-requirements:$VERSION
WORKER_TAG=localhost/bifrost-worker:bookworm
WORKER_APP_TAG=localhost/bifrost-worker:app
PAUSE_TAG=localhost/pause:3.2
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { echo "node-images: $*" >&2; }
die() {
  log "$*"
  exit 1
}

need() {
  local missing=() p
  for p in umoci skopeo debootstrap musl-gcc; do
    command -v "$p" >/dev/null || missing+=("$p")
  done
  ((${#missing[@]} == 0)) || die "missing ${missing[*]}: run scripts/setup.sh"
}

mkdir -p "$IMAGES"
exec 8>"$IMAGES/.lock"
flock 8

# An OCI layout holding one image whose single layer is the folder $2; then a docker archive.
# umoci + skopeo, so no daemon and no registry are involved.
pack() { # tag, rootfs folder, archive, umoci config args...
  local tag=$1 rootfs=$2 out=$3
  shift 3
  local tmp
  tmp=$(mktemp -d "$IMAGES/.build.XXXXXX")
  umoci init --layout "$tmp/oci"
  umoci new --image "$tmp/oci:img"
  umoci unpack --image "$tmp/oci:img" "$tmp/bundle" >/dev/null
  cp -a "$rootfs/." "$tmp/bundle/rootfs/"
  umoci repack --image "$tmp/oci:img" "$tmp/bundle"
  umoci config --image "$tmp/oci:img" "$@"
  rm -f "$out.tmp"
  skopeo copy --quiet "oci:$tmp/oci:img" "docker-archive:$out.tmp:$tag" >&2
  mv -f "$out.tmp" "$out"
  rm -rf "$tmp"
}

operator() { # needs WORKER_ARCHIVE (the rootfs it starts from)
  local static
  static=$(bash scripts/build-static.sh all | tail -n1)
  local key
  key=$( (basename "$WORKER_ARCHIVE" && cat "$static/bifrost-requirements" "$static/uv") | sha256sum | cut -c1-16)
  local out=$IMAGES/operator-$VERSION-$key.tar
  if [[ ! -s $out ]]; then
    log "building $OPERATOR_TAG ($key)"
    local tmp rootfs
    tmp=$(mktemp -d "$IMAGES/.build.XXXXXX")
    skopeo copy --quiet "docker-archive:$WORKER_ARCHIVE" "oci:$tmp/oci:img" >&2
    umoci unpack --image "$tmp/oci:img" "$tmp/bundle" >/dev/null
    rootfs=$tmp/bundle/rootfs
    # distroless: no shell, no pip; python3, its standard library and the nonroot user stay.
    rm -f "$rootfs"/bin/sh "$rootfs"/bin/dash "$rootfs"/bin/bash "$rootfs"/usr/bin/sh \
      "$rootfs"/usr/bin/dash "$rootfs"/usr/bin/bash
    rm -rf "$rootfs"/usr/lib/python3/dist-packages/pip "$rootfs"/usr/bin/pip*
    echo "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" >>"$rootfs/etc/passwd"
    echo "nonroot:x:65532:" >>"$rootfs/etc/group"
    install -d -m 0700 -o 65532 -g 65532 "$rootfs/home/nonroot"
    install -D -m 0755 "$static/bifrost-requirements" "$rootfs/usr/local/bin/bifrost-requirements"
    install -D -m 0755 "$static/uv" "$rootfs/usr/local/bin/uv"
    umoci repack --image "$tmp/oci:img" "$tmp/bundle"
    umoci config --image "$tmp/oci:img" \
      --config.user 65532:65532 \
      --config.entrypoint /usr/local/bin/bifrost-requirements \
      --config.cmd operator \
      --config.exposedports 8080/tcp --config.exposedports 8443/tcp
    rm -f "$out.tmp"
    skopeo copy --quiet "oci:$tmp/oci:img" "docker-archive:$out.tmp:$OPERATOR_TAG" >&2
    mv -f "$out.tmp" "$out"
    rm -rf "$tmp"
    find "$IMAGES" -maxdepth 1 -name "operator-*.tar" ! -name "$(basename "$out")" -delete
  fi
  echo "OPERATOR_IMAGE=$OPERATOR_TAG" >"$IMAGES/operator.env"
  echo "OPERATOR_ARCHIVE=$out" >>"$IMAGES/operator.env"
}

worker() {
  local out=$IMAGES/worker-bookworm-pip.tar
  if [[ ! -s $out ]]; then
    log "building $WORKER_TAG (debootstrap --variant=minbase --include=python3,python3-pip bookworm, ~2 min)"
    local root
    root=$(mktemp -d "$IMAGES/.root.XXXXXX")
    debootstrap --variant=minbase --include=python3,python3-pip bookworm "$root" "$MIRROR" >"$IMAGES/debootstrap.log" 2>&1 \
      || { tail -n 20 "$IMAGES/debootstrap.log" >&2; rm -rf "$root"; die "debootstrap failed"; }
    # A worker image, not a system: no package manager state, docs or caches.
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
      "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
      "$root"/var/log/* "$root"/proc/* "$root"/sys/* "$root"/dev/*
    find "$root/usr/lib/python3" -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
    pack "$WORKER_TAG" "$root" "$out" --config.cmd python3 --config.env LANG=C.UTF-8
    rm -rf "$root"
  fi
  echo "WORKER_IMAGE=$WORKER_TAG" >"$IMAGES/worker.env"
  echo "WORKER_ARCHIVE=$out" >>"$IMAGES/worker.env"
}

# /app of the worker-app image: a package that stands in for Bifrost's /app/bifrost (found
# only through the image's ENV PYTHONPATH=/app).
app_files() { # dir
  mkdir -p "$1/bifrost_app"
  cat >"$1/bifrost_app/__init__.py" <<'PY'
"""Stands in for Bifrost's /app/bifrost: importable only through the image's PYTHONPATH=/app."""
WHERE = "app"
PY
  cat >"$1/bifrost_app/__main__.py" <<'PY'
"""python -m bifrost_app [MODULE...]: imports each module and prints its VERSION, as Bifrost's
python -m bifrost runs code that imports the user's packages."""
import importlib
import sys

print("bifrost_app", *(f"{m}={importlib.import_module(m).VERSION}" for m in sys.argv[1:]))
PY
}

# The worker image plus one layer: Bifrost's additions (see the usage above).
worker_app() {
  local tmp key out
  tmp=$(mktemp -d "$IMAGES/.build.XXXXXX")
  app_files "$tmp/app"
  key=$( (basename "$WORKER_ARCHIVE" && cat "$tmp/app/bifrost_app/"*.py) | sha256sum | cut -c1-16)
  out=$IMAGES/worker-app-$key.tar
  if [[ ! -s $out ]]; then
    log "building $WORKER_APP_TAG ($key)"
    skopeo copy --quiet "docker-archive:$WORKER_ARCHIVE" "oci:$tmp/oci:img" >&2
    umoci unpack --image "$tmp/oci:img" "$tmp/bundle" >/dev/null
    local rootfs=$tmp/bundle/rootfs
    cp -a "$tmp/app" "$rootfs/app"
    # python:3.x-slim has `python` and no EXTERNALLY-MANAGED (Debian's python3 refuses a plain
    # `pip install` with it, whatever our injection does).
    ln -sf python3 "$rootfs/usr/bin/python"
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    umoci repack --image "$tmp/oci:img" "$tmp/bundle"
    umoci config --image "$tmp/oci:img" --config.env PYTHONPATH=/app --config.workingdir /app
    rm -f "$out.tmp"
    skopeo copy --quiet "oci:$tmp/oci:img" "docker-archive:$out.tmp:$WORKER_APP_TAG" >&2
    mv -f "$out.tmp" "$out"
    find "$IMAGES" -maxdepth 1 -name "worker-app-*.tar" ! -name "$(basename "$out")" -delete
  fi
  rm -rf "$tmp"
  echo "WORKER_APP_IMAGE=$WORKER_APP_TAG" >"$IMAGES/worker-app.env"
  echo "WORKER_APP_ARCHIVE=$out" >>"$IMAGES/worker-app.env"
}

pause() {
  local out=$IMAGES/pause-3.2.tar
  if [[ ! -s $out ]]; then
    local src=$K8S_SRC/pause.c
    if [[ ! -s $src ]]; then
      # Only the one file is needed from the source package k8s-binaries.sh builds from.
      log "fetching build/pause/linux/pause.c from Debian's kubernetes source package"
      local tmp
      tmp=$(mktemp -d)
      (cd "$tmp" && apt-get source --download-only -qq kubernetes >&2)
      mkdir -p "$K8S_SRC"
      tar -xOf "$(ls "$tmp"/kubernetes_*.orig.tar.* | head -n1)" --wildcards '*/build/pause/linux/pause.c' >"$src.tmp"
      mv "$src.tmp" "$src"
      rm -rf "$tmp"
    fi
    log "building $PAUSE_TAG (musl-gcc -static pause.c)"
    local root
    root=$(mktemp -d "$IMAGES/.root.XXXXXX")
    musl-gcc -Os -static -DVERSION=v3.2-bifrost -o "$root/pause" "$src"
    strip "$root/pause"
    pack "$PAUSE_TAG" "$root" "$out" --config.user 65535:65535 --config.entrypoint /pause
    rm -rf "$root"
  fi
  echo "PAUSE_IMAGE=$PAUSE_TAG" >"$IMAGES/pause.env"
  echo "PAUSE_ARCHIVE=$out" >>"$IMAGES/pause.env"
}

need
case ${1:-all} in
  operator)
    worker
    # shellcheck disable=SC1091
    . "$IMAGES/worker.env"
    operator
    ;;
  worker) worker ;;
  worker-app)
    worker
    # shellcheck disable=SC1091
    . "$IMAGES/worker.env"
    worker_app
    ;;
  pause) pause ;;
  all)
    pause
    worker
    # shellcheck disable=SC1091
    . "$IMAGES/worker.env"
    worker_app
    operator
    ;;
  *)
    echo "usage: $0 [operator|worker|worker-app|pause|all]" >&2
    exit 2
    ;;
esac
cat "$IMAGES"/*.env >"$IMAGES/images.env" 2>/dev/null || true
echo "$IMAGES"
