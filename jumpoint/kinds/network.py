"""The C{network} kind on the Jumpoint: defined and listed, not yet opened.

Its items (filter rules) are checked and shown, but this Jumpoint cannot open
them: a session request for one is refused as not supported.  The factory is
never called (the access rules refuse first); it builds a plain byte bridge
so that the kind stays complete.
"""

from __future__ import annotations

from jumpoint.config import JumpointConfig
from jumpoint.kinds.base import JumpointKind
from jumpoint.kinds.tcp import open_upstream as tcp_upstream
from jumpoint.network import host_checks
from shared.kinds.network import KIND as SHARED


def host_problems(config: JumpointConfig) -> list[str]:
    """Linux, CAP_NET_ADMIN, nft and forwarding (L{jumpoint.network.host_checks})."""
    return host_checks.problems(config.network)


KIND = JumpointKind(
    shared=SHARED, open_upstream=tcp_upstream, openable=False, host_problems=host_problems
)
