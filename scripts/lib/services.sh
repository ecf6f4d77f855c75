# shellcheck shell=bash
# Helpers to run throw-away PostgreSQL and Redis servers on free loopback ports, for the demo.
# Source this file; call `services_init`, then `start_postgres` / `start_redis`; `services_cleanup`
# (installed as an EXIT trap by services_init) stops everything and removes the folder.

# shellcheck source=scripts/lib/ports.sh
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

services_init() {
  SERVICES_DIR=$(mktemp -d -t bifrost-demo-XXXXXX)
  chmod 755 "$SERVICES_DIR"
  SERVICES_PIDS=()
  trap services_cleanup EXIT
  trap 'exit 130' INT TERM
}

services_cleanup() {
  local pid
  for pid in "${SERVICES_PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${SERVICES_PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  [ -n "${SERVICES_DIR:-}" ] && rm -rf "$SERVICES_DIR"
}

wait_port() { # port what
  local i
  for i in $(seq 1 300); do
    (exec 3<>"/dev/tcp/${WAIT_HOST:-127.0.0.1}/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$2 did not start on port $1" >&2
  return 1
}

pg_bindir() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
  ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1
}

# Sets PG_PORT and DATABASE_URL. PG_HOST (default 127.0.0.1): a second address to listen on and
# the one DATABASE_URL names (e.g. the node's bridge address, which pods reach); clients from
# there authenticate with a password (scram-sha-256), loopback stays trusted.
start_postgres() {
  local bin data as=()
  bin=$(pg_bindir)
  data="$SERVICES_DIR/pg"
  mkdir -p "$data"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$data"
    as=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  fi
  "${as[@]}" "$bin/initdb" -D "$data" -A trust -U postgres --no-sync -E UTF8 >"$SERVICES_DIR/initdb.log" 2>&1
  local host=${PG_HOST:-127.0.0.1} listen=127.0.0.1 password=""
  if [ "$host" != 127.0.0.1 ]; then
    listen="127.0.0.1,$host"
    password=$(openssl rand -hex 16)
    echo "host all all ${host%.*}.0/24 scram-sha-256" >>"$data/pg_hba.conf"
  fi
  PG_PORT=$(free_port)
  "${as[@]}" "$bin/postgres" -D "$data" -p "$PG_PORT" -k "$data" -c listen_addresses="$listen" \
    -c fsync=off >"$SERVICES_DIR/postgres.log" 2>&1 &
  SERVICES_PIDS+=($!)
  wait_port "$PG_PORT" PostgreSQL
  local i
  for i in $(seq 1 100); do
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc 'select 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  if [ -n "$password" ]; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "ALTER USER postgres PASSWORD '$password'" >/dev/null
    DATABASE_URL="postgresql://postgres:$password@$host:$PG_PORT/postgres"
  else
    DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
  fi
}

# Sets REDIS_PORT and REDIS_URL. REDIS_BIND: the addresses to listen on (default loopback);
# REDIS_HOST: the one REDIS_URL names (e.g. the node's bridge address, which pods can reach).
start_redis() {
  REDIS_PORT=$(free_port)
  # shellcheck disable=SC2086
  redis-server --port "$REDIS_PORT" --bind ${REDIS_BIND:-127.0.0.1} --protected-mode no --save "" --appendonly no \
    --dir "$SERVICES_DIR" >"$SERVICES_DIR/redis.log" 2>&1 &
  SERVICES_PIDS+=($!)
  wait_port "$REDIS_PORT" Redis
  REDIS_URL="redis://${REDIS_HOST:-127.0.0.1}:$REDIS_PORT/0"
}

# A PEP 503 index of two wheels built here (bifrost-hello 1.0; bifrost-extra 2.0, which needs it),
# served on BIND_HOST (default 127.0.0.1); sets INDEX_PORT and INDEX_URL.
start_package_index() {
  local host=${BIND_HOST:-127.0.0.1}
  INDEX_DIR="$SERVICES_DIR/index"
  python3 - "$INDEX_DIR" <<'PY'
import base64, hashlib, os, sys, zipfile
def wheel(out, name, version, files, requires=()):
    dist = name.replace("-", "_"); info = f"{dist}-{version}.dist-info"
    entries = dict(files)
    entries[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    entries[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: bifrost-local-index\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()},{len(t.encode())}" for p, t in entries.items()]
    entries[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    d = os.path.join(out, name); os.makedirs(d, exist_ok=True)
    with zipfile.ZipFile(os.path.join(d, f"{dist}-{version}-py3-none-any.whl"), "w") as z:
        for p, t in entries.items(): z.writestr(p, t)
wheel(sys.argv[1], "bifrost-hello", "1.0", {"bifrost_hello/__init__.py": "GREETING = 'hello from bifrost-hello 1.0'\n"})
wheel(sys.argv[1], "bifrost-extra", "2.0", {"bifrost_extra/__init__.py": "from bifrost_hello import GREETING\nVALUE = GREETING + ' and bifrost-extra 2.0'\n"}, ["bifrost-hello"])
PY
  # Real packages beside them (INDEX_REAL_SET=small: numpy and pandas, downloaded once by
  # scripts/real-packages.sh into ~/.cache), linked into a folder per normalized project name.
  if [[ -n ${INDEX_REAL_SET:-} ]]; then
    local real
    real=$(bash "$(dirname "${BASH_SOURCE[0]}")/../real-packages.sh" "$INDEX_REAL_SET" | tail -n 1)
    python3 - "$INDEX_DIR" "$real" <<'PY'
import os, re, sys
out, real = sys.argv[1], sys.argv[2]
for f in os.listdir(real):
    if not (f.endswith(".whl") or f.endswith(".tar.gz") or f.endswith(".zip")):
        continue
    project = re.sub(r"[-_.]+", "-", f.split("-")[0]).lower()
    d = os.path.join(out, project); os.makedirs(d, exist_ok=True)
    os.symlink(os.path.join(real, f), os.path.join(d, f))
PY
  fi
  INDEX_PORT=$(free_port)
  python3 -m http.server "$INDEX_PORT" --bind "$host" --directory "$INDEX_DIR" >"$SERVICES_DIR/index.log" 2>&1 &
  SERVICES_PIDS+=($!)
  WAIT_HOST=$host wait_port "$INDEX_PORT" "package index"
  INDEX_URL="http://$host:$INDEX_PORT/"
}
