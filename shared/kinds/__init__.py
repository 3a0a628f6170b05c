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
* Jumpoint (C{jumpoint/kinds/}, next): see below.

Adding a kind means adding its modules and one registration line per side
(L{BUILT_IN} here, L{console.kinds.BUILT_IN} there); no other code names a
kind.  L{shared.items} keeps the public schema API (L{shared.items.Item},
L{shared.items.item_from_data}...) and delegates every per-kind step here.

The Jumpoint side (to be wired once the request handling is split): a
C{jumpoint/kinds/<kind>.py} per kind, registered in C{jumpoint/kinds/__init__.py}
under the same names, each providing a C{JumpointKind} with

* C{supported(platform) -> str | None}: why this Jumpoint cannot open the
  kind (None: it can).  Today C{jumpoint/access.py} C{SUPPORTED_KINDS}
  (C{network} cannot be opened yet: "only tcp, mssql and k8s items can be
  opened for now") and "Kubernetes items need a Linux Jumpoint";
* C{protocol: str}: the C{tunnels_restricted.protocol} a session of the kind
  uses (C{tcp} for the three kinds that open today);
* C{upstream(stream, core, session, on_closed, groups) -> TcpBridge}: the
  bridge of one stream towards the target (today C{jumpoint/server.py}
  C{StreamConnection.__init__}: C{TdsUpstreamBridge} for mssql,
  C{KubeUpstreamBridge} for k8s, a plain C{TcpBridge} otherwise), with
  C{refused_before_dial()} (mssql: no credential, the client gets its login
  failure first);
* C{refuse(stream, code, reason)}: how a stream the policy refuses is ended
  (mssql: a TDS login failure, C{refuse_stream}; others: a RESET with the
  code; today C{server.py} after C{connection_denied});
* policy hooks: C{login_timeout(item, session_policy)} applies to the kinds
  with L{Kind.logs_in} (already read from here through
  L{shared.items.LOGIN_KINDS}); the per-request rules of the kind (k8s:
  namespaces, read-only, denied resources, exec, port-forward; mssql:
  C{allowed_routes}, the credential lookup written once for both);
* C{changes: frozenset[str]}: the C{change_item} operations the kind accepts
  (tcp: C{tunnel_add}, C{tunnel_remove}; today C{jumpoint/handlers.py}
  "only tcp items have tunnels");
* audit events: the names and fields of its own events (mssql:
  C{sql_login}, C{sql_login_failed}, C{sql_routed}, C{sql_batch},
  C{sql_rpc}, C{sql_malformed}, C{sql_message_too_large}; k8s:
  C{k8s_request}, C{k8s_discovery}, C{k8s_denied}), listed by the kind so
  that the audit documentation table is checked against the registry.

Each C{jumpoint/kinds/<kind>.py} imports its shared module (for C{NAME})
and is keyed by the same name; a test checks that the three registries
hold the same names (today: L{shared.kinds} and L{console.kinds},
C{tests/unit/test_kinds.py}).
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
