"""The network tunnel lab: remote targets, a real Jumpoint and real consoles in three namespaces.

On top of L{tests.e2e.netns.three_namespaces}:

* L{start_targets}: the remote network's servers in the remote namespace, all
  real programs: a UDP echo (C{socat}, port 7), a DNS server (C{dnsmasq},
  port 53, C{svc.jpt.test} is L{REMOTE}), two HTTP servers (C{python -m
  http.server}, ports 8080 and 8081) and C{iperf3 -s} (port 5201); ICMP is
  the kernel's.  Every one answers on every address the remote host has when
  they start (a UDP echo per address, so that each reply comes from the
  address asked).
* L{NetnsDeployment}: a L{tests.e2e.harness.Deployment} whose C{jumpoint
  serve} runs in the Jumpoint's namespace, listening on its console-side
  address, and whose C{jump} commands run in the console's namespace;
  L{network_deployment} writes its items, the C{network:} section (pool
  L{POOL}) and C{allowed_targets} (the remote network), starts it and enrolls
  the user.
* L{open_network}: C{jump open ITEM --json} in the console namespace (as root:
  it makes its TUN itself), or through L{jump_as_user_command} as an ordinary
  user (its TUN from C{jump network-service}); L{NetworkSession} holds the
  process and its C{ready} event (C{interface}, C{address}, C{routes}).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import DEADLINE, Deployment, Process, tool, wait_until
from tests.e2e.netns import (
    CONSOLE_LINK,
    REMOTE_LINK,
    REMOTE_SECOND,
    REMOTE_VETH,
    Lab,
    listening,
    wait_listening,
)

ROOT = Path(__file__).resolve().parents[2]

JUMPOINT_ADDRESS = str(CONSOLE_LINK[1].ip)
"""Where the Jumpoint listens (its end of the console's veth)."""
JUMPOINT_LAN = str(REMOTE_LINK[0].ip)
"""The Jumpoint's address on the remote network: the masqueraded source."""
REMOTE = str(REMOTE_LINK[1].ip)
REMOTE_OTHER = str(REMOTE_SECOND.ip)
REMOTE_NETWORK = str(REMOTE_LINK[0].network)
POOL = "198.19.0.0/24"
"""The Jumpoint's inner address pool (inside 198.18.0.0/15 too)."""
GATEWAY = "198.19.0.1"

UDP_ECHO, DNS, HTTP, HTTP_OTHER, IPERF = 7, 53, 8080, 8081, 5201
DNS_NAME = "svc.jpt.test"
PAGE = "jumpoint network lab\n"
"""The body of the HTTP servers' index page."""


def remote_addresses(lab: Lab) -> list[str]:
    """Every IPv4 address of the remote host's veth (those a test added too)."""
    links = lab.ip_json(lab.remote, "-4", "addr", "show", "dev", REMOTE_VETH)
    return [str(entry["local"]) for link in links for entry in link["addr_info"]]  # type: ignore[attr-defined]


def start_targets(lab: Lab, directory: Path) -> None:
    """The remote network's servers (module docstring), ready when this returns."""
    site = directory / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "index.html").write_text(PAGE)
    remote = lab.remote
    for address in remote_addresses(lab):  # one each: a wildcard socat answers from the first
        lab.spawn(remote, "socat", f"UDP4-RECVFROM:{UDP_ECHO},bind={address},fork", "PIPE")
    lab.spawn(
        remote,
        *("dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null"),
        *(f"--port={DNS}", "--user=root"),
        *(f"--address=/{DNS_NAME}/{REMOTE}", "--pid-file=", "--log-facility=-"),
        log=directory / "dnsmasq.log",
    )
    for port in (HTTP, HTTP_OTHER):
        lab.spawn(
            remote,
            *(sys.executable, "-m", "http.server", str(port), "--directory", str(site)),
            log=directory / f"http-{port}.log",
        )
    lab.spawn(remote, "iperf3", "-s", "-p", str(IPERF), log=directory / "iperf3.log")
    wait_listening(lab, remote, "udp", UDP_ECHO, "the UDP echo")
    wait_listening(lab, remote, "udp", DNS, "dnsmasq")
    for port in (HTTP, HTTP_OTHER):
        wait_listening(lab, remote, "tcp", port, f"the HTTP server on {port}")
    wait_listening(lab, remote, "tcp", IPERF, "iperf3 -s")


