"""A direct wire client for the resume tests: opens or resumes one session, prints JSON lines.

Until `jump open` reconnects by itself, the end-to-end tests of the Jumpoint's
session resume speak the wire through the console's channel classes:

  python -m tests.e2e.resume_client open ITEM
      opens a session, prints {"event": "opened", "session", "resume_token"},
      then waits until the channel is lost and prints {"event": "lost", "reason"};
  python -m tests.e2e.resume_client resume ITEM SESSION TOKEN
      resumes it, prints {"event": "resumed", ...} (or {"event": "error", ...}),
      then closes the session on purpose.

The profile is the current one of JUMP_HOME.  The token travels on the
command line of a test's own child process only.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from console.channel import connect
from console.profiles import load_profile
from console.remote import run_reactor
from shared.errors import JumpError
from shared.protocol import control


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def opening(reactor: Any, item: str) -> int:
    channel = await connect(reactor, load_profile(None))
    opened = await channel.request(control.OPEN_SESSION, item=item)
    say("opened", session=opened["session"], resume_token=opened["resume_token"])
    lost = await channel.lost
    say("lost", reason=lost.message)
    return 0


async def resuming(reactor: Any, item: str, session: str, token: str) -> int:
    channel = await connect(reactor, load_profile(None))
    try:
        resumed = await channel.request(
            control.OPEN_SESSION, item=item, resume={"session": session, "token": token}
        )
    except JumpError as error:
        say("error", code=error.code, rule=getattr(error, "rule", None), message=error.message)
        await channel.close_and_wait(reactor)
        return 1
    say("resumed", session=resumed["session"], reconnects=resumed["reconnects"])
    await channel.request(control.CLOSE_SESSION, reason="done")
    await channel.close_and_wait(reactor)
    return 0


def main(argv: list[str]) -> int:
    if argv[0] == "open":
        return run_reactor(lambda reactor: opening(reactor, argv[1]))
    return run_reactor(lambda reactor: resuming(reactor, argv[1], argv[2], argv[3]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
