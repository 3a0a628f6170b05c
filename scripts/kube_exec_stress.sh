#!/usr/bin/env bash
# Opt-in stress loop (issue 9, point 17): short `kubectl exec -- echo` runs through real
# `jump open` and `jumpoint serve` to the test API server, every output byte and every
# audit row checked one to one. Minutes, not CI.
# Usage: bash scripts/kube_exec_stress.sh [EXECS_PER_KIND] [--versions 1.30,1.33]
#        [--protocols websocket,spdy] [--parallel N] [--busy N] [--immediate] [--direct]
# Exit status 0 when nothing was lost; the last line is a JSON summary.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
exec .venv/bin/python scripts/kube_exec_stress.py "$@"
