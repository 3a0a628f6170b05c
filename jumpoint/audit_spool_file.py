"""The audit log's spool file: events the database could not take, kept on the local disk.

While the state database cannot take writes, the audit log
(L{jumpoint.audit}) appends its waiting records here, one JSON object a
line, and replays them into the database once it takes writes again (the
events' C{event_id} makes a replay of an event already committed add
nothing).  Every method blocks (writes are fsync'd): the daemon calls them
on a worker thread (L{jumpoint.worker_thread}), never on the reactor thread.

Two files, both mode 0600, in one directory:
  - C{PATH} (e.g. C{audit-spool.jsonl}): new events are appended to it.
    An append writes whole lines and fsyncs them before it returns; one
    that fails is cut back to where it started, so no torn line stays.
  - C{PATH.replaying}: the file being replayed.  L{SpoolFile.next_batch}
    renames C{PATH} to it (then fsyncs the directory) when there is none, and
    reads it in batches; L{SpoolFile.committed} is told when a batch is in
    the database and, once the whole file is, removes it (and fsyncs the
    directory).

A crash at any step loses nothing and duplicates nothing: a line leaves the
disk only after the database has committed it, a replay starts again from
the beginning of C{PATH.replaying} (its events already in the database are
skipped by their identity), and a torn last line (a crash during an append,
whose events were never counted as spooled) is cut off when the file is
opened again.  The two files together hold at most C{limit_bytes}: an
append writes the lines that fit, and when none does it fails with
L{SpoolFileFull}.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from shared.errors import InternalError

LIMIT_BYTES = 256 * 1024 * 1024
"""Default bound of the spool file (both files together)."""

Step = Callable[[str], None]
"""Called with the name of each step of a file operation (tests inject a crash there)."""


class SpoolFileFull(InternalError):
    """The spool file holds its limit of bytes; nothing of the append was written."""

    code = "audit_spool_full"


def _no_step(name: str) -> None:
    """The default L{Step}: nothing happens between the steps."""


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _cut_torn_tail(path: Path) -> None:
    """Drop the bytes after the last newline of C{path} (a crash during an append)."""
    size = _size(path)
    if size == 0:
        return
    with open(path, "rb+") as file:
        chunk = min(size, 1 << 16)
        position = size
        while position > 0:
            start = max(0, position - chunk)
            file.seek(start)
            data = file.read(position - start)
            newline = data.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        else:
            keep = 0
        if keep != size:
            file.truncate(keep)
            file.flush()
            os.fsync(file.fileno())


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as file:
            return sum(block.count(b"\n") for block in iter(lambda: file.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


class SpoolFile:
    """The two files of the spool (see the module docstring); blocking calls only.

    @param step: called between the steps of each operation (a test's crash).
    """

    def __init__(self, path: Path, limit_bytes: int = LIMIT_BYTES, step: Step = _no_step) -> None:
        self.path = path
        self.replaying = path.with_name(path.name + ".replaying")
        self.limit_bytes = limit_bytes
        self._step = step
        path.parent.mkdir(parents=True, exist_ok=True)
        for existing in (self.path, self.replaying):
            if existing.exists():
                os.chmod(existing, 0o600)
                _cut_torn_tail(existing)
        self.bytes = _size(self.path) + _size(self.replaying)
        """Bytes in both files."""
        self.events = _count_lines(self.path) + _count_lines(self.replaying)
        """Events in both files (not yet known to be in the database)."""
        self._offset = 0
        """Where the next batch of C{replaying} starts."""

    def append(self, lines: list[str]) -> int:
        """Write the first of C{lines} (each ending with a newline) that fit, fsync'd.

        Returns how many were written: all of them, or as many as the limit
        leaves room for; none fit: L{SpoolFileFull}.
        """
        encoded = [line.encode("utf-8") for line in lines]
        room = self.limit_bytes - self.bytes
        count = 0
        for line in encoded:
            if len(line) > room:
                break
            room -= len(line)
            count += 1
        if count == 0:
            raise SpoolFileFull(
                f"the audit spool file holds {self.bytes} bytes (limit {self.limit_bytes})"
            )
        data = b"".join(encoded[:count])
        created = not self.path.exists()
        descriptor = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            start = os.fstat(descriptor).st_size
            try:
                view = memoryview(data)
                while view:
                    written = os.write(descriptor, view)
                    view = view[written:]
                self._step("append.unsynced")
                os.fsync(descriptor)
            except BaseException:
                os.ftruncate(descriptor, start)  # no torn line stays behind
                raise
        finally:
            os.close(descriptor)
        self._step("append.written")
        if created:
            _fsync_directory(self.path.parent)
        self.bytes += len(data)
        self.events += count
        return count

    def next_batch(self, limit: int) -> tuple[list[str], int]:
        """Up to C{limit} lines to replay, and the offset after them ([] when none wait).

        The lines stay in the file until L{committed} is told that they are
        in the database; until then the same call returns the same lines.
        """
        if not self.replaying.exists():
            if _size(self.path) == 0:
                return [], 0
            os.replace(self.path, self.replaying)
            self._step("rotate.renamed")
            _fsync_directory(self.path.parent)
            self._offset = 0
        lines: list[str] = []
        with open(self.replaying, "rb") as file:
            file.seek(self._offset)
            while len(lines) < limit:
                raw = file.readline()
                if not raw.endswith(b"\n"):
                    break
                lines.append(raw.decode("utf-8", errors="replace"))
            end = file.tell() if lines else self._offset
        if not lines:  # all of it is in the database: on to the newer file
            self.committed(end, 0)
            return self.next_batch(limit) if _size(self.path) else ([], 0)
        return lines, end

    def committed(self, end: int, count: int) -> None:
        """The lines of C{replaying} before offset C{end} (C{count} events) are in the database."""
        self._step("commit.recorded")
        self._offset = end
        self.events = max(0, self.events - count)
        size = _size(self.replaying)
        if end >= size:
            self.replaying.unlink(missing_ok=True)
            self._step("commit.removed")
            _fsync_directory(self.path.parent)
            self._offset = 0
            self.bytes = _size(self.path)
