"""docs/policy-guide.md's table of audit events agrees with the events the Jumpoint records.

The events are read from the code, not listed here: every string literal
that is the first argument of an audit call (C{AuditLog.record}, the
C{_audit} helpers, C{AuditEvent(...)} of the SQL leg), both branches of a
conditional included, and the string values of a C{..._EVENTS} dict (an event
chosen by request type).  The literal keyword fields of those calls (and the
literal keys of an C{AuditEvent}'s field dict) must be documented in the
event's row too; fields built elsewhere (C{**session.audit_fields()}) are
the author's to document.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AUDIT_CALLS = {
    "record",
    "record_sync",
    "_audit",
    "AuditEvent",
    "record_denial",
    "_record_denial",
}
"""Names of the functions whose first argument is an audit event's name."""
NOT_FIELDS = {"durable", "apply", "fields_from"}
"""Keywords of an audit call that are not fields (how it is committed)."""
EVENT_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")


def _call_name(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _names(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _names(node.body) + _names(node.orelse)
    return []


def events_in_code() -> dict[str, set[str]]:
    """Every audit event the code records, with the literal fields it gives it."""
    return events_in_files(sorted((ROOT / "jumpoint").rglob("*.py")))


def events_in_files(paths: list[Path]) -> dict[str, set[str]]:
    """The audit events these source files record, with their literal fields."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Dict):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id.endswith("_EVENTS") for t in targets):
                    for value in node.value.values:
                        for name in _names(value):
                            found[name] |= set()
            if not isinstance(node, ast.Call) or _call_name(node) not in AUDIT_CALLS:
                continue
            if not node.args:
                continue
            names = [n for n in _names(node.args[0]) if EVENT_NAME.match(n)]
            fields = {k.arg for k in node.keywords if k.arg is not None} - NOT_FIELDS
            if len(node.args) > 1 and isinstance(node.args[1], ast.Dict):
                fields |= {
                    key.value
                    for key in node.args[1].keys
                    if isinstance(key, ast.Constant) and isinstance(key.value, str)
                }
            for name in names:
                found[name] |= fields
    return dict(found)


def events_in_doc() -> dict[str, str]:
    """The rows of the audit events table: event name -> its fields column."""
    text = (ROOT / "docs" / "policy-guide.md").read_text(encoding="utf-8")
    section = text.split("### Audit events", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for match in re.finditer(r"^\| `([a-z0-9_]+)` \| ([^|]*) \|", section, flags=re.MULTILINE):
        assert match.group(1) not in rows, f"{match.group(1)} is documented twice"
        rows[match.group(1)] = match.group(2)
    return rows


def test_every_audit_event_the_code_records_is_documented_and_the_reverse() -> None:
    code, doc = events_in_code(), events_in_doc()
    assert {"session_opened", "k8s_request", "sql_login", "connection_denied"} <= set(code)
    assert set(code) - set(doc) == set(), "audit events missing from docs/policy-guide.md"
    assert set(doc) - set(code) == set(), "documented audit events the code never records"


def test_every_literal_field_of_an_event_is_documented_in_its_row() -> None:
    doc = events_in_doc()
    missing = {
        event: sorted(f for f in fields if f"`{f}`" not in doc.get(event, ""))
        for event, fields in events_in_code().items()
    }
    assert {event: names for event, names in missing.items() if names} == {}
