"""Send one webhook notification with the real reactor and Agent; print the outcome.

Used by tests/unit/test_notify.py (the test process has no running reactor):

    python -m tests.unit.notify_probe URL EVENT_JSON [--retries N] [--retry-delay S]
        [--timeout S] [--secret-file PATH]

prints the L{Delivery} as one JSON line, then the number of calls still
scheduled on the reactor after L{Notifier.stop} (should be 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from jumpoint.notify import Delivery, Notifier
from jumpoint.secret_ref import SecretRef


async def probe(reactor: Any, args: argparse.Namespace) -> None:
    done: Deferred[Delivery] = Deferred()
    notifier = Notifier(
        reactor,
        timeout=args.timeout,
        retries=args.retries,
        retry_delay=args.retry_delay,
        on_result=done.callback,
    )
    secret = SecretRef(file=Path(args.secret_file)) if args.secret_file else None
    notifier.notify(args.url, json.loads(args.event), secret)
    delivery = await done
    await notifier.stop()
    print(json.dumps(dataclasses.asdict(delivery)))
    print(json.dumps({"pending_calls": len(reactor.getDelayedCalls())}))
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("event")
    parser.add_argument("--retries", type=int, default=0)
    parser.add_argument("--retry-delay", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--secret-file")
    args = parser.parse_args()
    react(lambda reactor: Deferred.fromCoroutine(probe(reactor, args)))


if __name__ == "__main__":
    main()
