"""Reaching a target from the Jumpoint: name resolution, the allow-list check, the dial's failure.

Every address the Jumpoint dials passes C{allowed_targets} and its built-in
default (loopback, link-local and the Jumpoint's own listener only when
listed explicitly), also without an allow-list: L{resolve_checked} resolves
the target's name (and every name the allow-list mentions), L{checked_address}
checks the target's addresses and picks the one to dial (never a fresh
lookup), L{check_item_targets} checks an item's targets when it is created,
changed or opened.  L{classify_connect_failure} turns a failed connection
into the stream's reset code and reason.

The functions take a L{DialContext}, the part of the daemon's state they use
(the L{jumpoint.server.JumpointCore} provides it).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from jumpoint.config import JumpointConfig
from shared.addresses import AllowList, EgressGuard, ip_address
from shared.errors import AccessDenied
from shared.items import Item
from shared.protocol.frames import ErrorCode

ConnectTarget = Callable[[str, int, TwistedProtocol], "Deferred[Any]"]
"""Connects a protocol to C{host:port} (the daemon's connector, with its timeout)."""
Resolve = Callable[[str], "Deferred[list[str]]"]
"""The addresses of a host name (empty when it resolves to nothing)."""


class DialContext(Protocol):
    """What resolving, checking and dialling a target use of the daemon."""

    @property
    def config(self) -> JumpointConfig: ...

    @property
    def resolve(self) -> Resolve: ...

    @property
    def connect_target(self) -> ConnectTarget: ...

    @property
    def resolves_names(self) -> bool:
        """Whether host names are resolved here, so that every address dialled was checked."""
        ...


def classify_connect_failure(failure: Failure, host: str, port: int) -> tuple[ErrorCode, str]:
    """Map a failed connection to the target to a reset code and a reason."""
    value = failure.value
    target = f"{host}:{port}"
    if isinstance(value, net_error.ConnectionRefusedError):
        return ErrorCode.REFUSED, f"{target} refused the connection"
    if isinstance(value, net_error.TimeoutError | net_error.ConnectingCancelledError):
        return ErrorCode.TIMED_OUT, f"connecting to {target} timed out"
    if isinstance(value, net_error.DNSLookupError):
        return ErrorCode.UNREACHABLE, f"cannot resolve {host}"
    if isinstance(value, net_error.ConnectError) and getattr(value, "osError", None) in (
        errno.ECONNREFUSED,
    ):
        return ErrorCode.REFUSED, f"{target} refused the connection"
    return ErrorCode.UNREACHABLE, f"{target} is unreachable: {failure.getErrorMessage()}"


def literal_address(host: str) -> str | None:
    """C{host} as an IP address (brackets stripped), or None when it is a name."""
    try:
        return str(ip_address(host.strip("[]")))
    except ValueError:
        return None


def thread_resolver(reactor: Any) -> Resolve:
    """Resolve host names with getaddrinfo in the reactor's thread pool."""

    def lookup(host: str) -> list[str]:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return []
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def resolve(host: str) -> Deferred[list[str]]:
        literal = literal_address(host)
        if literal is not None:
            return succeed([literal])
        return deferToThreadPool(reactor, reactor.getThreadPool(), lookup, host)

    return resolve


def no_resolver(host: str) -> Deferred[list[str]]:
    """Literal addresses only: a core built without a resolver (tests) dials names as given."""
    literal = literal_address(host)
    return succeed([literal] if literal is not None else [])


async def resolve_checked(
    context: DialContext, host: str
) -> tuple[list[str], dict[str, list[str]]]:
    """The addresses of C{host}, and of every host name the allow-list mentions.

    With an allow-list a name that resolves to nothing is denied (nothing can
    be checked); without one the addresses are empty and the caller decides.
    """
    addresses = await context.resolve(host)
    if not addresses and context.config.allowed_targets is not None:
        raise AccessDenied(f"cannot resolve {host}", rule="allowed_targets")
    resolved: dict[str, list[str]] = {}
    allow_list = context.config.allowed_targets
    if allow_list is not None:
        for name in sorted(allow_list.hostnames()):
            resolved[name] = await context.resolve(name)
    return addresses, resolved


async def checked_address(context: DialContext, host: str, port: int) -> tuple[str, bool]:
    """The address to dial for C{host:port}, and whether it was checked.

    Raises L{AccessDenied} (rule C{allowed_targets}) for a target the checks
    refuse, and L{LookupError} (or the resolver's error) for a name that
    cannot be resolved by a daemon that resolves names: such a name is never
    dialled unchecked.  Only a core without a resolver (tests) gets the name
    back unchecked, for the connector to resolve.
    """
    addresses, resolved_hosts = await resolve_checked(context, host)
    if not addresses:  # no allow-list, and the name resolves to nothing
        if context.resolves_names:
            raise LookupError(host)
        return host, False
    check_target(context.config, port, addresses, resolved_hosts, host)
    return addresses[0], True


async def check_item_targets(
    context: DialContext, item: Item, ports: frozenset[int] | None = None
) -> None:
    """Every remote port of the item's host (or C{ports}) passes C{allowed_targets}.

    The built-in default applies without an allow-list too: loopback, link-local
    and the Jumpoint's own listener only when listed explicitly.  A host that
    resolves to nothing passes here only without an allow-list (each connection
    is checked again when it is dialled).
    """
    if not item.host:
        return
    addresses, resolved = await resolve_checked(context, item.host)
    if not addresses:
        return
    for port in sorted(item.remote_ports if ports is None else ports):
        check_target(context.config, port, addresses, resolved, item.host)


def own_endpoints(config: JumpointConfig) -> list[tuple[str, int]]:
    """The Jumpoint's own listening endpoints: never targets unless listed explicitly."""
    hosts = [config.listen_host, *config.addresses]
    return [(host, config.listen_port) for host in dict.fromkeys(hosts)]


def check_allowed_targets(
    allow_list: AllowList | None,
    port: int,
    addresses: Sequence[str],
    resolved_hosts: Mapping[str, Sequence[str]],
    host: str,
    own: Sequence[tuple[str, int]] = (),
) -> None:
    """The Jumpoint-local allow-list and the built-in default: every address must pass.

    Loopback, link-local and the Jumpoint's own listener (C{own}) are refused
    unless the allow-list names them explicitly, also when there is no allow-list
    (L{EgressGuard}).
    """
    decision = EgressGuard.of(allow_list, own).check(port, addresses, resolved_hosts)
    if not decision.allowed:
        shown = host if decision.address in (None, host) else f"{host} ({decision.address})"
        raise AccessDenied(
            f"{shown}:{port} is not in this Jumpoint's allowed_targets: {decision.reason}",
            rule="allowed_targets",
        )


def check_target(
    config: JumpointConfig,
    port: int,
    addresses: Sequence[str],
    resolved_hosts: Mapping[str, Sequence[str]],
    host: str,
) -> None:
    """L{check_allowed_targets} with this Jumpoint's allow-list and own listener."""
    check_allowed_targets(
        config.allowed_targets, port, addresses, resolved_hosts, host, own_endpoints(config)
    )
