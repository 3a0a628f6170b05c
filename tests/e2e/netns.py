"""Network namespaces for end-to-end tests: made, joined by veth pairs, and always deleted.

L{three_namespaces} makes the three namespaces of a network tunnel test,
C{jpt-c-PID} (the console), C{jpt-j-PID} (the Jumpoint) and C{jpt-r-PID} (the
remote network), joined by two veth pairs with addresses only from
198.18.0.0/15 (L{CONSOLE_LINK}, L{REMOTE_LINK}).  No namespace has a default
route, so nothing is ever routed out of them; IPv6 is off everywhere (no
router solicitations in the counters).  Everything is deleted in a
C{finally}: the processes started in the namespaces first (a namespace with a
process inside outlives its deletion), then the namespaces, whose veths go
with them.  Namespaces left by a run that was killed (its PID no longer
alive) are swept before a new lab is made.

L{Lab.run} and L{Lab.spawn} run commands in a namespace (C{ip netns exec});
L{Probe} counts packets in one with named nftables counters (a C{raw}
priority prerouting chain: it sees every packet before any other rule);
L{listening} polls C{ss} in a namespace.  Waiting is always polling with a
deadline (L{tests.e2e.harness.wait_until}).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path

from tests.e2e.harness import wait_until

TEST_RANGE = "198.18.0.0/15"
"""RFC 2544 benchmarking space: the only addresses the labs use."""

CONSOLE_LINK = (IPv4Interface("198.18.1.2/30"), IPv4Interface("198.18.1.1/30"))
"""The console's and the Jumpoint's ends of the console-Jumpoint veth."""
REMOTE_LINK = (IPv4Interface("198.18.2.1/24"), IPv4Interface("198.18.2.10/24"))
"""The Jumpoint's and the remote host's ends of the Jumpoint-remote veth."""
REMOTE_SECOND = IPv4Interface("198.18.2.11/24")
"""A second address of the remote host (no filter names it unless a test adds one)."""

CONSOLE_VETH, JUMPOINT_CONSOLE_VETH = "jptc0", "jptj0"
JUMPOINT_REMOTE_VETH, REMOTE_VETH = "jptj1", "jptr0"

_OURS = re.compile(r"^jpt-[cjr]-(\d+)(-[a-z0-9]+)?$")
"""The labs' namespaces: C{jpt-c-PID} or C{jpt-c-PID-TAG}."""


