"""What a stream's bridge to its target uses of the daemon, as a protocol the core provides.

The TDS and Kubernetes upstream bridges and the stream connections are built
with the daemon's L{jumpoint.server.JumpointCore}, but they depend only on
this view of it (the clock, the audit log, the credentials, and what dialling
needs): the channel's module imports them, they never import it.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from jumpoint.audit import AuditLog
from jumpoint.credentials import CredentialStore
from jumpoint.dialing import DialContext


class UpstreamContext(DialContext, Protocol):
    """The daemon's services a bridge to a target uses."""

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def log_audit(self) -> AuditLog: ...

    @property
    def credentials(self) -> CredentialStore | None:
        """The logins injected into the connections (none: every login is refused)."""
        ...
