"""Item kinds as plug-ins: one module per kind and side, registered here by name.

A kind is known by its wire and config name (an item's C{type}: C{tcp},
C{mssql}, C{k8s}, C{network}).  Its parts:

* shared (this package, one module per kind): the item schema and fields,
  the checks that span fields, the values it stores (L{Kind});
* console (L{console.kinds}, one module per kind, keyed by the same names):
  the listener factory of C{jump open}, what C{jump open} prints and sets
  for the session (C{KUBECONFIG}...), the rendering in C{jump items} and
  C{jump item show} and the service text of the live view, the
  C{jump item create KIND} command;
* Jumpoint (C{jumpoint/kinds/}, one module per kind, keyed by the same
  names): when the kind can be opened here (C{openable}, C{platforms}), the
  C{tunnels_restricted.protocol} it uses, its upstream (the bridge of one
  stream, when and what it dials), how a refused stream ends, whether
  C{jump item tunnel} applies, and its own audit events.

Adding a kind means adding its modules and one registration line per side
(L{BUILT_IN} here, L{console.kinds.BUILT_IN} and C{jumpoint.kinds.BUILT_IN}
there); no other code names a kind.  L{shared.items} keeps the public schema
API (L{shared.items.Item}, L{shared.items.item_from_data}...) and delegates
every per-kind step here.  C{tests/unit/test_kinds.py} and
C{tests/unit/test_jumpoint_kinds.py} check that the three registries hold
the same names, and that a test-only kind registered with one line per side
is validated, rendered and opened.
"""

from __future__ import annotations

from shared.kinds import kubernetes, mssql, network, tcp
from shared.kinds.base import Item, Kind, kind_named, kind_names, register, registered, unregister

BUILT_IN: tuple[Kind, ...] = (
    tcp.KIND,
    mssql.KIND,
    kubernetes.KIND,
    network.KIND,
)
"""The kinds this release knows, one line each; their order is the schema's (``type``)."""

for _kind in BUILT_IN:
    register(_kind)

__all__ = [
    "BUILT_IN",
    "Item",
    "Kind",
    "kind_named",
    "kind_names",
    "register",
    "registered",
    "unregister",
]