def run(
    args: Sequence[str], *, check: bool = True, timeout: float = 30, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (text output); raise with its output if C{check} and it fails."""
    done = subprocess.run(
        list(args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def namespaces() -> list[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout
    return [entry["name"] for entry in json.loads(out)] if out.strip() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_leftovers() -> list[str]:
    """Delete the labs' namespaces whose creating process is gone (a crashed run); their names."""
    swept = []
    for name in namespaces():
        found = _OURS.match(name)
        if found and not _alive(int(found.group(1))):
            _kill_inside(name)
            run(["ip", "netns", "del", name], check=False)
            swept.append(name)
    return swept


def _kill_inside(namespace: str) -> None:
    """SIGKILL every process still in a namespace (a leftover's servers)."""
    out = run(["ip", "netns", "pids", namespace], check=False).stdout
    for pid in out.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@dataclass
class Lab:
    """Three namespaces joined by veths (module docstring), and what was started in them."""

    console: str
    jumpoint: str
    remote: str
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @staticmethod
    def prefix(namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]

    def run(
        self,
        namespace: str,
        *args: str,
        check: bool = True,
        timeout: float = 30,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in a namespace to completion."""
        return run([*self.prefix(namespace), *args], check=check, timeout=timeout, stdin=stdin)

    def spawn(
        self, namespace: str, *args: str, log: Path | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running command in a namespace; stopped when the lab goes."""
        out = log.open("wb") if log is not None else subprocess.DEVNULL
        try:
            popen = subprocess.Popen(
                [*self.prefix(namespace), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            if log is not None and not isinstance(out, int):
                out.close()
        self.started.append(popen)
        return popen

    def stop_started(self) -> None:
        for popen in reversed(self.started):
            if popen.poll() is None:
                popen.terminate()
                try:
                    popen.wait(5)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait(5)
        self.started.clear()

    def ip_json(self, namespace: str, *args: str) -> list[dict[str, object]]:
        out = run(["ip", "-n", namespace, "-j", *args]).stdout
        return json.loads(out) if out.strip() else []

    def links(self, namespace: str) -> list[str]:
        return sorted(str(link["ifname"]) for link in self.ip_json(namespace, "link", "show"))

    def routes(self, namespace: str) -> list[dict[str, object]]:
        return self.ip_json(namespace, "route", "show")


def _veth(a_ns: str, a_name: str, b_ns: str, b_name: str) -> None:
    run(["ip", "link", "add", a_name, "netns", a_ns, "type", "veth", "peer", b_name, "netns", b_ns])


def _address(namespace: str, device: str, *addresses: IPv4Interface) -> None:
    for address in addresses:
        run(["ip", "-n", namespace, "addr", "add", str(address), "dev", device])
    run(["ip", "-n", namespace, "link", "set", device, "up"])


def _prepare(namespace: str) -> None:
    run(["ip", "-n", namespace, "link", "set", "lo", "up"])
    for key in ("all", "default"):
        run(
            [
                *Lab.prefix(namespace),
                *("sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"),
            ]
        )


@contextlib.contextmanager
def three_namespaces(tag: str | None = None) -> Iterator[Lab]:
    """The console, Jumpoint and remote namespaces (module docstring), deleted afterwards.

    @param tag: tells apart two labs of one process (C{jpt-c-PID-TAG}).
    """
    sweep_leftovers()
    suffix = f"{os.getpid()}-{tag}" if tag else str(os.getpid())
    lab = Lab(f"jpt-c-{suffix}", f"jpt-j-{suffix}", f"jpt-r-{suffix}")
    made: list[str] = []
    try:
        for name in (lab.console, lab.jumpoint, lab.remote):
            if name in namespaces():  # ours, from this process: a fixture that did not finish
                _kill_inside(name)
                run(["ip", "netns", "del", name])
            run(["ip", "netns", "add", name])
            made.append(name)
            _prepare(name)
        _veth(lab.console, CONSOLE_VETH, lab.jumpoint, JUMPOINT_CONSOLE_VETH)
        _veth(lab.jumpoint, JUMPOINT_REMOTE_VETH, lab.remote, REMOTE_VETH)
        _address(lab.console, CONSOLE_VETH, CONSOLE_LINK[0])
        _address(lab.jumpoint, JUMPOINT_CONSOLE_VETH, CONSOLE_LINK[1])
        _address(lab.jumpoint, JUMPOINT_REMOTE_VETH, REMOTE_LINK[0])
        _address(lab.remote, REMOTE_VETH, REMOTE_LINK[1], REMOTE_SECOND)
        yield lab
    finally:
        lab.stop_started()
        for name in reversed(made):
            _kill_inside(name)
            run(["ip", "netns", "del", name], check=False)


def listening(lab: Lab, namespace: str, protocol: str, port: int) -> bool:
    """Whether something listens on C{port} (C{tcp} or C{udp}) in the namespace."""
    flag = "-Hltn" if protocol == "tcp" else "-Hlun"
    out = lab.run(namespace, "ss", flag, f"sport = :{port}", check=False).stdout
    return bool(out.strip())


def wait_listening(lab: Lab, namespace: str, protocol: str, port: int, what: str) -> None:
    wait_until(lambda: listening(lab, namespace, protocol, port), what=what)


class Probe:
    """Named packet counters in a namespace: C{table inet jptprobe}, prerouting at raw priority.

    Counter C{NAME} is the nftables counter C{n_NAME} (a bare name may be a
    keyword of nft's grammar).  A new probe replaces the namespace's last one.

    @param counters: each counter's name and the nftables match it counts
        (C{'udp dport 9'}); a packet may count in several.
    """

    TABLE = "jptprobe"

    def __init__(self, lab: Lab, namespace: str, counters: dict[str, str]) -> None:
        self.lab = lab
        self.namespace = namespace
        self.counters = dict(counters)
        lines = [f"table inet {self.TABLE} {{}}", f"delete table inet {self.TABLE}"]
        lines += [f"table inet {self.TABLE} {{"]
        lines += [f"  counter n_{name} {{ }}" for name in self.counters]
        lines += [
            "  chain watch {",
            "    type filter hook prerouting priority raw; policy accept;",
        ]
        lines += [f'    {match} counter name "n_{name}"' for name, match in self.counters.items()]
        lines += ["  }", "}"]
        run([*Lab.prefix(namespace), "nft", "-f", "-"], stdin="\n".join(lines) + "\n")

    def packets(self) -> dict[str, int]:
        """Every counter's packets so far."""
        out = self.lab.run(
            self.namespace, "nft", "-j", "list", "counters", "table", "inet", self.TABLE
        ).stdout
        found = {}
        for entry in json.loads(out)["nftables"]:
            counter = entry.get("counter")
            if counter is not None:
                found[str(counter["name"]).removeprefix("n_")] = int(counter["packets"])
        return found

    def __getitem__(self, name: str) -> int:
        return self.packets()[name]
