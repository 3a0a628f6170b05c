"""Where the console's log events go: stderr (escaped), or the live view while one is shown."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.logger import LogLevel, formatEvent

from shared.text import printable

PROGRAM = "jump"
_ORDER = [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical]


class _LogRouter:
    """Warnings go to stderr, or into the live view's notes while one is shown."""

    def __init__(self) -> None:
        self.level = LogLevel.warn
        self.note: Callable[[str], None] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level not in _ORDER or _ORDER.index(level) < _ORDER.index(self.level):
            return
        text = formatEvent(event)
        if self.note is not None:
            self.note(text)
        else:
            sys.stderr.write(f"{PROGRAM}: {printable(text)}\n")
            sys.stderr.flush()


LOG_ROUTER = _LogRouter()
