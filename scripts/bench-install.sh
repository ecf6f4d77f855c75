#!/usr/bin/env bash
# Benchmark of `bifrost-requirements install` against Bifrost's own start-up install
# (`python3 -m pip install -r`), on the 12-package set of issue 3, from a local wheelhouse (no
# network during the measurements). Not a test: it prints medians and ratios.
#
#   (a) Bifrost's way: python3 -m pip install -q -r req.txt into a fresh target (compiles .pyc)
#   (b) install, cold: fresh target, empty --cache-dir
#   (c) install, warm --cache-dir: fresh target
#   (d) install when the marker matches (a container restart): with --expected-hash as the
#       webhook passes it (d1), and reading Redis to learn the hash (d2)
#   (e) install --compile-bytecode, cold: the like-for-like comparison with (a)
#   (f) first `import pandas, numpy, flask, pydantic` from a target of (b) vs one of (e)
#
# Usage: scripts/bench-install.sh            (RUNS=5 fast runs, SLOW_RUNS=3 for (a) and (e))
#   BIN=path/to/bifrost-requirements  use this binary instead of building --release
#   UV=path/to/uv  PYTHON=python3     installer and interpreter (the real files, not shims)
# The wheelhouse is downloaded once (`pip download`, needs PyPI) into
# ~/.cache/bifrost-requirements/wheelhouse and reused.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
SLOW_RUNS=${SLOW_RUNS:-3}
(( RUNS >= SLOW_RUNS )) || RUNS=$SLOW_RUNS # (f) imports from the targets of (b)
PACKAGES=(flask requests httpx pydantic msal python-dateutil pyyaml jinja2 beautifulsoup4 openpyxl numpy pandas)
IMPORTS='import pandas, numpy, flask, pydantic'

# The real interpreter and uv (pyenv shims would add their own start-up to every timing).
PY=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')
if [[ -z "${UV:-}" ]]; then
  UV=$( (command -v pyenv >/dev/null 2>&1 && pyenv which uv 2>/dev/null) || command -v uv || true)
fi
[[ -x "$UV" ]] || { echo "bench: uv not found (pip install uv, or set UV=)" >&2; exit 1; }
if [[ -z "${BIN:-}" ]]; then
  echo "bench: building the release binary…" >&2
  cargo build --release --quiet --bin bifrost-requirements
  BIN=target/release/bifrost-requirements
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bifrost-bench.XXXXXX")
REDIS_PID=
cleanup() {
  [[ -n "$REDIS_PID" ]] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
LOG=$WORK/bench.log
printf '%s\n' "${PACKAGES[@]}" >"$WORK/req.txt"

# --- wheelhouse (once) -------------------------------------------------------------------------
WH=${WHEELHOUSE:-$HOME/.cache/bifrost-requirements/wheelhouse}
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
STAMP="$WH/.complete-py$PYVER-$(sha256sum "$WORK/req.txt" | cut -c1-16)"
if [[ ! -f "$STAMP" ]]; then
  echo "bench: downloading the 12-package set and its dependencies into $WH (once)…" >&2
  mkdir -p "$WH"
  "$PY" -m pip download -q --disable-pip-version-check --only-binary :all: -d "$WH" -r "$WORK/req.txt"
  touch "$STAMP"
fi
WHEELS=$(find "$WH" -name '*.whl' | wc -l)

# --- the source: a real Redis holding Bifrost's payload when redis-server exists -------------
HASH=$("$PY" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1]).read().encode()).hexdigest())' "$WORK/req.txt")
SOURCE=()
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
  PORT=$("$PY" "$(dirname "${BASH_SOURCE[0]}")/lib/free_port.py")
  redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  "$PY" -c 'import json,sys; c=open(sys.argv[1]).read(); print(json.dumps({"content": c, "hash": sys.argv[2]}), end="")' \
    "$WORK/req.txt" "$HASH" | redis-cli -p "$PORT" -x SET bench:requirements >/dev/null
  SOURCE=(--redis-url "redis://127.0.0.1:$PORT/0" --redis-key bench:requirements)
  SOURCE_NAME="Redis (local redis-server)"
else
  SOURCE=(--fallback-file "$WORK/req.txt")
  SOURCE_NAME="fallback file (no redis-server)"
fi

