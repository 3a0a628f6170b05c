#!/usr/bin/env bash
# Sets up the machine, then runs every check CI runs: ruff, mypy --strict and
# the whole test suite (unit tests and end-to-end tests with real processes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
echo "== ruff" >&2
.venv/bin/ruff check jumpoint console shared
.venv/bin/ruff format --check jumpoint console shared
echo "== mypy --strict" >&2
.venv/bin/mypy --strict jumpoint console shared
echo "== pytest" >&2
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
