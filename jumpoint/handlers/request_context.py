"""What a request handler sees of the channel and of the daemon, and what it returns.

A handler is a L{Handler}: it gets the requesting channel, the user's
L{Grant} and the checked message, and returns the reply's fields, or a
coroutine of them when it must wait (DNS for the allow-list, the commit of a
decision by the database thread).  L{RequestChannel} and L{RequestCore} are
the parts of L{jumpoint.server.JumpointChannel} and
L{jumpoint.server.JumpointCore} the handlers use: the handlers depend on
these protocols, the channel's module on the handlers, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from jumpoint.approvals import ApprovalStore
from jumpoint.config import JumpointConfig
from jumpoint.detached_sessions import DetachedSessions
from jumpoint.dialing import DialContext
from jumpoint.item_store import Catalog
from jumpoint.kinds.base import KindService
from jumpoint.policy import Grant
from jumpoint.session import Session
from jumpoint.session_lifecycle import RecorderFactory, SessionContext
from jumpoint.state import User
from jumpoint.udp_flows import OpenUdp
from shared.errors import AccessDenied, UnknownItem
from shared.items import Item
from shared.protocol.frames import ErrorCode
from shared.protocol.mux import Multiplexer

Reply = dict[str, Any]
"""The fields of a request's result (the channel adds C{type} and C{id})."""

Outcome = Reply | Coroutine[Any, Any, Reply]
"""A reply now, or a coroutine that ends with one (or raises the refusal)."""


class RequestCore(DialContext, SessionContext, Protocol):
    """The daemon's state the handlers use."""

    @property
    def catalog(self) -> Catalog: ...

    @property
    def approvals(self) -> ApprovalStore: ...

    @property
    def new_recorder(self) -> RecorderFactory | None: ...

    @property
    def kind_services(self) -> dict[str, KindService]:
        """Each kind's state for the Jumpoint's life, by kind name."""
        ...

    @property
    def open_udp(self) -> OpenUdp | None:
        """Opens the UDP sockets of the sessions' flows (none: this Jumpoint carries no UDP)."""
        ...

    @property
    def recheck_session(self) -> Callable[[Any, JumpointConfig], object] | None:
        """Decides again a session set up after a reload replaced its configuration."""
        ...

    def grant_for(self, user: User) -> Grant: ...

    def sessions(self) -> list[Session]: ...

    def find_session(self, session_id: str) -> RequestChannel | None: ...

    @property
    def detached(self) -> DetachedSessions:
        """The sessions whose channel was lost, resumable for a while."""
        ...


class RequestChannel(Protocol):
    """The requesting console's channel, as the handlers use it."""

    user: User | None
    session: Session | None
    opening: bool
    """A session is being opened (the decision is not committed yet)."""
    peer: str
    peer_host: str
    """The console's address (the client side of recorded connections and flows)."""
    certificate_serial: str | None
    """The serial of the console's certificate (its user is looked up again at a resume)."""

    @property
    def core(self) -> RequestCore: ...

    @property
    def mux(self) -> Multiplexer | None: ...

    def end_session(self, reason: str, code: str = "closed") -> None: ...

    def close_session(self, code: str, reason: str, error: ErrorCode) -> None: ...

    def session_expired(self, session: Session, code: str, reason: str) -> None: ...

    def detach_session(self, reason: str, code: str) -> None: ...


Handler = Callable[[RequestChannel, Grant, dict[str, Any]], Outcome]
"""Answers one request type (see the module docstring)."""


def denied(message: str, *, rule: str, hint: str | None = None, **context: object) -> AccessDenied:
    """A denial naming its rule, with the fields its audit row adds."""
    denial = AccessDenied(message, hint, rule)
    denial.context.update(context)
    return denial


def check_groups_defined(grant: Grant, user: str) -> None:
    """Refuse a user none of whose groups jumpoint.yaml defines (rule C{groups})."""
    if grant.missing_groups and not grant.groups:
        raise AccessDenied(
            f"user {user!r} is in group {grant.missing_groups[0]!r}, which"
            " jumpoint.yaml does not define",
            hint="ask your administrator to define the group or move you to another one",
            rule="groups",
        )


async def visible(core: RequestCore, grant: Grant, name: str) -> Item:
    """The item named C{name}, if the user may see it (else: no such item).

    Read through the catalog's reader: never on the reactor thread on PostgreSQL.
    """
    item = await core.catalog.find(name)
    if item is None or not grant.may_see(item):
        raise UnknownItem(
            f"no item named {name!r} that you may see on Jumpoint {core.config.name}",
            hint="list the items you may open with `jump items`",
        )
    return item
