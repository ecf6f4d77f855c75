#!/usr/bin/env bash
# The main job: a local demo with real services, cleaned up on exit or Ctrl-C.
#
# For now this runs the compose-style flow (no Kubernetes yet): start PostgreSQL and Redis,
# `migrate`, add packages the way Bifrost's package install does, `warm` Redis, and show that
# Bifrost's Python reads exactly what we wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

bash scripts/setup.sh
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building bifrost-requirements"
cargo build --locked --quiet
BIN="$ROOT/target/debug/bifrost-requirements"

# shellcheck source=scripts/lib/services.sh
. scripts/lib/services.sh
services_init
step "starting PostgreSQL and Redis on free ports (in $SERVICES_DIR)"
start_postgres
start_redis
export DATABASE_URL REDIS_URL
echo "DATABASE_URL=$DATABASE_URL"
echo "REDIS_URL=$REDIS_URL"

step "bifrost-requirements migrate"
"$BIN" migrate

step "bifrost-requirements requirements add requests==2.32.3 Flask==2.3.3"
"$BIN" requirements add requests==2.32.3 Flask==2.3.3

step "a second install of flask replaces the entry instead of duplicating it"
"$BIN" requirements add flask==3.0.3
"$BIN" requirements show

step "a forbidden requirement is refused and changes nothing"
if "$BIN" requirements add "evil @ https://example.invalid/evil.tar.gz"; then
  echo "demo: the policy should have refused a direct URL" >&2; exit 1
fi
"$BIN" requirements show

step "the database row (workspace_files)"
psql "$DATABASE_URL" -c "SELECT path, entity_type, size_bytes, left(content_hash, 12) AS hash, git_status, is_deleted FROM workspace_files"

step "bifrost-requirements warm (DB row -> Redis, as the compose init container does)"
redis-cli -u "$REDIS_URL" DEL bifrost:requirements:content >/dev/null
"$BIN" warm

step "what Bifrost's Python worker reads from Redis"
python3 - "$REDIS_URL" <<'PY'
import hashlib, json, sys, redis
r = redis.Redis.from_url(sys.argv[1])
raw = r.get("bifrost:requirements:content")
v = json.loads(raw)
ok = v["hash"] == hashlib.sha256(v["content"].encode()).hexdigest()
print(raw.decode())
print(f"TTL {r.ttl('bifrost:requirements:content')} s; hash verified by Python: {ok}")
sys.exit(0 if ok else 1)
PY

step "demo finished; stopping PostgreSQL and Redis"
