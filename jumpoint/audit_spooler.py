"""The reactor's side of the audit spool file: what is on its way there, in it, and back.

L{AuditLog} (L{jumpoint.audit}) hands L{Spooler.store} the records the
database cannot take now; the spooler appends them to the spool file
(L{jumpoint.audit_spool_file}) on its worker thread, one append at a time.
When an append fails (the file's limit, a disk error), the records come back
to the audit log's memory spool through C{on_returned}, so none is dropped,
and L{Spooler.full} stays set (the audit log then refuses new decisions)
until a replay has made room.  L{Spooler.next_batch} reads the next batch
to replay (it is read once and kept until L{Spooler.replayed} is told it is
in the database).

The counters (L{SpoolCounters}) say how many events went to the file, came
back from it, were found already committed, and how many appends failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from jumpoint.audit_commit import (
    PRESENT,
    Apply,
    PendingEvent,
    from_spool_line,
    to_spool_line,
    without_write,
)
from jumpoint.audit_spool_file import SpoolFile, SpoolFileFull
from jumpoint.worker_thread import Worker

log = Logger()

Returned = Callable[[list[PendingEvent]], None]


@dataclass
class SpoolCounters:
    """What went through the spool file since the start."""

    to_file: int = 0
    """Events appended to the file."""
    replayed: int = 0
    """Events read back from the file and committed."""
    already_committed: int = 0
    """Events read back from the file that the database had already (nothing added)."""
    damaged: int = 0
    """Lines of the file that could not be read (logged in full)."""
    failed_appends: int = 0
    """Appends refused (the file's limit) or failed (a disk error): their events stay in memory."""


class Spooler:
    """Moves records to the spool file and reads them back (see the module docstring)."""

    def __init__(
        self,
        file: SpoolFile,
        worker: Worker,
        writes: Mapping[str, Callable[[dict[str, Any]], Apply]],
        batch_limit: int,
    ) -> None:
        self.file = file
        self.worker = worker
        self.writes = writes
        self.batch_limit = batch_limit
        self.counters = SpoolCounters()
        self.full = False
        """Whether the last append was refused for the file's limit (cleared by a replay)."""
        self.in_transit: list[PendingEvent] = []
        """Records handed to the append in flight."""
        self._batch: tuple[list[PendingEvent], int, int] | None = None
        self._reading: Deferred[tuple[list[str], int]] | None = None

    @property
    def waiting(self) -> int:
        """Events in the file (or on their way there) not yet known to be in the database."""
        return self.file.events + len(self.in_transit)

    @property
    def storing(self) -> bool:
        return bool(self.in_transit)

    def store(self, events: list[PendingEvent], on_returned: Returned) -> Deferred[int]:
        """Append C{events} (records) to the file; on failure they go to C{on_returned}.

        The Deferred fires with how many of them were stored (the file's
        limit may leave room for the first ones only: the others come back).
        """
        assert not self.in_transit, "one append at a time"
        lines = []
        for event in events:
            line = to_spool_line(event)
            if line is None:
                log.error(
                    "the state change of a {event} event cannot wait in the spool file;"
                    " only its audit row is kept",
                    event=event.row[1],
                )
                line = without_write(event)
            lines.append(line)
        self.in_transit = events
        file = self.file

        def stored(count: int) -> int:
            self.in_transit = []
            self.counters.to_file += count
            if count == len(events):
                return count
            self.counters.failed_appends += 1
            self.full = True
            log.critical(
                "the audit spool file {path} is full ({size} bytes): {count} events stay in"
                " memory and new decisions are refused",
                path=str(file.path),
                size=file.bytes,
                count=len(events) - count,
            )
            on_returned(events[count:])
            return count

        def failed(failure: Failure) -> int:
            self.in_transit = []
            self.counters.failed_appends += 1
            self.full = failure.check(SpoolFileFull) is not None
            log.critical(
                "the audit spool file {path} cannot take {count} events ({error}):"
                " they stay in memory and new decisions are refused",
                path=str(file.path),
                count=len(events),
                error=failure.getErrorMessage(),
            )
            on_returned(events)
            return 0

        return self.worker.submit(lambda: file.append(lines)).addCallbacks(stored, failed)

    def next_batch(self) -> Deferred[list[PendingEvent]]:
        """The next events to replay (the same ones until L{replayed}); [] when none wait."""
        if self._batch is not None:
            return succeed(self._batch[0])
        assert self._reading is None, "one read at a time"
        file, limit = self.file, self.batch_limit
        reading = self.worker.submit(lambda: file.next_batch(limit))
        self._reading = reading

        def read(result: Any) -> Any:
            self._reading = None
            return result

        return reading.addBoth(read).addCallback(self._read)

    def _read(self, result: tuple[list[str], int]) -> list[PendingEvent]:
        lines, end = result
        events = []
        for line in lines:
            try:
                events.append(from_spool_line(line, self.writes))
            except (ValueError, KeyError, TypeError) as error:
                self.counters.damaged += 1
                log.critical(
                    "a damaged line of the audit spool file {path} is skipped ({error}): {line}",
                    path=str(self.file.path),
                    error=str(error),
                    line=line.rstrip("\n"),
                )
        self._batch = (events, end, len(lines)) if lines else None
        if lines and not events:  # every line damaged: move past them
            self._batch = None
            count = len(lines)
            self.worker.submit(lambda: self.file.committed(end, count))
        return events

    def replayed(self, present: int) -> Deferred[None]:
        """The current batch is in the database (C{present} of its events were already)."""
        assert self._batch is not None
        events, end, count = self._batch
        self._batch = None
        self.counters.replayed += len(events) - present
        self.counters.already_committed += present
        file = self.file

        def removed(_: object) -> None:
            if file.events == 0:
                self.full = False

        return self.worker.submit(lambda: file.committed(end, count)).addCallback(removed)


def replay_at_start(
    file: SpoolFile,
    writes: Mapping[str, Callable[[dict[str, Any]], Apply]],
    run: Callable[[list[PendingEvent]], list[Any]],
    batch_limit: int,
) -> tuple[int, int]:
    """Replay the whole spool file now (before serving): (events committed, already present).

    C{run} commits one batch synchronously and returns its outcomes; an
    error (the database still cannot take them) propagates, and what was not
    replayed stays in the file for the running audit log.
    """
    committed = present = 0
    while True:
        lines, end = file.next_batch(batch_limit)
        if not lines:
            return committed, present
        events = []
        for line in lines:
            try:
                events.append(from_spool_line(line, writes))
            except (ValueError, KeyError, TypeError) as error:
                log.critical(
                    "a damaged line of the audit spool file {path} is skipped ({error}): {line}",
                    path=str(file.path),
                    error=str(error),
                    line=line.rstrip("\n"),
                )
        outcomes = run(events) if events else []
        found = sum(1 for outcome in outcomes if outcome[0] == PRESENT)
        present += found
        committed += len(events) - found
        file.committed(end, len(lines))
