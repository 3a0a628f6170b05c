#!/usr/bin/env bash
# Sets up a fresh machine for jumpoint: Debian packages the tests use, and a
# virtual environment (.venv) with jumpoint installed in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

# nftables, iproute2: the Jumpoint's egress tests; iproute2 and iputils-ping: the console's
# network service tests; dnsutils (dig) and socat: the UDP tunnel tests; dnsmasq-base: the DNS
# server of the network tunnel lab (iperf3, curl, socat and dig are its other tools);
# postgresql: the throwaway servers of the PostgreSQL state backend's tests (tests/postgres_server.py)
APT_PACKAGES=(redis-server redis-tools curl ca-certificates tshark freetds-bin sqlite3 iperf3
  nftables iproute2 iputils-ping dnsutils socat dnsmasq-base postgresql)
if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
if [ "${JUMPOINT_SKIP_APT:-}" != 1 ]; then
  echo "setup: installing Debian packages: ${APT_PACKAGES[*]}" >&2
  "${SUDO[@]}" apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q "${APT_PACKAGES[@]}" >&2
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv >&2; then
    echo "setup: python3 -m venv failed; installing python3-venv" >&2
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q python3-venv >&2
    "$PYTHON" -m venv .venv >&2
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip >&2
.venv/bin/python -m pip install -q -e '.[test]' >&2
# tedious (Node.js) is one of the SQL Server clients of the end-to-end tests
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing Node.js and npm" >&2
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q nodejs npm >&2
fi
(cd tests/tds/node && npm ci --no-audit --no-fund --loglevel=error >&2)
echo "setup: ready (.venv/bin/jumpoint, .venv/bin/jump)" >&2
