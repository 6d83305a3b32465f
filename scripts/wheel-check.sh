#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv (no system site-packages; the dependencies come
# from the package index) and check the installed gateway from outside the repository:
# `mcp-gateway catalog list` shows the built-in catalog, `serve --servers time` answers /healthz
# and a client of it sees the time server's tools.
#
# Usage: scripts/wheel-check.sh [WORKDIR]     (default: a new temporary directory)
#   PYTHON=...    the interpreter that builds the wheel and the venv (default: python3)
#   DATA_DIR=...  the gateway's data dir (default: WORKDIR/data); one with `time` already pulled
#                 (mcp-gateway pull time) needs no download for the server itself
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
python="${PYTHON:-python3}"
data="${DATA_DIR:-$work/data}"
mkdir -p "$work"
cd "$work"  # never the repository: the installed package must stand on its own

echo "wheel check: building the wheel in $work/dist"
# from a copy of the source, so the build leaves nothing (build/, *.egg-info) in the repository
mkdir -p "$work/src"
(cd "$repo" && tar --exclude=./.venv --exclude=./.git --exclude=./.cache --exclude=./build --exclude='*.egg-info' \
  --exclude=__pycache__ --exclude=node_modules -cf - .) | tar -xf - -C "$work/src"
"$python" -m pip wheel --quiet --disable-pip-version-check --no-deps "$work/src" -w "$work/dist"
wheel="$(ls "$work"/dist/mcp_sandbox_gateway-*.whl)"

echo "wheel check: installing $(basename "$wheel") into a fresh venv"
"$python" -m venv --clear "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel"
gw="$work/venv/bin/mcp-gateway"

echo "wheel check: catalog list"
"$gw" catalog list --data-dir "$data" | tee "$work/catalog.txt"
for name in time everything fetch; do
  grep -q "^$name " "$work/catalog.txt" || { echo "wheel check: FAILED: '$name' missing from the built-in catalog"; exit 1; }
done

port="$("$work/venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
echo "wheel check: serve --servers time on port $port"
"$gw" serve --servers time --port "$port" --data-dir "$data" >"$work/serve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
"$work/venv/bin/python" - "$port" "$pid" <<'PY'
import json, os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("wheel check: FAILED: serve exited (see serve.log)")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            print("wheel check: /healthz", json.load(answer))
            sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit("wheel check: FAILED: /healthz did not answer")
PY

echo "wheel check: tools"
"$gw" tools --data-dir "$data" | tee "$work/tools.txt"
grep -q "^time__get_current_time" "$work/tools.txt" || { echo "wheel check: FAILED: no time tools"; exit 1; }
echo "wheel check: OK"