@dataclass
class NetnsDeployment(Deployment):
    """A Deployment whose Jumpoint and consoles run in the lab's namespaces (module docstring)."""

    lab: Lab | None = None

    def listening(self) -> bool:
        assert self.lab is not None
        return listening(self.lab, self.lab.jumpoint, "tcp", self.port)


def network_item(name: str, *filters: str) -> dict[str, Any]:
    return {"name": name, "type": "network", "filters": list(filters)}


def network_deployment(
    lab: Lab, root: Path, items: list[dict[str, Any]], **sections: Any
) -> NetnsDeployment:
    """A Jumpoint serving C{items} in the lab, with C{alice} enrolled (module docstring)."""
    deployment = NetnsDeployment(
        root,
        items=items,
        lab=lab,
        listen_host=JUMPOINT_ADDRESS,
        jump_prefix=Lab.prefix(lab.console),
        serve_prefix=Lab.prefix(lab.jumpoint),
        sections={
            "allowed_targets": [REMOTE_NETWORK],
            "network": {"pool": POOL},
            **sections,
        },
    )
    deployment.create()
    deployment.serve()
    return deployment


def jump_as_user_command(uid: int, gid: int, groups: list[int]) -> list[str]:
    """The command line that runs `jump` as that user (L{tests.e2e.jump_as_user})."""
    return [
        *(sys.executable, "-m", "tests.e2e.jump_as_user"),
        *("--uid", str(uid), "--gid", str(gid), "--groups", ",".join(map(str, groups)), "--"),
    ]


@dataclass
class NetworkSession:
    """One `jump open` of a network item and its C{ready} event."""

    process: Process
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def interface(self) -> str:
        return str(self.ready["interface"])

    @property
    def address(self) -> str:
        return str(self.ready["address"]).partition("/")[0]

    @property
    def routes(self) -> list[str]:
        return [str(route) for route in self.ready["routes"]]

    def close(self) -> int:
        """SIGTERM, as a user's Ctrl-C would; the exit status."""
        self.process.signal(15)
        return self.process.wait()


def open_network(
    deployment: NetnsDeployment,
    item: str,
    *args: str,
    as_user: list[str] | None = None,
    **env: str,
) -> NetworkSession:
    """`jump open ITEM --json ARGS` in the console namespace, once it is ready."""
    lab = deployment.lab
    assert lab is not None
    if as_user is None:
        argv = [*Lab.prefix(lab.console), *tool("jump")]
    else:
        argv = [*Lab.prefix(lab.console), *as_user]
        env.setdefault("PYTHONPATH", str(ROOT))
    process = Process([*argv, "open", item, "--json", *args], deployment.env(**env), cwd=ROOT)
    deployment.processes.append(process)
    ready = process.wait_for_event("ready", timeout=DEADLINE)
    return NetworkSession(process, ready)


def interface_gone(lab: Lab, namespace: str, interface: str) -> bool:
    """No link of that name and no route through it in the namespace."""
    if interface in lab.links(namespace):
        return False
    return not any(route.get("dev") == interface for route in lab.routes(namespace))


def wait_interface_gone(lab: Lab, namespace: str, interface: str) -> None:
    wait_until(
        lambda: interface_gone(lab, namespace, interface),
        timeout=15,
        what=f"{interface} and its routes to go from {namespace}",
    )


def nft_table_present(lab: Lab, namespace: str, table: str = "jumpoint") -> bool:
    return lab.run(namespace, "nft", "list", "table", "inet", table, check=False).returncode == 0
