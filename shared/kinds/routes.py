"""SQL Server routing targets: the C{HOST:PORT} entries of an mssql item's C{allowed_routes}.

A routing answer of the server may send the login elsewhere; the Jumpoint
follows it only to the item's own target or to one of these entries
(L{shared.kinds.base.Item.allows_route}).  Hosts compare canonically (lower
case, no trailing dot or brackets, IP addresses normalised).
"""

from __future__ import annotations

import ipaddress

from shared import schema


def canonical_route_host(host: str) -> str:
    """A host as routing compares it: lower case, no trailing dot or brackets, IPs normalised."""
    text = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def split_route(text: str) -> tuple[str, int]:
    """C{HOST:PORT} (C{[IPV6]:PORT}) of an C{allowed_routes} entry; raises L{ValueError}."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example replica.corp:1433)")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, as [::1]:1433")
    name = canonical_route_host(host)
    pattern = name[2:] if name.startswith("*.") else name
    if not pattern or not schema.is_host(pattern):
        raise ValueError(f"{text!r}: {host!r} is not a host name, *.domain or IP address")
    return name, int(port)
