"""Single-use enrollment tokens: issued by C{jumpoint user add}, redeemed by C{jump enroll}.

A token is 32 random bytes (base64url, L{new_token}); the database keeps
only its SHA-256 (L{token_hash}), the user it enrolls, when it expires and
the lifetime of the certificate it buys.  L{add_user_with_token} writes a
new user and their token in the caller's transaction (the admin command's,
which also writes the enrollment file and the audit row).  L{look_up} reads
a token on the reactor thread (a read never waits for a writer) to decide
early; L{redeem} runs on the database thread inside the C{user_enrolled}
audit event's transaction, checks the token again, signs the certificate
and marks the token used, so a token buys exactly one certificate however
many consoles race for it.  A revoked user's unused tokens are revoked with
them (L{jumpoint.state.StateDatabase.revoke_user}).
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from jumpoint.state import groups_of
from jumpoint.store.connection import Connection
from shared.enrollment import rfc3339
from shared.errors import EnrollmentRefused, UsageError

DEFAULT_VALID_FOR = 24 * 3600.0
"""Seconds a token may wait to be redeemed (C{jumpoint user add --valid-for})."""

RULE_UNKNOWN = "enrollment.token_unknown"
RULE_USED = "enrollment.token_used"
RULE_EXPIRED = "enrollment.token_expired"
RULE_REVOKED = "enrollment.token_revoked"
RULE_REQUEST = "enrollment.signing_request"
RULE_DISABLED = "enrollment.disabled"

_HINT = "ask your Jumpoint administrator for a new enrollment file"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Token:
    """A token's row (without the token, which is never stored)."""

    user: str
    created_at: float
    expires_at: float
    certificate_days: int
    used_at: float | None
    used_by: str | None
    revoked_at: float | None
    user_revoked: bool


@dataclass(frozen=True)
class Issued:
    """What L{redeem} made: the certificate and the user's groups."""

    user: str
    groups: tuple[str, ...]
    certificate: x509.Certificate

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")

    @property
    def not_after(self) -> str:
        return rfc3339(self.certificate.not_valid_after_utc)


def add_user_with_token(
    db: Connection,
    name: str,
    groups: tuple[str, ...],
    token: str,
    now: float,
    valid_for: float,
    certificate_days: int,
) -> None:
    """A new user (or a revoked one again) with one unused token, in the open transaction."""
    row = db.execute("SELECT revoked_at FROM users WHERE name = ?", (name,)).fetchone()
    if row is not None and row[0] is None:
        raise UsageError(
            f"user {name!r} already exists",
            hint=f"run `jumpoint user revoke {name}` first to issue a new enrollment",
        )
    created = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(timespec="seconds")
    db.execute(
        "INSERT INTO users (name, user_group, created_at, revoked_at)"
        " VALUES (?, ?, ?, NULL) ON CONFLICT(name)"
        " DO UPDATE SET user_group = excluded.user_group,"
        " created_at = excluded.created_at, revoked_at = NULL",
        (name, groups[0], created),
    )
    db.execute("DELETE FROM user_groups WHERE user_name = ?", (name,))
    db.executemany(
        "INSERT INTO user_groups (user_name, group_name) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(name, group) for group in groups],
    )
    db.execute(
        "INSERT INTO enrollment_tokens (token_hash, user_name, created_at, expires_at,"
        " certificate_days) VALUES (?, ?, ?, ?, ?)",
        (token_hash(token), name, now, now + valid_for, certificate_days),
    )


def look_up(db: Connection, hashed: str) -> Token | None:
    row = db.execute(
        "SELECT t.user_name, t.created_at, t.expires_at, t.certificate_days, t.used_at,"
        " t.used_by, t.revoked_at, u.revoked_at IS NOT NULL"
        " FROM enrollment_tokens t JOIN users u ON u.name = t.user_name"
        " WHERE t.token_hash = ?",
        (hashed,),
    ).fetchone()
    if row is None:
        return None
    return Token(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))


def check(token: Token | None, now: float) -> None:
    """Raise L{EnrollmentRefused} with its rule unless C{token} may be redeemed at C{now}."""
    if token is None:
        raise EnrollmentRefused(
            "the Jumpoint knows no such enrollment token", hint=_HINT, rule=RULE_UNKNOWN
        )
    if token.used_at is not None:
        when = rfc3339(datetime.datetime.fromtimestamp(token.used_at, datetime.UTC))
        raise EnrollmentRefused(
            f"this enrollment file was used already, at {when}: a token enrolls one console once",
            hint=_HINT,
            rule=RULE_USED,
        )
    if token.revoked_at is not None or token.user_revoked:
        raise EnrollmentRefused(
            f"user {token.user!r} was revoked since this enrollment file was written",
            hint=_HINT,
            rule=RULE_REVOKED,
        )
    if now >= token.expires_at:
        expired = rfc3339(datetime.datetime.fromtimestamp(token.expires_at, datetime.UTC))
        clock = rfc3339(datetime.datetime.fromtimestamp(now, datetime.UTC))
        raise EnrollmentRefused(
            f"this enrollment file expired at {expired} (the Jumpoint's clock says {clock})",
            hint=_HINT,
            rule=RULE_EXPIRED,
        )


Sign = Callable[[str, str, datetime.timedelta], x509.Certificate]
"""Signs the checked request's key for (user, first group, lifetime)."""


def redeem(db: Connection, hashed: str, now: float, peer: str, sign: Sign) -> Issued:
    """Check the token again, issue its certificate and spend it (in the open transaction)."""
    token = look_up(db, hashed)
    check(token, now)
    assert token is not None
    groups = groups_of(db, token.user)
    certificate = sign(token.user, groups[0], datetime.timedelta(days=token.certificate_days))
    issued = Issued(token.user, groups, certificate)
    cursor = db.execute(
        "UPDATE enrollment_tokens SET used_at = ?, used_by = ?, serial = ?"
        " WHERE token_hash = ? AND used_at IS NULL",
        (now, peer, issued.serial, hashed),
    )
    if cursor.rowcount != 1:  # cannot happen in one transaction; refuse rather than issue twice
        raise EnrollmentRefused("this enrollment file was used already", hint=_HINT, rule=RULE_USED)
    issued_at = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(timespec="seconds")
    db.execute(
        "INSERT INTO certificates (serial, user_name, issued_at, not_after) VALUES (?, ?, ?, ?)",
        (issued.serial, token.user, issued_at, certificate.not_valid_after_utc.isoformat()),
    )
    return issued


def never_enrolled(db: Connection) -> set[str]:
    """Users who have no certificate at all (their token unused, expired or revoked)."""
    rows = db.execute(
        "SELECT name FROM users WHERE NOT EXISTS"
        " (SELECT 1 FROM certificates c WHERE c.user_name = users.name)"
    ).fetchall()
    return {row[0] for row in rows}


def pending(db: Connection, now: float) -> dict[str, float]:
    """Users with an unused, unexpired token: the time it expires (for C{jumpoint user list})."""
    rows = db.execute(
        "SELECT user_name, MAX(expires_at) FROM enrollment_tokens"
        " WHERE used_at IS NULL AND revoked_at IS NULL AND expires_at > ? GROUP BY user_name",
        (now,),
    ).fetchall()
    return {row[0]: row[1] for row in rows}
