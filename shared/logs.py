"""Logging setup for both commands: twisted.logger, as text or JSON lines.

Events carry named fields (C{"stream {stream_id} closed: {reason}"}); the JSON
format writes each event with its fields so logs can be queried.  Secrets are
never passed as log fields.
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEventAsClassicLogText,
    globalLogBeginner,
    jsonFileLogObserver,
    textFileLogObserver,
)

LOG_FORMATS = ("text", "json")


def make_observer(
    log_format: str, output: IO[str] | None = None, level: LogLevel = LogLevel.info
) -> ILogObserver:
    """An observer writing events at C{level} or above to C{output} (stderr by default)."""
    stream = output if output is not None else sys.stderr
    if log_format == "json":
        observer = jsonFileLogObserver(stream)
    else:
        observer = textFileLogObserver(stream, timeFormat="%Y-%m-%dT%H:%M:%S%z")
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    return FilteringLogObserver(observer, [predicate])


def start_logging(
    log_format: str, output: IO[str] | None = None, level: LogLevel = LogLevel.info
) -> None:
    """Send all twisted.logger events to one observer (call once per process)."""
    globalLogBeginner.beginLoggingTo(
        [make_observer(log_format, output, level)], redirectStandardIO=False
    )


def format_event(event: dict[str, object]) -> str:
    """One event as a line of text (for tests and the console's event list)."""
    return (formatEventAsClassicLogText(event) or "").rstrip("\n")


__all__ = ["LOG_FORMATS", "format_event", "make_observer", "start_logging"]
