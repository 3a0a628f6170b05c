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
# The e2e modules that exercise the state (users, revocation, enrollment, items,
# approvals, sessions, the audit log, its outage) run a second time with the Jumpoint's state in
# PostgreSQL (tests/postgres_server.py starts a throwaway server); the others touch
# the state the same way and stay on SQLite to keep CI's time. A run given
# arguments runs only those.
PG_E2E=(tests/e2e/test_tunnels.py tests/e2e/test_policy.py tests/e2e/test_enrollment.py
  tests/e2e/test_security.py tests/e2e/test_state_lock.py tests/e2e/test_state_outage.py)
if [ "$#" -eq 0 ]; then
  echo "== pytest: e2e on the PostgreSQL state backend: ${PG_E2E[*]}" >&2
  JUMPOINT_TEST_BACKEND=postgresql .venv/bin/python -m pytest -q -p no:cacheprovider "${PG_E2E[@]}"
fi
