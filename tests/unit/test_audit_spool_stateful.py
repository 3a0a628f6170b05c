"""A stateful test of the audit spool: whatever happens, every record is committed exactly once.

Hypothesis drives random sequences of: record an event, let time pass with
the database available, busy, unavailable or losing its commit replies, and
crash (the audit log is dropped without closing; a new one on the same files
replays the spool file, as a Jumpoint started again does).  At the end the
database is made available, the last audit log drains, and every record that
was on disk or committed before a crash, and every one recorded since the
last crash, is in the database exactly once.  (A crash loses what was only
in memory: those records are set aside and must not appear twice either.)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from jumpoint.audit import AuditLog, query
from jumpoint.state import StateDatabase
from tests.unit.audit_outage import (
    BUSY,
    LOST_REPLY,
    OK,
    UNAVAILABLE,
    OutageWriter,
    committed_streams,
    new_audit,
    run_for,
)


class SpoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="audit-spool-"))
        self.database = StateDatabase(self.directory / "state.db")
        self.writer = OutageWriter(self.database)
        self.clock = MemoryReactorClock()
        self.audit: AuditLog = new_audit(self.writer, self.directory, self.clock)
        self.recorded = 0
        self.decisions: list[list[Any]] = []
        """What each decision's Deferred gave (nothing yet, None: committed, a Failure)."""
        self.lost: set[int] = set()
        """Records only in memory when a crash came (may or may not be committed)."""

    @rule(count=st.integers(1, 30))
    def record(self, count: int) -> None:
        for _ in range(count):
            self.audit.record("connection_closed", stream=self.recorded)
            self.recorded += 1

    @rule()
    def decide(self) -> None:
        number = len(self.decisions)
        seen: list[Any] = []
        self.audit.record("session_opened", durable=True, decision=number).addBoth(seen.append)
        self.decisions.append(seen)

    @rule(mode=st.sampled_from([OK, BUSY, UNAVAILABLE, LOST_REPLY]), seconds=st.integers(1, 40))
    def time_passes(self, mode: str, seconds: int) -> None:
        self.writer.mode = mode
        run_for(self.clock, seconds / 10)

    @precondition(lambda self: self.recorded > 0)
    @rule()
    def crash(self) -> None:
        in_memory = list(self.audit._spool)
        if self.audit.spooler is not None:
            in_memory += self.audit.spooler.in_transit
        self.lost |= {json.loads(e.row[6])["stream"] for e in in_memory if not e.durable}
        self.clock = MemoryReactorClock()
        self.audit = new_audit(self.writer, self.directory, self.clock)
        if self.writer.mode == OK:
            self.audit.replay_spool_now(lambda job: job(self.database.connection))

    @invariant()
    def never_twice(self) -> None:
        streams = committed_streams(self.database)
        assert len(streams) == len(set(streams))
        decided = self._decided()
        assert len(decided) == len(set(decided))
        for number, seen in enumerate(self.decisions):
            if seen == [None]:  # acknowledged: committed, exactly once
                assert decided.count(number) == 1

    def _decided(self) -> list[int]:
        rows = query(self.database, event="session_opened", limit=1_000_000)
        return [int(row.detail["decision"]) for row in rows]

    def teardown(self) -> None:
        self.writer.mode = OK
        run_for(self.clock, 30.0, step=0.5)
        streams = committed_streams(self.database)
        assert len(streams) == len(set(streams)), "an event was committed twice"
        missing = set(range(self.recorded)) - set(streams) - self.lost
        assert not missing, f"events lost: {sorted(missing)[:10]}"
        assert set(streams) <= set(range(self.recorded))
        decided = self._decided()
        for number, seen in enumerate(self.decisions):
            if seen == [None]:
                assert decided.count(number) == 1
            elif seen and isinstance(seen[0], Failure):
                # refused; in the database only when its commit's answer was lost
                assert decided.count(number) <= 1
        self.database.close()
        shutil.rmtree(self.directory)


SpoolMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_the_audit_spool_commits_every_record_exactly_once = SpoolMachine.TestCase
