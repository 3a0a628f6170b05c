"""One audit batch's transaction, and an audit event's form in the spool file.

L{commit} is the job the database thread runs for L{jumpoint.audit}: one
transaction for a batch of L{PendingEvent}s (each with the state change
that goes with it), then their JSON lines for log shippers.  Each event
has its identity, C{event_id} (a UUID made when it was recorded): the row
is inserted with C{ON CONFLICT (event_id) DO NOTHING}, and the events of a
batch tried before (a retry after a lost commit reply, a replay of the
spool file) are first looked up, so one already committed adds nothing, not
even its state change.

L{to_spool_line} and L{from_spool_line} are a record's form in the spool
file (L{jumpoint.audit_spool_file}): its row, its JSON line, and its state
change when that is a L{jumpoint.session_store.SpooledWrite}.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from twisted.internet.defer import Deferred

from jumpoint.store.connection import Connection
from jumpoint.store.error_kinds import OTHER, classify, is_database_error
from shared.errors import InternalError, JumpError

Apply = Callable[[Connection], Any]
"""A state change committed in the same transaction as its event (may raise L{JumpError})."""

Row = tuple[float, str, str | None, str | None, str | None, str | None, str]
"""An audit row: time, event, user, session, item, rule, detail (JSON)."""

SPOOL_FORMAT = 1
"""The version of a spool file line (its C{v})."""

COMMITTED = "committed"
REFUSED = "refused"
"""A decision whose C{apply} raised: nothing of it was written."""
KEPT = "kept"
"""A record whose C{apply} failed: the audit row was written, the state change not."""
PRESENT = "present"
"""An event found already committed (a retry, a replay): nothing was added."""

Outcome = tuple[str, Any]

_INSERT = (
    "INSERT INTO audit (event_id, time, event, user_name, session, item, rule, detail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
)
_LOOKUP_CHUNK = 500


@dataclass(eq=False)
class PendingEvent:
    """One audit event waiting for its commit (in memory, or read back from the spool file)."""

    event_id: str
    row: Row
    line: str | None
    durable: bool
    apply: Apply | None
    fields_from: Callable[[Any], dict[str, Any]] | None
    deadline: float
    tried: bool = False
    """Whether a commit of it was attempted already (it may be in the database)."""
    done: Deferred[Any] = field(default_factory=Deferred)

    def completed(self, value: Any) -> PendingEvent:
        """The row and line with the fields L{fields_from} takes from C{apply}'s value."""
        if self.fields_from is None:
            return self
        extra = self.fields_from(value)
        detail = {**json.loads(self.row[6]), **extra}
        line = self.line
        if line is not None:
            line = json.dumps({**json.loads(line), **extra}, separators=(",", ":"), default=str)
            line += "\n"
        row = (*self.row[:6], json.dumps(detail, default=str))
        return PendingEvent(
            self.event_id, row, line, self.durable, None, None, self.deadline, done=self.done
        )


def _already_committed(db: Connection, batch: list[PendingEvent]) -> set[str]:
    """The identities of the events of C{batch} tried before that are in the database."""
    ids = [event.event_id for event in batch if event.tried]
    found: set[str] = set()
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        marks = ", ".join("?" * len(chunk))
        query = f"SELECT event_id FROM audit WHERE event_id IN ({marks})"
        found.update(row[0] for row in db.execute(query, chunk).fetchall())
    return found


def _commit_one(db: Connection, event: PendingEvent) -> tuple[Outcome, str | None]:
    """Write one event of the open transaction; returns its outcome and its JSON line."""
    if event.apply is None:
        db.execute(_INSERT, (event.event_id, *event.row))
        return (COMMITTED, None), event.line
    db.execute("SAVEPOINT event")
    try:
        value = event.apply(db)
        written = event.completed(value)
    except Exception as error:
        if not isinstance(error, JumpError) and not is_database_error(error):
            raise
        if not isinstance(error, JumpError) and classify(error) != OTHER:
            raise  # locked or unreachable: the whole batch waits or fails
        db.execute("ROLLBACK TO event")
        db.execute("RELEASE event")
        refusal = (
            error
            if isinstance(error, JumpError)
            else InternalError(f"the Jumpoint cannot write its state database: {error}")
        )
        if event.durable:
            return (REFUSED, refusal), None
        db.execute(_INSERT, (event.event_id, *event.row))  # what happened is recorded even so
        return (KEPT, refusal), event.line
    db.execute(_INSERT, (event.event_id, *written.row))
    db.execute("RELEASE event")
    return (COMMITTED, value), written.line


def commit(
    db: Connection, batch: list[PendingEvent], file: IO[str] | None
) -> tuple[list[Outcome], str | None]:
    """The database thread's job: one transaction for C{batch}, then the JSON lines.

    Returns each event's outcome and the file's error, if any.  An empty
    batch is a probe: it takes the write lock and commits nothing.
    """
    outcomes: list[Outcome] = []
    lines: list[str] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        present = _already_committed(db, batch)
        for event in batch:
            if event.event_id in present:
                outcomes.append((PRESENT, None))
                continue
            outcome, line = _commit_one(db, event)
            outcomes.append(outcome)
            if line is not None:
                lines.append(line)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    file_error = None
    if file is not None and lines:
        try:
            file.write("".join(lines))
            file.flush()
        except (OSError, ValueError) as error:  # ValueError: closed while stopping
            file_error = str(error)
    return outcomes, file_error


def to_spool_line(event: PendingEvent) -> str | None:
    """A record's line in the spool file (C{None}: its state change cannot be spooled)."""
    write = None
    if event.apply is not None:
        name = getattr(event.apply, "name", None)
        to_json = getattr(event.apply, "to_json", None)
        if not isinstance(name, str) or to_json is None:
            return None
        write = [name, to_json()]
    data = {
        "v": SPOOL_FORMAT,
        "event_id": event.event_id,
        "row": list(event.row),
        "line": event.line,
        "write": write,
    }
    return json.dumps(data, separators=(",", ":"), default=str) + "\n"


def without_write(event: PendingEvent) -> str:
    """A record's line in the spool file without its state change (which cannot be spooled)."""
    bare = PendingEvent(
        event.event_id, event.row, event.line, False, None, None, event.deadline, done=event.done
    )
    line = to_spool_line(bare)
    assert line is not None
    return line


def from_spool_line(
    text: str, writes: Mapping[str, Callable[[dict[str, Any]], Apply]]
) -> PendingEvent:
    """The record a spool file line holds; raises C{ValueError} for a damaged line."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("v") != SPOOL_FORMAT:
        raise ValueError("not a spool line of this version")
    time_, event, user, session, item, rule, detail = data["row"]
    row: Row = (float(time_), str(event), user, session, item, rule, str(detail))
    apply = None
    if data.get("write") is not None:
        name, arguments = data["write"]
        if name not in writes:
            raise ValueError(f"unknown state change {name!r}")
        apply = writes[name](arguments)
    line = data.get("line")
    return PendingEvent(
        str(data["event_id"]),
        row,
        line if isinstance(line, str) else None,
        durable=False,
        apply=apply,
        fields_from=None,
        deadline=0.0,
        tried=True,
    )
