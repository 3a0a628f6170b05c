"""Whether this host can run network tunnels: what C{jumpoint check-config} reports.

A Jumpoint with network items needs Linux, the CAP_NET_ADMIN capability (to
create its TUN interface and install its nftables table), the C{nft} command
(with C{egress: masquerade}) and kernel forwarding it can switch on.  Each
missing piece is one line saying what to do; the checks read the host and
change nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from jumpoint.network.egress import IP_FORWARD
from jumpoint.network.settings import NetworkSettings

CAP_NET_ADMIN = 12
"""The capability's bit in C{CapEff} (linux/capability.h)."""


def effective_capabilities(status: Path = Path("/proc/self/status")) -> int | None:
    """The process's effective capability set, or None where it cannot be read."""
    try:
        for line in status.read_text(encoding="ascii").splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        return None
    return None


def problems(
    settings: NetworkSettings,
    *,
    platform: str = sys.platform,
    capabilities: Callable[[], int | None] = effective_capabilities,
    which: Callable[[str], str | None] = shutil.which,
    ip_forward: Path = IP_FORWARD,
) -> list[str]:
    """What keeps this host from opening network items (empty: nothing)."""
    if not platform.startswith("linux"):
        return [f"network tunnels need a Linux Jumpoint (this one runs on {platform})"]
    found: list[str] = []
    caps = capabilities()
    if caps is None or not caps & (1 << CAP_NET_ADMIN):
        found.append(
            "the Jumpoint lacks CAP_NET_ADMIN (needed for its TUN interface"
            f" {settings.interface!r} and its nftables table): run it as root or give the"
            " service AmbientCapabilities=CAP_NET_ADMIN"
        )
    if settings.egress == "masquerade" and which("nft") is None:
        found.append("the nft command is missing (egress: masquerade): install nftables")
    try:
        forwarding = ip_forward.read_text(encoding="ascii").strip()
    except OSError as error:
        found.append(f"kernel forwarding cannot be read ({ip_forward}: {error.strerror})")
    else:
        if forwarding != "1" and not os.access(ip_forward, os.W_OK):
            found.append(
                f"kernel forwarding is off and cannot be enabled ({ip_forward} is not"
                " writable): set net.ipv4.ip_forward=1"
            )
    return found
