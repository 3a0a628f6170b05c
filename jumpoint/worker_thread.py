"""Blocking file work off the reactor thread: one dedicated thread running jobs in order.

The audit log's spool file is written and fsync'd, renamed and read here
(L{jumpoint.audit_spool_file}): an fsync may take long on a loaded disk, and
the reactor thread carries every tunnel.  L{WorkerThread} runs submitted
jobs (functions without arguments) one at a time, in order, on its own
thread; each job's result or error comes back as a Deferred fired on the
reactor (through C{call_from_thread}).  Its queue is bounded: past
C{queue_limit} waiting jobs, L{WorkerThread.submit} fails at once with
L{WorkerQueueFull}.

L{InlineWorker} runs the same jobs at once on the caller's thread: for the
synchronous unit tests and for work done before the reactor runs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from shared.errors import InternalError

T = TypeVar("T")

QUEUE_LIMIT = 64
"""Jobs that may wait for a worker thread; more are refused (L{WorkerQueueFull})."""


class WorkerQueueFull(InternalError):
    """The worker thread has its limit of jobs waiting already."""

    code = "worker_busy"


class Worker(Protocol):
    """Runs blocking jobs somewhere else than the reactor thread; results as Deferreds."""

    def submit(self, job: Callable[[], T]) -> Deferred[T]: ...

    def stop(self) -> Deferred[None]: ...


class InlineWorker:
    """Runs every job at once, on the caller's thread (tests, start-up)."""

    def submit(self, job: Callable[[], T]) -> Deferred[T]:
        try:
            return succeed(job())
        except Exception:
            return fail(Failure())

    def stop(self) -> Deferred[None]:
        return succeed(None)


_STOP = object()


class WorkerThread:
    """One dedicated thread named C{name} (see the module docstring).

    @param call_from_thread: how results reach the reactor thread
        (C{reactor.callFromThread}).
    """

    def __init__(
        self, name: str, call_from_thread: Callable[..., Any], *, queue_limit: int = QUEUE_LIMIT
    ) -> None:
        self._call_from_thread = call_from_thread
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_limit)
        self._stopped: Deferred[None] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], T]) -> Deferred[T]:
        if self._stopped is not None:
            return fail(InternalError("the Jumpoint is stopping; its worker thread is closed"))
        result: Deferred[T] = Deferred()
        try:
            self._queue.put_nowait((job, result))
        except queue.Full:
            return fail(WorkerQueueFull("the Jumpoint has too much file work waiting"))
        return result

    def stop(self) -> Deferred[None]:
        """Run the jobs already queued, then end the thread."""
        if self._stopped is None:
            self._stopped = Deferred()
            self._queue.put(_STOP)  # blocks only while the queue is full (jobs are running)
        return self._stopped

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                stopped = self._stopped
                assert stopped is not None
                self._call_from_thread(stopped.callback, None)
                return
            job, result = entry
            try:
                value = job()
            except BaseException:
                self._call_from_thread(result.errback, Failure())
            else:
                self._call_from_thread(result.callback, value)
