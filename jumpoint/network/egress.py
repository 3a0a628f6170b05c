"""Egress of network tunnels: kernel forwarding and the nftables table the Jumpoint owns.

With C{egress: masquerade} the Jumpoint installs one table, C{inet jumpoint},
atomically (one C{nft -f} transaction that replaces any table of that name
left by an earlier run), and deletes it when it stops:

  - C{forward}: packets from the Jumpoint's interface pass only with a source
    in the pool (the packet filter already checked each one); towards the
    interface only packets of connections the kernel tracks as established or
    related pass: nothing unsolicited reaches a console, even if the
    Jumpoint's own filter let something through;
  - C{input}: from the interface, only established or related traffic: the
    Jumpoint's own services are never reachable through a network tunnel;
  - C{postrouting} (nat): packets from the pool that leave by another
    interface are masqueraded, so the remote network needs no route back.

The base chains accept by default: traffic that is not the tunnels' is left
to whatever firewall the host has.  Kernel forwarding
(C{net.ipv4.ip_forward}) is switched on at start if it is off, and back off
at stop only if the Jumpoint switched it on.

Commands run through an injected L{CommandRunner} (only at start and stop,
never on the data path), so that the tests see the exact text.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from jumpoint.network.settings import NetworkSettings

TABLE = "jumpoint"
"""The nftables table (family C{inet}) the Jumpoint owns."""

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


CommandRunner = Callable[[Sequence[str], str | None], CommandResult]
"""Runs a command with optional standard input; returns its exit code and output."""


def run_command(argv: Sequence[str], stdin: str | None) -> CommandResult:
    """The real L{CommandRunner} (a subprocess with a time limit)."""
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return CommandResult(127, "", str(error))
    return CommandResult(done.returncode, done.stdout, done.stderr)


class EgressError(Exception):
    """Egress could not be set up or removed; the message says what and why."""


def ruleset(settings: NetworkSettings) -> str:
    """The nftables text that installs the table (module docstring), replacing an old one."""
    interface = settings.interface
    pool = str(settings.pool)
    return f"""table inet {TABLE} {{}}
delete table inet {TABLE}
table inet {TABLE} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{interface}" ip saddr {pool} accept
    iifname "{interface}" counter drop
    oifname "{interface}" ct state established,related accept
    oifname "{interface}" counter drop
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{interface}" ct state established,related accept
    iifname "{interface}" counter drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {pool} oifname != "{interface}" masquerade
  }}
}}
"""


class Egress:
    """Installs and removes what C{egress: masquerade} needs (module docstring)."""

    def __init__(
        self,
        settings: NetworkSettings,
        run: CommandRunner = run_command,
        ip_forward: Path = IP_FORWARD,
    ) -> None:
        self.settings = settings
        self._run = run
        self._ip_forward = ip_forward
        self._enabled_forwarding = False
        self.installed = False

    def install(self) -> None:
        """Switch forwarding on and install the table (atomically); L{EgressError} if not."""
        self._forwarding_on()
        result = self._run(["nft", "-f", "-"], ruleset(self.settings))
        if result.returncode != 0:
            raise EgressError(
                f"nft could not install table inet {TABLE}: {result.stderr.strip() or 'failed'}"
            )
        self.installed = True

    def remove(self) -> list[str]:
        """Remove the table and restore forwarding; what was removed, for the log."""
        removed: list[str] = []
        if self.installed:
            result = self._run(["nft", "delete", "table", "inet", TABLE], None)
            if result.returncode == 0:
                removed.append(f"nftables table inet {TABLE}")
            self.installed = False
        if self._enabled_forwarding:
            try:
                self._ip_forward.write_text("0\n", encoding="ascii")
                removed.append("net.ipv4.ip_forward=1 (set back to 0)")
            except OSError:
                pass
            self._enabled_forwarding = False
        return removed

    def _forwarding_on(self) -> None:
        try:
            if self._ip_forward.read_text(encoding="ascii").strip() == "1":
                return
            self._ip_forward.write_text("1\n", encoding="ascii")
        except OSError as error:
            raise EgressError(
                f"kernel forwarding cannot be enabled ({self._ip_forward}: {error.strerror})"
            ) from None
        self._enabled_forwarding = True