# --- helpers -----------------------------------------------------------------------------------
# time_it CMD…: run, print elapsed seconds; output goes to the log; abort on failure.
# Pending writeback of the previous run is flushed first (untimed), so runs start alike.
time_it() {
  local s e
  sync
  s=$(date +%s.%N)
  if ! "$@" >>"$LOG" 2>&1; then
    echo "bench: command failed: $*" >&2
    tail -40 "$LOG" >&2
    exit 1
  fi
  e=$(date +%s.%N)
  awk -v s="$s" -v e="$e" 'BEGIN { printf "%.4f\n", e - s }'
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.4f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ours() { "$BIN" install --python "$PY" --uv "$UV" --no-index --find-links "$WH" "${SOURCE[@]}" "$@"; }
row() { printf '  %-58s %9.3f s   runs: %s\n' "$1" "$2" "$3"; }

echo "bench: measuring (RUNS=$RUNS, SLOW_RUNS=$SLOW_RUNS); details in the log if anything fails" >&2

# Comparable runs are interleaved so that load swings (other jobs on the machine) hit both;
# nothing is deleted between timed runs (deleting a 150 MB tree would slow the next run).
A=() B0=() B=() C=() D1=() D2=() E=() FD=() FB=() FE=() FW=()
for i in $(seq "$SLOW_RUNS"); do
  A+=("$(time_it "$PY" -m pip install -q --disable-pip-version-check --no-index --find-links "$WH" \
    --target "$WORK/a$i" -r "$WORK/req.txt")")
  E+=("$(time_it ours --target "$WORK/e$i" --cache-dir "$WORK/cache-e$i" --compile-bytecode)")
done
for i in $(seq "$RUNS"); do
  B0+=("$(time_it "$UV" pip install --no-config --target "$WORK/r$i" --python "$PY" --no-index \
    --find-links "$WH" --cache-dir "$WORK/cache-r$i" -r "$WORK/req.txt")")
  B+=("$(time_it ours --target "$WORK/b$i" --cache-dir "$WORK/cache-b$i")")
done
ours --target "$WORK/c0" --cache-dir "$WORK/cache-warm" >>"$LOG" 2>&1 # fill the cache
for i in $(seq "$RUNS"); do
  C+=("$(time_it ours --target "$WORK/c$i" --cache-dir "$WORK/cache-warm")")
done
for i in $(seq "$RUNS"); do
  D1+=("$(time_it ours --target "$WORK/b1" --expected-hash "$HASH")")
  D2+=("$(time_it ours --target "$WORK/b1")")
done
# (f) Imports as a worker does them. Python's default writes __pycache__ into the (writable)
# target on first import, so only the first process pays; an image that sets
# PYTHONDONTWRITEBYTECODE=1 (or a read-only mount) pays it in every process (FD).
for i in $(seq "$SLOW_RUNS"); do
  FD+=("$(time_it env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$WORK/b$i" "$PY" -c "$IMPORTS")")
  FB+=("$(time_it env -u PYTHONDONTWRITEBYTECODE PYTHONPATH="$WORK/b$i" "$PY" -c "$IMPORTS")")
  FE+=("$(time_it env -u PYTHONDONTWRITEBYTECODE PYTHONPATH="$WORK/e$i" "$PY" -c "$IMPORTS")")
done
for _ in $(seq "$SLOW_RUNS"); do
  FW+=("$(time_it env -u PYTHONDONTWRITEBYTECODE PYTHONPATH="$WORK/b1" "$PY" -c "$IMPORTS")")
done

a=$(echo "${A[*]}" | median) b0=$(echo "${B0[*]}" | median) b=$(echo "${B[*]}" | median) c=$(echo "${C[*]}" | median)
d1=$(echo "${D1[*]}" | median) d2=$(echo "${D2[*]}" | median) e=$(echo "${E[*]}" | median)
fd=$(echo "${FD[*]}" | median) fb=$(echo "${FB[*]}" | median) fe=$(echo "${FE[*]}" | median) fw=$(echo "${FW[*]}" | median)
size_b=$(du -sm "$WORK/b1" | cut -f1) size_e=$(du -sm "$WORK/e1" | cut -f1)
dists=$(find "$WORK/b1" -maxdepth 1 -name '*.dist-info' | wc -l)
ratio() { awk -v x="$1" -v y="$2" 'BEGIN { printf "%.1f", x / y }'; }
check() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? v >= t : v <= t; print ok ? "met" : "MISSED" }'; }

cat <<EOF

bifrost-requirements install benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPU(s)
  12 packages (${PACKAGES[*]})
  → $dists distributions installed; wheelhouse of $WHEELS wheels; source: $SOURCE_NAME
  Python $("$PY" -c 'import platform; print(platform.python_version())') ($PY), $("$UV" --version), pip $("$PY" -m pip --version | cut -d' ' -f2)

medians:
EOF
row "(a) Bifrost: python -m pip install -r (compiles .pyc)" "$a" "${A[*]}"
row "    reference: bare uv pip install --target, cold" "$b0" "${B0[*]}"
row "(b) install, cold (empty cache, no .pyc)" "$b" "${B[*]}"
row "(c) install, warm --cache-dir" "$c" "${C[*]}"
row "(d1) install, marker matches (--expected-hash)" "$d1" "${D1[*]}"
row "(d2) install, marker matches (hash read from Redis)" "$d2" "${D2[*]}"
row "(e) install --compile-bytecode, cold" "$e" "${E[*]}"
row "(f) first import from (b) (no .pyc: compiled, then written)" "$fb" "${FB[*]}"
row "(f) first import from (e) (.pyc present)" "$fe" "${FE[*]}"
row "    later imports from (b) (.pyc written by the first)" "$fw" "${FW[*]}"
row "    every import from (b) if PYTHONDONTWRITEBYTECODE=1" "$fd" "${FD[*]}"
cat <<EOF

ratios:
  a/b = $(ratio "$a" "$b")   (target ≥ 15: $(check "$(ratio "$a" "$b")" ">=" 15))
  a/c = $(ratio "$a" "$c")
  a/e = $(ratio "$a" "$e")   (like for like: both compile bytecode)
  c = ${c} s (target ≤ 0.5 s: $(check "$c" "<=" 0.5)); d1 = ${d1} s (target ≤ 0.05 s: $(check "$d1" "<=" 0.05))
  our overhead over bare uv (fetch, policy, staging, swap, marker): $(awk -v x="$b" -v y="$b0" 'BEGIN { printf "%+.2f", x - y }') s
  first-import cost moved to the worker by skipping bytecode: $(awk -v x="$fb" -v y="$fe" 'BEGIN { printf "%.2f", x - y }') s, once per target
    ($(awk -v x="$fd" -v y="$fe" 'BEGIN { printf "%.2f", x - y }') s in every process when the image sets PYTHONDONTWRITEBYTECODE=1)
    (saved at install time: $(awk -v x="$e" -v y="$b" 'BEGIN { printf "%.2f", x - y }') s); target size: ${size_b} MB without .pyc, ${size_e} MB with
EOF
