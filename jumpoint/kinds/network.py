"""The C{network} kind on the Jumpoint: defined and listed, not yet opened.

Its items (filter rules) are checked and shown, and C{jump item filter} adds
and removes their rules, but this Jumpoint cannot open them: a session
request for one is refused as not supported.  The factory is
never called (the access rules refuse first); it builds a plain byte bridge
so that the kind stays complete.
"""

from __future__ import annotations

from jumpoint.kinds.base import JumpointKind
from jumpoint.kinds.tcp import open_upstream as tcp_upstream
from shared.kinds.network import KIND as SHARED

KIND = JumpointKind(shared=SHARED, open_upstream=tcp_upstream, openable=False, has_filters=True)
