#!/usr/bin/env bash
# The static (musl) build of the container image, as one script that both the Dockerfile and CI
# run, so the image's build cannot silently rot where no container engine exists.
#
#   scripts/build-static.sh [binary]  cargo build --release --target x86_64-unknown-linux-musl,
#                                     stripped; check it is static and runs `--version`
#   scripts/build-static.sh uv        fetch the static uv (PyPI's musllinux wheel of uv holds a
#                                     static binary), check it is static and runs `--version`
#   scripts/build-static.sh all       both, then check the image layout: `bootstrap` (the injected
#                                     init container's command) copies both (scripts/test.sh)
#
# Results land in target/static/ (`bifrost-requirements`, `uv`), which is what the Dockerfile
# copies to /usr/local/bin/. Incremental: cargo reuses target/, and a uv of the right version is
# not downloaded again. The last line of stdout is the folder target/static.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
UV_VERSION=0.13.8
UV_PLATFORM=musllinux_1_1_x86_64
OUT=target/static

log() { echo "build-static: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# Static: `file` says "statically linked" (or "static-pie linked") and ldd resolves no library.
check_static() { # path
  local desc
  command -v file >/dev/null || die "\`file\` not found (apt-get install file)"
  desc=$(file -b "$1")
  case $desc in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) die "$1 is not static: $desc" ;;
  esac
  if command -v ldd >/dev/null && ldd "$1" 2>&1 | grep -q '=>'; then
    die "$1 links shared libraries: $(ldd "$1" 2>&1 | tr '\n' ' ')"
  fi
  log "$1: $desc"
}

build_binary() {
  command -v musl-gcc >/dev/null || die "musl-gcc not found: apt-get install musl-tools (scripts/setup.sh does)"
  if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET" >&2
  fi
  # ring's C and assembly parts are compiled for musl by musl-gcc; the release profile, with
  # symbols stripped (the bootstrap init container copies this file into every injected pod).
  CC_x86_64_unknown_linux_musl=musl-gcc CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --locked --release --target "$TARGET" --bin bifrost-requirements >&2
  local bin=target/$TARGET/release/bifrost-requirements
  check_static "$bin"
  local version expected
  version=$("$bin" --version)
  expected="bifrost-requirements $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
  [[ $version == "$expected" ]] || die "$bin --version printed '$version', expected '$expected'"
  log "$bin --version: $version"
  mkdir -p "$OUT"
  # cp + mv: never leave a half-written file where the Dockerfile or a test looks.
  cp "$bin" "$OUT/.bifrost-requirements.tmp"
  mv -f "$OUT/.bifrost-requirements.tmp" "$OUT/bifrost-requirements"
}

fetch_uv() {
  if [[ -x $OUT/uv ]] && [[ $("$OUT/uv" --version 2>/dev/null) == "uv $UV_VERSION "* ]]; then
    log "$OUT/uv is uv $UV_VERSION already"
  else
    local py=${PYTHON:-python3} tmp
    tmp=$(mktemp -d)
    "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
      --platform "$UV_PLATFORM" --dest "$tmp" "uv==$UV_VERSION" >&2
    "$py" -m zipfile -e "$tmp"/uv-"$UV_VERSION"-*.whl "$tmp/wheel"
    mkdir -p "$OUT"
    cp "$tmp/wheel/uv-$UV_VERSION.data/scripts/uv" "$OUT/.uv.tmp"
    chmod 0755 "$OUT/.uv.tmp"
    mv -f "$OUT/.uv.tmp" "$OUT/uv"
    rm -rf "$tmp"
  fi
  check_static "$OUT/uv"
  local version
  version=$("$OUT/uv" --version)
  [[ $version == "uv $UV_VERSION "* ]] || die "$OUT/uv --version printed '$version'"
  log "$OUT/uv --version: $version"
}

# The image's layout (uv next to the binary, as in /usr/local/bin): the bootstrap init
# container's command copies both, and the copies run.
check_layout() {
  local tmp
  tmp=$(mktemp -d)
  "$OUT/bifrost-requirements" bootstrap --to "$tmp/bin" >&2
  "$tmp/bin/bifrost-requirements" --version >/dev/null
  "$tmp/bin/uv" --version >/dev/null
  rm -rf "$tmp"
  log "bootstrap from $OUT copies a working bifrost-requirements and uv"
}

case ${1:-binary} in
  binary) build_binary ;;
  uv) fetch_uv ;;
  all)
    build_binary
    fetch_uv
    check_layout
    ;;
  *)
    echo "usage: $0 [binary|uv|all]" >&2
    exit 2
    ;;
esac
echo "$OUT"
