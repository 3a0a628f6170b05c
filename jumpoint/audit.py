"""The audit log: every decision and event, in the state database and as JSON lines.

L{AuditLog.record} takes one event (C{session_opened}, C{connection_closed},
C{session_denied} with its C{rule}, ...) with the user, session and item it
concerns and any further fields.  Decisions are written with C{durable=True}:
committed before the Jumpoint answers the console, so nothing acknowledged
is lost when the process is killed or the disk fills up (the request fails
instead).  Frequent events (connections) are collected and committed
together a moment later, in one transaction, so audit writes never dominate
the data path.  The same rows go to a JSON-lines file for log shippers.
L{query} serves C{jumpoint audit}.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from jumpoint.state import StateDatabase
from shared.errors import InternalError

log = Logger()

FLUSH_DELAY = 0.2
"""Seconds a non-durable event may wait before it is committed."""

MAX_PENDING = 10_000
"""Events collected before a flush is forced."""


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log."""

    id: int
    time: float
    event: str
    user: str | None
    session: str | None
    item: str | None
    rule: str | None
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "time": _iso(self.time),
            "event": self.event,
            "user": self.user,
            "session": self.session,
            "item": self.item,
        }
        if self.rule is not None:
            out["rule"] = self.rule
        out.update(self.detail)
        return out


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _iso(seconds: float) -> str:
    """UTC ISO 8601 with milliseconds (the formatted second is cached: many events share it)."""
    second = int(seconds // 1)
    return f"{_iso_second(second)}.{int((seconds - second) * 1000):03d}Z"


class AuditLog:
    """Writes audit events (see the module docstring)."""

    def __init__(
        self,
        database: StateDatabase,
        jsonl_path: Path | None,
        clock: IReactorTime,
        flush_delay: float = FLUSH_DELAY,
    ) -> None:
        self.database = database
        self.clock = clock
        self.flush_delay = flush_delay
        self._pending: list[
            tuple[float, str, str | None, str | None, str | None, str | None, str]
        ] = []
        self._call: IDelayedCall | None = None
        self._lines: list[str] = []
        self._file: IO[str] | None = None
        self.jsonl_path = jsonl_path
        if jsonl_path is not None:
            jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open

    def record(
        self,
        event: str,
        *,
        user: str | None = None,
        session: str | None = None,
        item: str | None = None,
        rule: str | None = None,
        durable: bool = False,
        **detail: Any,
    ) -> None:
        """Add one event; with C{durable} it is committed before this returns."""
        now = self.clock.seconds()
        self._pending.append(
            (now, event, user, session, item, rule, json.dumps(detail, default=str))
        )
        if self._file is not None:
            line: dict[str, Any] = {
                "time": _iso(now),
                "event": event,
                "user": user,
                "session": session,
                "item": item,
            }
            if rule is not None:
                line["rule"] = rule
            line.update(detail)
            self._lines.append(json.dumps(line, separators=(",", ":"), default=str) + "\n")
        if durable or len(self._pending) >= MAX_PENDING:
            self.flush(raise_errors=durable)
        elif self._call is None:
            self._call = self.clock.callLater(self.flush_delay, self.flush)

    def flush(self, raise_errors: bool = False) -> None:
        """Commit every collected event in one transaction and append them to the file."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        pending, self._pending = self._pending, []
        lines, self._lines = self._lines, []
        if not pending:
            return
        try:
            with self.database.transaction() as db:
                db.executemany(
                    "INSERT INTO audit (time, event, user_name, session, item, rule, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    pending,
                )
        except sqlite3.Error as error:
            log.critical(
                "the audit log could not be written ({count} events lost): {error}",
                count=len(pending),
                error=error,
            )
            if raise_errors:
                raise InternalError(
                    "the Jumpoint cannot write its audit log; the request was not carried out",
                    hint="ask your administrator to check the Jumpoint's disk",
                ) from None
            return
        if self._file is not None:
            try:
                self._file.write("".join(lines))
                self._file.flush()
            except OSError as error:
                log.critical(
                    "the audit file {path} could not be written: {error}",
                    path=str(self.jsonl_path),
                    error=error,
                )

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


def query(
    database: StateDatabase,
    *,
    since: float | None = None,
    user: str | None = None,
    item: str | None = None,
    session: str | None = None,
    event: str | None = None,
    limit: int = 10_000,
) -> list[AuditEntry]:
    """Audit rows matching every given filter, oldest first."""
    clauses: list[str] = []
    parameters: list[Any] = []
    for column, value in (
        ("user_name", user),
        ("item", item),
        ("session", session),
        ("event", event),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            parameters.append(value)
    if since is not None:
        clauses.append("time >= ?")
        parameters.append(since)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = database.connection.execute(
        "SELECT id, time, event, user_name, session, item, rule, detail FROM"
        f" (SELECT * FROM audit{where} ORDER BY id DESC LIMIT ?) ORDER BY id",
        (*parameters, limit),
    ).fetchall()
    return [
        AuditEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]))
        for row in rows
    ]
