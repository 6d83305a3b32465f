#!/usr/bin/env bash
# Set up, pull the default servers and run the gateway on 127.0.0.1:8811 with the built-in catalog.
# Extra arguments go to `mcp-gateway serve` (e.g. --config @my-secrets.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SERVERS=${MCP_GATEWAY_SERVERS:-time,everything,memory,sequential-thinking}
.venv/bin/mcp-gateway pull ${SERVERS//,/ }
exec .venv/bin/mcp-gateway serve --servers "$SERVERS" "$@"
