#!/usr/bin/env bash
# Real packages from the public index for the tests (issue 23, item 5): each set downloaded once
# with the ordinary `pip download`, for the node's worker interpreter (CPython 3.11, x86_64,
# glibc 2.36: Debian 12), and kept under the cache folder; offline afterwards. A set whose folder
# exists is complete (it is written elsewhere and renamed into place), so a cached run only
# prints. tests/common/real_packages.rs runs this when a set is missing and serves the folder as a
# package index (tests/common/real_index.rs).
#
#   scripts/real-packages.sh [SET...]    (default: every set; small automation data-science docopt)
#
# Prints each set's folder on stdout, one a line, in the order asked; progress and sizes go to
# stderr. A folder is `<cache>/real-packages/<set>-<digest>/`: the distributions as pip wrote them
# (flat, one folder per set: `--find-links` takes it as it is), `requirements.txt` (the pinned
# top-level list: what a test stores and locks) and `SHA256SUMS` (every distribution's hash, so an
# index can list hashes without reading 300 MB). The digest covers the pins and pip's flags: a
# changed pin is a new folder, and the set's older folders are removed once the new one is in.
# One folder per set rather than one shared pool: a set's index then offers exactly the closure
# pip chose for it (no newer release of a dependency from another set), as the locks expect.
set -euo pipefail

PY=${PYTHON:-python3}
ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/bifrost-requirements/real-packages

# Top-level pins, exact so the cache is stable; pip pulls in the dependency closure. Chosen as the
# newest releases with cp311 manylinux wheels when the set was made (`uv pip compile --only-binary
# :all: --python-version 3.11 --python-platform x86_64-manylinux_2_28`); python-dateutil is the
# version the automation set's other packages accept (boto3's botocore wants < 3).
declare -A SETS=(
  [small]="numpy==2.4.6 pandas==3.1.2"
  [automation]="requests==2.34.2 pandas==3.1.2 openpyxl==3.1.5 msal==1.39.0 azure-identity==1.27.0
    simple-salesforce==1.12.10 paramiko==5.1.0 beautifulsoup4==4.15.0 lxml==6.2.1 boto3==1.44.18
    jinja2==3.1.6 pydantic==2.14.4 httpx==0.29.0 python-dateutil==2.9.0.post0"
  [data-science]="numpy==2.4.6 scipy==1.17.1 pandas==3.1.2 matplotlib==3.11.2 scikit-learn==1.9.1
    grpcio==1.85.4 pyarrow==26.0.1 opencv-python-headless==5.1.0.95 requests==2.34.2
    openpyxl==3.1.5 lxml==6.2.1 cryptography==51.0.1 pydantic==2.14.4 boto3==1.44.18"
  # A source-only package (the sdist alone, for builds) beside requests' wheels.
  [docopt]="docopt==0.6.2 requests==2.34.2"
)
ORDER=(small automation data-science docopt)
SDIST_ONLY=docopt==0.6.2
# Not requirements but in the folder: what an isolated build of docopt's sdist (no
# pyproject.toml: setuptools' legacy backend) installs first, so it builds from the local index.
declare -A BUILD_DEPS=([docopt]="setuptools==84.2.1 wheel==0.48.0")

# Wheels the worker's interpreter installs and the tests' lock accepts (`--python-platform
# x86_64-manylinux_2_28`): manylinux_2_28 down to 2_5 and the legacy aliases of 2_17, 2_12 and
# 2_5. pip takes each `--platform` literally (no older glibc implied), so each is named. Pure
# `py3-none-any` wheels and `abi3` ones need no flag: pip adds them to any platform's tags.
PLATFORMS=()
for minor in $(seq 28 -1 5); do PLATFORMS+=(--platform "manylinux_2_${minor}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
WHEEL_FLAGS=(--only-binary :all: --python-version 3.11 --implementation cp --abi cp311 "${PLATFORMS[@]}")
PIP=("$PY" -m pip download -q --disable-pip-version-check --no-input --progress-bar off)

die() { echo "real-packages: $*" >&2; exit 1; }

# The set's folder name: its pins and flags, hashed (what pip was asked decides what is there).
folder_of() {
  local name=$1 digest
  digest=$(printf '%s\n' "$name" ${SETS[$name]} "build:" ${BUILD_DEPS[$name]:-} "${WHEEL_FLAGS[@]}" \
    | sha256sum | cut -c1-12)
  echo "$ROOT/$name-$digest"
}

# Download set `name` into `dir` (a fresh temporary folder). Every step says `|| return`: called
# as `download … || die`, the function runs without `set -e`.
download() {
  local name=$1 dir=$2 pins=()
  for pin in ${SETS[$name]} ${BUILD_DEPS[$name]:-}; do
    [[ $pin == "$SDIST_ONLY" ]] || pins+=("$pin")
  done
  if [[ " ${SETS[$name]} " == *" $SDIST_ONLY "* ]]; then
    # `--platform` is refused for sources; docopt has no dependencies, so none are missed.
    "${PIP[@]}" --no-binary :all: --no-deps -d "$dir" "$SDIST_ONLY" || return
  fi
  "${PIP[@]}" "${WHEEL_FLAGS[@]}" -d "$dir" "${pins[@]}" || return
  printf '%s\n' ${SETS[$name]} >"$dir/requirements.txt" || return
  (set -o pipefail && cd "$dir" \
    && find . -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' -o -name '*.zip' \) -printf '%f\n' \
    | LC_ALL=C sort | xargs -r -d '\n' sha256sum >SHA256SUMS) || return
  [[ -s $dir/SHA256SUMS ]] || { echo "real-packages: pip downloaded nothing for '$name'" >&2; return 1; }
}

# Make sure set `name` is in the cache; prints its folder. Callers hold the lock.
ensure() {
  local name=$1 dir tmp started
  [[ -n ${SETS[$name]:-} ]] || die "no set '$name' (sets: ${ORDER[*]})"
  dir=$(folder_of "$name")
  if [[ ! -d $dir ]]; then
    echo "real-packages: downloading '$name' into $dir" >&2
    started=$SECONDS
    tmp=$(mktemp -d "$ROOT/.tmp-$name-XXXXXX")
    download "$name" "$tmp" || { rm -rf "$tmp"; die "pip download of '$name' failed (is the public index reachable?)"; }
    mv -T "$tmp" "$dir"
    echo "real-packages: '$name' downloaded in $((SECONDS - started)) s" >&2
    # Older folders of the set (other pins or flags) are ours and no longer wanted.
    find "$ROOT" -mindepth 1 -maxdepth 1 -type d -name "$name-*" ! -path "$dir" -exec rm -rf {} +
  fi
  printf 'real-packages: %-13s %5s in %3d files  %s\n' "$name" "$(du -sh "$dir" | cut -f1)" \
    "$(wc -l <"$dir/SHA256SUMS")" "$dir" >&2
  echo "$dir"
}

mkdir -p "$ROOT"
# One download at a time (setup and parallel tests may ask at once); a folder left by a killed
# run is removed under the lock, since no other run can be writing it then.
exec 9>"$ROOT/.lock"
flock 9
find "$ROOT" -mindepth 1 -maxdepth 1 -type d -name '.tmp-*' -exec rm -rf {} +
(($#)) || set -- "${ORDER[@]}"
for name in "$@"; do
  ensure "$name"
done
