#!/usr/bin/env bash
# Lock sizes before and after keeping only the workers' platform's files (issue 23, item 1),
# for the two real package sets, against the public index. Needs the network and uv on PATH;
# never run by the tests. Resolves as the operator does (`Resolver::invocation` in src/lock.rs):
# `uv pip compile --no-build --generate-hashes` for the workers' interpreter, then the same
# resolution as `--format pylock.toml`, and keeps on each pin the hashes the pylock lists for
# it (what `lock::platform::filter` does; mirrored here in Python for the figures only).
#
#   scripts/lock-size.sh [python-version] [python-platform]    (default 3.14 x86_64-manylinux_2_28)
set -euo pipefail

version=${1:-3.14}
platform=${2:-x86_64-manylinux_2_28}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

declare -A sets=(
  [data-science]="numpy scipy pandas matplotlib scikit-learn grpcio pyarrow opencv-python-headless requests openpyxl lxml cryptography pydantic boto3"
  [automation]="requests pandas openpyxl msal azure-identity simple-salesforce paramiko beautifulsoup4 lxml boto3 jinja2 pydantic httpx python-dateutil"
)

printf '%-13s %6s %10s %8s %10s %8s\n' set pins "bytes" hashes "bytes'" "hashes'"
for name in data-science automation; do
  dir=$work/$name && mkdir -p "$dir"
  tr ' ' '\n' <<<"${sets[$name]}" >"$dir/requirements.txt"
  common=(pip compile --no-config --no-header --no-build --color never --python-version "$version"
          --python-platform "$platform" --cache-dir "$work/cache" -q)
  (cd "$dir" && uv "${common[@]}" --generate-hashes -o requirements.lock requirements.txt)
  (cd "$dir" && uv "${common[@]}" --generate-hashes --format pylock.toml -o pylock.toml requirements.txt)
  python3 - "$dir" "$name" <<'PY'
import re, sys, tomllib
d, name = sys.argv[1], sys.argv[2]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
pylock = tomllib.load(open(f"{d}/pylock.toml", "rb"))
keep = {}
for p in pylock.get("packages", []):
    files = list(p.get("wheels", [])) + ([p["sdist"]] if "sdist" in p else [])
    keep.setdefault((norm(p["name"]), p["version"]), set()).update(
        "sha256:" + f["hashes"]["sha256"].lower() for f in files)
body = open(f"{d}/requirements.lock").read()
out, pin, hashes, total, kept, pins = [], None, [], 0, 0, 0
def flush():
    if pin is not None:
        out.append(pin + "".join(" \\\n    --hash=" + h for h in hashes) + "\n")
        out.extend(rest)
rest = []
for line in body.splitlines():
    if line and not line[0].isspace() and not line.startswith("#"):
        flush()
        spec = line.split()[0]
        n, v = spec.split("==")
        pin, hashes, rest, pins = spec, [], [], pins + 1
        wanted = keep[(norm(n), v)]
    elif line.strip().startswith("--hash="):
        h = line.strip().rstrip("\\").strip()[len("--hash="):].lower()
        total += 1
        if h in wanted:
            hashes.append(h); kept += 1
    else:
        rest.append(line + "\n")
flush()
after = "".join(out)
print(f"{name:<13} {pins:>6} {len(body):>10} {total:>8} {len(after):>10} {kept:>8}")
PY
done
