#!/usr/bin/env bash
# The demo: sets up the machine, then runs a throwaway Jumpoint with one
# enrolled user and a real tunnel to a local HTTP service, and shows the
# traffic and the statistics. Everything lives in a temporary directory that
# is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# JUMPOINT_DEMO_SKIP_SETUP=1: the machine is set up already (the test suite runs the demo)
if [ "${JUMPOINT_DEMO_SKIP_SETUP:-}" != 1 ]; then bash scripts/setup.sh; fi
export PATH="$PWD/.venv/bin:$PATH"

DEMO=$(mktemp -d /tmp/jumpoint-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DEMO"
}
trap cleanup EXIT
free_port() { python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  python - "$1" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 30
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"nothing listens on port {sys.argv[1]}")
        time.sleep(0.05)
PY
}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "a local service: an HTTP server with a 20 MiB file"
mkdir -p "$DEMO/site"
echo "<h1>Hello through the Jumpoint</h1>" > "$DEMO/site/index.html"
head -c 20971520 /dev/urandom > "$DEMO/site/blob.bin"
HTTP_PORT=$(free_port)
python -m http.server "$HTTP_PORT" --bind 127.0.0.1 --directory "$DEMO/site" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$HTTP_PORT"
echo "http://127.0.0.1:$HTTP_PORT/"

say "jumpoint init"
JP_PORT=$(free_port)
jumpoint init --dir "$DEMO/jumpoint" --name demo --listen "127.0.0.1:$JP_PORT" --address 127.0.0.1
export JUMPOINT_CONFIG="$DEMO/jumpoint/jumpoint.yaml"
python - "$JUMPOINT_CONFIG" "$HTTP_PORT" <<'PY'
import re
import sys
path, port = sys.argv[1], sys.argv[2]
# the last line of the file is "items: []" (comments above it mention it too);
# the demo's target is on loopback, which is a target only when listed explicitly
text = re.sub(r"^items: \[\]\s*\Z", lambda _: f"""allowed_targets:
  - 127.0.0.1:{port}
items:
  - name: demo-web
    type: tcp
    host: 127.0.0.1
    local_address: 127.0.0.42
    tunnels:
      - {{local_port: auto, remote_port: {port}}}
    comments: the demo's HTTP service
""", open(path).read(), flags=re.MULTILINE)
open(path, "w").write(text)
PY
jumpoint check-config

say "jumpoint user add demo-user (one enrollment file, mode 0600)"
jumpoint user add demo-user --group default --out "$DEMO/demo-user.enroll"
ls -l "$DEMO/demo-user.enroll"

say "jumpoint serve"
jumpoint serve >"$DEMO/jumpoint.log" 2>&1 &
PIDS+=($!)
wait_port "$JP_PORT"
echo "serving on 127.0.0.1:$JP_PORT (log: jumpoint.log)"

say "jump enroll"
export JUMP_HOME="$DEMO/home"
jump enroll "$DEMO/demo-user.enroll"

say "jump items"
jump items

say "jump open demo-web -- curl ... (the tunnel lives as long as the command)"
jump open demo-web -- sh -c 'curl -sS "http://$JUMP_LOCAL_ADDR:$JUMP_LOCAL_PORT/"; curl -sS -o /dev/null -w "downloaded %{size_download} bytes at %{speed_download} bytes/s\n" "http://$JUMP_LOCAL_ADDR:$JUMP_LOCAL_PORT/blob.bin"'

say "jump open demo-web --json --for 8s, with rate-limited downloads running (statistics)"
jump open demo-web --json --for 8s >"$DEMO/events.jsonl" &
OPEN_PID=$!
PIDS+=($OPEN_PID)
python - "$DEMO/events.jsonl" <<'PY'
import json, subprocess, sys, time
path = sys.argv[1]
deadline = time.monotonic() + 30
while True:
    lines = open(path).read().splitlines()
    if lines:
        ready = json.loads(lines[0])
        break
    if time.monotonic() > deadline:
        sys.exit("jump open did not become ready")
    time.sleep(0.05)
tunnel = ready["tunnels"][0]
url = f"http://{tunnel['local_address']}:{tunnel['local_port']}/blob.bin"
for _ in range(3):
    subprocess.run(["curl", "-sS", "--limit-rate", "10M", "-o", "/dev/null", url], check=True)
PY
wait "$OPEN_PID" || true
python - "$DEMO/events.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    event = json.loads(line)
    if event["event"] == "ready":
        print("ready  ", ", ".join(
            f"{t['local_address']}:{t['local_port']} -> {t['remote_host']}:{t['remote_port']}"
            for t in event["tunnels"]))
    elif event["event"] == "stats":
        t = event["tunnels"][0]
        print(f"stats   connections {t['connections']:>2} (total {t['total_connections']}),"
              f" sent {t['bytes_to_remote']:>9} B, received {t['bytes_from_remote']:>9} B,"
              f" down {t['receive_rate'] / 1e6:8.1f} MB/s")
    else:
        print(f"closed  {event['reason']}; {event['total_connections']} connections,"
              f" {event['bytes_from_remote']} bytes received")
PY

say "the Jumpoint's log of that session"
grep -E "session|connection .* closed" "$DEMO/jumpoint.log" | tail -6
say "done: the demo's files are removed"
