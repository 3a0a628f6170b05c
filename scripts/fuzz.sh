#!/usr/bin/env bash
# A long fuzzing run of every target in tests/fuzz (hypothesis, profile "fuzz").
# Usage: bash scripts/fuzz.sh [INPUTS_PER_TARGET] [pytest args...]
# Prints, per target, how many inputs it was fed and how long it ran.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
export FUZZ_EXAMPLES=${1:-200000}
shift || true
export HYPOTHESIS_PROFILE=fuzz
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=0 \
  --hypothesis-show-statistics tests/fuzz "$@"
