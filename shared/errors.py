"""Error classes shared by the Jumpoint and the console.

Every error a user can meet is a L{JumpError} subclass with a stable C{code}
(used in JSON output, control messages and logs), a user-facing message, an
optional hint saying what to do, and the process exit code the CLIs use.
The mapping from error to CLI output lives in one place: L{render_error}.
"""

from __future__ import annotations

from typing import ClassVar

from shared.text import printable


class ExitCode:
    """Process exit codes shared by C{jump} and C{jumpoint}."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG = 3
    UNREACHABLE = 4
    CERTIFICATE = 5
    NOT_FOUND = 6
    LOCAL_BIND = 7
    DENIED = 8
    SESSION_LOST = 9
    STATE_UNAVAILABLE = 10
    INTERNAL = 70


class JumpError(Exception):
    """Base class of all errors shown to users.

    @ivar message: what went wrong, in one sentence, safe to show.
    @ivar hint: what to do about it, or C{None}.
    """

    code: ClassVar[str] = "error"
    exit_code: ClassVar[int] = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_json(self) -> dict[str, str]:
        """The error as a JSON-ready mapping (for C{--json} output and control replies)."""
        out = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


class UsageError(JumpError):
    code = "usage"
    exit_code = ExitCode.USAGE


class InvalidRequest(UsageError):
    """A control request with a field of the wrong type or out of range.

    The Jumpoint answers it with an error reply naming the field; the connection stays.
    """

    code = "invalid_request"


class ConfigError(JumpError):
    """A configuration file is invalid; the message names file, line and key."""

    code = "config_invalid"
    exit_code = ExitCode.CONFIG


class ProfileError(JumpError):
    code = "profile"
    exit_code = ExitCode.CONFIG


class EnrollmentError(JumpError):
    code = "enrollment_invalid"
    exit_code = ExitCode.CONFIG


class JumpointUnreachable(JumpError):
    code = "jumpoint_unreachable"
    exit_code = ExitCode.UNREACHABLE


class CertificateRejected(JumpError):
    """A TLS identity check failed; the message says which side rejected it and why."""

    code = "certificate_rejected"
    exit_code = ExitCode.CERTIFICATE


class UnknownItem(JumpError):
    code = "unknown_item"
    exit_code = ExitCode.NOT_FOUND


class UnknownUser(JumpError):
    code = "unknown_user"
    exit_code = ExitCode.NOT_FOUND


class AccessDenied(JumpError):
    """A policy denied the request; C{rule} names the rule (also shown in the message)."""

    code = "denied"
    exit_code = ExitCode.DENIED

    def __init__(self, message: str, hint: str | None = None, rule: str | None = None) -> None:
        if rule is not None and f"(rule: {rule})" not in message:
            message = f"{message} (rule: {rule})"
        super().__init__(message, hint)
        self.rule = rule
        self.context: dict[str, object] = {}
        """Fields the Jumpoint adds to the denial's audit row (never sent to the console)."""

    def to_json(self) -> dict[str, str]:
        out = super().to_json()
        if self.rule is not None:
            out["rule"] = self.rule
        return out


class EnrollmentRefused(AccessDenied):
    """The Jumpoint refused to redeem an enrollment token (C{rule} says why)."""

    code = "enrollment_refused"


class ConsentRequired(JumpError):
    """The session will be recorded and the user has not consented yet."""

    code = "consent_required"
    exit_code = ExitCode.DENIED


class UnknownRequest(JumpError):
    code = "unknown_request"
    exit_code = ExitCode.NOT_FOUND


class UnknownSession(JumpError):
    code = "unknown_session"
    exit_code = ExitCode.NOT_FOUND


class NotSupported(JumpError):
    """The Jumpoint knows the request but cannot carry it out (yet, or on this system)."""

    code = "not_supported"
    exit_code = ExitCode.FAILURE


class LocalBindError(JumpError):
    """A local listener could not be bound (port in use, privilege, address)."""

    code = "local_bind"
    exit_code = ExitCode.LOCAL_BIND


class SessionLost(JumpError):
    """An open session ended for a reason other than the user's own request."""

    code = "session_lost"
    exit_code = ExitCode.SESSION_LOST


class SessionGone(SessionLost):
    """A session cannot be resumed: closed, unknown, past its grace, or a wrong token.

    One message for every case, so that a resume attempt learns nothing of
    which sessions exist (no oracle).
    """

    code = "session_gone"
    exit_code = ExitCode.SESSION_LOST


SESSION_GONE_MESSAGE = (
    "the session cannot be resumed: it is closed, unknown, or its reconnect grace ran out"
)


class ProtocolViolation(JumpError):
    """The peer broke the wire protocol; the connection is dropped."""

    code = "protocol_error"
    exit_code = ExitCode.FAILURE


class StateUnavailable(JumpError):
    """The Jumpoint cannot write its state database: it refuses new sessions and decisions.

    Refused at once (fail closed) until the database takes writes again;
    sessions already open continue.  Worth retrying later.
    """

    code = "state_unavailable"
    exit_code = ExitCode.STATE_UNAVAILABLE


class InternalError(JumpError):
    code = "internal"
    exit_code = ExitCode.INTERNAL


def _all_subclasses(cls: type[JumpError]) -> list[type[JumpError]]:
    out: list[type[JumpError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_from_json(data: object) -> JumpError:
    """Rebuild an error received in a control message (unknown codes become L{JumpError})."""
    if not isinstance(data, dict):
        return ProtocolViolation("the Jumpoint sent a malformed error reply")
    code = str(data.get("code", "error"))
    message = str(data.get("message", "unknown error"))[:2000]
    hint_value = data.get("hint")
    hint = str(hint_value)[:2000] if hint_value is not None else None
    by_code = {sub.code: sub for sub in _all_subclasses(JumpError)}
    cls = by_code.get(code, JumpError)
    if cls is AccessDenied or cls is EnrollmentRefused:
        rule = data.get("rule")
        return cls(message, hint, str(rule)[:200] if rule is not None else None)
    return cls(message, hint)


def render_error(program: str, error: JumpError) -> str:
    """The text a CLI prints on standard error for C{error}.

    The message and the hint may quote others' text (a close reason, an item
    name): both are escaped (L{shared.text.printable}), one line each.
    """
    text = f"{program}: error: {printable(error.message)}"
    if error.hint:
        text += f"\n{program}: hint: {printable(error.hint)}"
    return text
