"""A console stand-in for the network service's end-to-end tests: acquire_tun, then obey stdin.

Run as root with C{--uid/--gid/--groups}, it drops to those credentials
first (the imports are done by then: the test machine's Python may live where
the throwaway user cannot read), so L{console.network_client.acquire_tun}
runs as an ordinary user and asks the service; without them it stays root and
creates the interface itself.  It prints one JSON line per event on stdout:
C{acquired} (or C{error}), then for each command read on stdin:

* C{read}: the next packet from the TUN (hex), within 10 s;
* C{write HEX}: write that packet into the TUN;
* C{close}: C{cleanup()}, print what was removed, exit.
"""

from __future__ import annotations

import argparse
import encodings.ascii  # noqa: F401  (imported lazily otherwise: see above)
import json
import os
import select
import sys
from typing import Any

from console.network_client import acquire_tun
from shared.errors import JumpError


def say(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--address", default="198.19.0.2")
    parser.add_argument("--route", action="append", required=True)
    parser.add_argument("--mtu", type=int, default=1400)
    parser.add_argument("--name")
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--groups", default="")
    args = parser.parse_args()
    if args.uid is not None:
        os.setgroups([int(group) for group in args.groups.split(",") if group])
        os.setgid(args.gid)
        os.setuid(args.uid)
    try:
        tun = acquire_tun(
            args.address, args.route, args.mtu, name=args.name, socket_path=args.socket
        )
    except JumpError as error:
        say("error", **error.to_json())
        return 1
    say(
        "acquired",
        interface=tun.interface,
        method=tun.method,
        address=str(tun.address),
        routes=[str(route) for route in tun.routes],
        mtu=tun.mtu,
        uid=os.getuid(),
    )
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "read":
            ready, _, _ = select.select([tun.fd], [], [], 10.0)
            if not ready:
                say("timeout")
                continue
            say("packet", hex=os.read(tun.fd, 65535).hex())
        elif command == "write":
            say("written", bytes=os.write(tun.fd, bytes.fromhex(argument)))
        elif command == "close":
            removed = tun.cleanup()
            say("closed", removed=removed.to_json() if removed else None)
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
