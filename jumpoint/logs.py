"""Logging setup for both commands: twisted.logger, as text or JSON lines.

Events carry named fields (C{"stream {stream_id} closed: {reason}"}); the JSON
format writes each event with its fields so logs can be queried.  Secrets are
never passed as log fields.  Fields often hold others' text (a user's close
reason, an item name): the text format escapes every event's message with
L{shared.text.printable}, so one event is one line whatever it holds (a
traceback keeps its lines, each escaped); the JSON format escapes them as
JSON does (C{\\u001b}).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogBeginner,
    jsonFileLogObserver,
)
from zope.interface import implementer

from shared.text import printable, printable_lines

LOG_FORMATS = ("text", "json")


def message(event: dict[str, Any]) -> str:
    """C{formatEvent(event)}, with str.format_map (C) for the formats it formats the same.

    Twisted formats with C{string.Formatter} (Python), tens of microseconds per event,
    and the Jumpoint logs every tunnelled connection.  A plain C{str} format without
    Twisted's C{{name()}} call syntax, on an event that is not flattened, comes out the
    same from C{format_map}; anything else, and any error (a missing field...), goes to
    Twisted's own L{formatEvent}, which describes an unformattable event.
    """
    text = event.get("log_format")
    if type(text) is str and "()" not in text and "log_flattened" not in event:
        try:
            return text.format_map(event)
        except Exception:  # formatEvent describes the problem
            pass
    return formatEvent(event)


@implementer(ILogObserver)
class TextLogObserver:
    """One line per event: C{TIME [namespace#level] message}, plus any traceback.

    Lighter than Twisted's text observer (the time prefix is formatted once a
    second), which matters when every tunnelled connection is logged.
    """

    def __init__(self, output: IO[str]) -> None:
        self._output = output
        self._second = -1
        self._stamp = ""

    def __call__(self, event: dict[str, Any]) -> None:
        when = event.get("log_time") or time.time()
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        level = event.get("log_level")
        level_name = level.name if level is not None else "-"
        namespace = printable(str(event.get("log_namespace", "-")))
        line = f"{self._stamp} [{namespace}#{level_name}] {printable(message(event).rstrip())}"
        failure = event.get("log_failure")
        if failure is not None:
            line += "\n" + printable_lines(failure.getTraceback().rstrip("\n"))
        self._output.write(line.rstrip("\n") + "\n")
        self._output.flush()


def make_observer(
    log_format: str, output: IO[str] | None = None, level: LogLevel = LogLevel.info
) -> ILogObserver:
    """An observer writing events at C{level} or above to C{output} (stderr by default)."""
    stream = output if output is not None else sys.stderr
    observer: ILogObserver
    if log_format == "json":  # one JSON object per line (no RS record separators)
        observer = jsonFileLogObserver(stream, recordSeparator="")
    else:
        observer = TextLogObserver(stream)
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
    """One event as a line of text (for tests and the console's event list), escaped."""
    return printable_lines((formatEventAsClassicLogText(event) or "").rstrip("\n"))


__all__ = ["LOG_FORMATS", "format_event", "make_observer", "start_logging"]
