#!/usr/bin/env bash
# Set up everything the tests need (venv, system packages) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-deps.sh
.venv/bin/ruff check gateway tests benchmarks
.venv/bin/ruff format --check --quiet gateway tests benchmarks
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
