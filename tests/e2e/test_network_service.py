"""`jump network-service` for real: root, a network namespace, throwaway users and a group.

Each test makes its own namespace (C{jpt-nsvc-...}), runs the real service
process inside it and a console stand-in (tests/e2e/tun_client.py) that drops
to a throwaway user in the service's throwaway group (or one outside it, or
stays root).  Addresses come from 198.18.0.0/15 only.  The state is checked
with C{ip -n NS -j} (not with the code under test); packets cross the received
descriptor both ways: a ping from the namespace is read from it, and an echo
request written into it is answered by the kernel back into it.  Closing the
client, killing it with SIGKILL and stopping the service each leave no
interface and no route behind (polled with a deadline).  Every namespace,
process, user and group is removed even when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.accounts import Account, Accounts, folder_others_may_enter, throwaway_accounts
from tests.e2e.harness import wait_until
from tests.e2e.packets import echo_request

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
JUMP = str(ROOT / ".venv" / "bin" / "jump")
INNER = "198.19.0.2"
ROUTES = ["198.18.1.0/24", "198.18.2.7"]
TARGET = "198.18.1.7"

pytestmark = pytest.mark.skipif(
    sys.platform != "linux"
    or os.geteuid() != 0
    or not os.path.exists("/dev/net/tun")
    or shutil.which("ip") is None
    or shutil.which("useradd") is None,
    reason="needs Linux, root, /dev/net/tun, ip (iproute2) and useradd",
)


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def ip_json(namespace: str, *args: str) -> list[dict[str, Any]]:
    out = run("ip", "-n", namespace, "-j", *args)
    return json.loads(out) if out.strip() else []


# -- fixtures: a namespace, users and a group, a folder others may enter --------------------


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"jpt-nsvc-{secrets.token_hex(3)}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def accounts() -> Iterator[Accounts]:
    with throwaway_accounts() as made:
        yield made


@pytest.fixture
def run_dir() -> Iterator[Path]:
    with folder_others_may_enter("jpt-nsvc-") as path:
        yield path


# -- processes ----------------------------------------------------------------------------


@dataclass
class Service:
    popen: subprocess.Popen[bytes]
    socket: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Client:
    popen: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)

    def next(self) -> dict[str, Any]:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()  # the helper answers every command (or exits)
        assert line, f"the client exited ({self.popen.poll()})"
        event: dict[str, Any] = json.loads(line)
        self.events.append(event)
        return event

    def command(self, text: str) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text + "\n")
        self.popen.stdin.flush()
        return self.next()


class Processes:
    def __init__(self, namespace: str, run_dir: Path) -> None:
        self.namespace = namespace
        self.run_dir = run_dir
        self.started: list[subprocess.Popen[Any]] = []

    def service(self, group: str) -> Service:
        path = self.run_dir / "run" / "network.sock"
        log = self.run_dir / "service.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [
                    *("ip", "netns", "exec", self.namespace, JUMP, "network-service"),
                    *("--socket", str(path), "--group", group),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        self.started.append(popen)
        service = Service(popen, path, log)
        wait_until(
            lambda: "listening on" in service.output() or popen.poll() is not None,
            what="the network service to listen",
        )
        assert popen.poll() is None, service.output()
        return service

    def client(
        self,
        service: Service,
        account: Account | None,
        *,
        in_namespace: bool = False,
        name: str | None = None,
        routes: list[str] = ROUTES,
    ) -> Client:
        args = [PYTHON, "-m", "tests.e2e.tun_client", "--socket", str(service.socket)]
        args += ["--address", INNER]
        for route in routes:
            args += ["--route", route]
        if name is not None:
            args += ["--name", name]
        if account is not None:
            args += ["--uid", str(account.uid), "--gid", str(account.gid)]
            args += ["--groups", ",".join(str(g) for g in account.groups)]
        if in_namespace:
            args = ["ip", "netns", "exec", self.namespace, *args]
        popen = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.started.append(popen)
        return Client(popen)

    def stop_all(self) -> None:
        for popen in self.started:
            if popen.poll() is None:
                popen.kill()
            popen.wait(timeout=10)


@pytest.fixture
def processes(namespace: str, run_dir: Path) -> Iterator[Processes]:
    made = Processes(namespace, run_dir)
    try:
        yield made
    finally:
        made.stop_all()
        log = run_dir / "service.log"
        if log.exists():  # shown by pytest when the test fails
            print("=== jump network-service\n" + log.read_text(errors="replace"))


# -- packets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Icmp:
    source: str
    destination: str
    type: int
    ident: int
    payload: bytes


def parse_icmp(packet: bytes) -> Icmp | None:
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return None
    start = (packet[0] & 0x0F) * 4
    kind, _, _, ident, _ = struct.unpack("!BBHHH", packet[start : start + 8])
    return Icmp(
        socket.inet_ntoa(packet[12:16]),
        socket.inet_ntoa(packet[16:20]),
        kind,
        ident,
        packet[start + 8 :],
    )


def read_icmp(client: Client, kind: int) -> Icmp:
    """The next ICMP packet of type C{kind} read from the client's TUN (others skipped)."""
    for _ in range(20):
        event = client.command("read")
        assert event["event"] == "packet", event
        icmp = parse_icmp(bytes.fromhex(event["hex"]))
        if icmp is not None and icmp.type == kind:
            return icmp
    raise AssertionError(f"no ICMP type {kind} among 20 packets")


# -- state checks --------------------------------------------------------------------------


def interface_state(namespace: str, interface: str) -> dict[str, Any] | None:
    for link in ip_json(namespace, "addr", "show"):
        if link.get("ifname") == interface:
            return link
    return None


def routes_via(namespace: str, interface: str) -> list[str]:
    return sorted(
        route["dst"]
        for route in ip_json(namespace, "route", "show")
        if route.get("dev") == interface
    )


def jpt_routes(namespace: str) -> list[dict[str, Any]]:
    return [
        r for r in ip_json(namespace, "route", "show") if str(r.get("dev", "")).startswith("jpt")
    ]


def wait_gone(namespace: str, interface: str) -> None:
    wait_until(
        lambda: (
            interface_state(namespace, interface) is None and routes_via(namespace, interface) == []
        ),
        timeout=10,
        what=f"{interface} and its routes to go",
    )
    assert jpt_routes(namespace) == []


def check_created(namespace: str, interface: str) -> None:
    link = interface_state(namespace, interface)
    assert link is not None, f"no {interface} in {namespace}"
    assert link["mtu"] == 1400
    assert "UP" in link["flags"]
    addresses = [(a["family"], a["local"], a["prefixlen"]) for a in link["addr_info"]]
    assert addresses == [("inet", INNER, 32)]  # no inet6: IPv6 is off on it
    assert routes_via(namespace, interface) == ["198.18.1.0/24", "198.18.2.7"]
    disabled = run(
        "ip", "netns", "exec", namespace, "cat", f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6"
    )
    assert disabled.strip() == "1"


# -- tests ---------------------------------------------------------------------------------


def test_a_member_gets_a_working_tun_and_close_removes_it(
    namespace: str, accounts: Accounts, processes: Processes
) -> None:
    service = processes.service(accounts.group)
    assert oct(service.socket.stat().st_mode & 0o777) == "0o660"
    assert service.socket.stat().st_gid == accounts.gid
    client = processes.client(service, accounts.member)
    acquired = client.next()
    assert acquired["event"] == "acquired", acquired
    assert acquired["method"] == "service"
    assert acquired["uid"] == accounts.member.uid
    interface = acquired["interface"]
    assert interface.startswith("jpt")
    check_created(namespace, interface)

    # a ping from the namespace leaves through the TUN: the client reads it
    ping = subprocess.Popen(
        ["ip", "netns", "exec", namespace, "ping", "-c", "1", "-W", "5", TARGET],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes.started.append(ping)
    request = read_icmp(client, 8)
    assert (request.source, request.destination) == (INNER, TARGET)

    # a packet the client writes enters the namespace: its echo reply comes back out
    payload = secrets.token_bytes(24)
    written = client.command(f"write {echo_request(TARGET, INNER, 0x1234, payload).hex()}")
    assert written == {"event": "written", "bytes": 52}
    reply = read_icmp(client, 0)
    assert (reply.source, reply.destination, reply.ident, reply.payload) == (
        INNER,
        TARGET,
        0x1234,
        payload,
    )

    closed = client.command("close")
    assert closed["removed"] == {
        "interface": interface,
        "address": f"{INNER}/32",
        "routes": ["198.18.1.0/24", "198.18.2.7/32"],
        "already_gone": False,
    }
    wait_gone(namespace, interface)
    assert client.popen.wait(timeout=10) == 0
    output = service.output()
    assert f"admitted uid {accounts.member.uid} ({accounts.member.name})" in output
    assert (
        f"interface {interface} (198.19.0.2/32; routes 198.18.1.0/24, 198.18.2.7/32) removed (the caller asked"
        in output
    )


def test_kill_9_of_the_client_removes_the_interface(
    namespace: str, accounts: Accounts, processes: Processes
) -> None:
    service = processes.service(accounts.group)
    client = processes.client(service, accounts.member)
    interface = client.next()["interface"]
    check_created(namespace, interface)
    client.popen.send_signal(signal.SIGKILL)
    client.popen.wait(timeout=10)
    wait_gone(namespace, interface)
    wait_until(
        lambda: "(the connection closed;" in service.output(), timeout=10, what="the log line"
    )


def test_a_caller_outside_the_group_is_refused(
    namespace: str, accounts: Accounts, processes: Processes
) -> None:
    service = processes.service(accounts.group)
    client = processes.client(service, accounts.outsider)
    refused = client.next()
    assert refused["event"] == "error"
    # the socket is 0660 root:group: the kernel refuses the connect itself
    assert refused["code"] == "network_service_unavailable"
    assert "does not admit you (permission denied" in refused["message"]
    assert client.popen.wait(timeout=10) == 1
    assert jpt_routes(namespace) == []
    assert [link["ifname"] for link in ip_json(namespace, "link", "show")] == ["lo"]


def test_the_service_refuses_a_connected_caller_outside_the_group(
    namespace: str, accounts: Accounts, processes: Processes
) -> None:
    service = processes.service(accounts.group)
    service.socket.chmod(0o666)  # past the file mode: the peer check decides
    client = processes.client(service, accounts.outsider)
    refused = client.next()
    assert refused["event"] == "error"
    assert refused["code"] == "denied"
    assert refused["rule"] == "network_service.group"
    assert f"uid {accounts.outsider.uid} ({accounts.outsider.name})" in refused["message"]
    assert f"usermod -aG {accounts.group} {accounts.outsider.name}" in refused["hint"]
    wait_until(
        lambda: f"refused uid {accounts.outsider.uid}" in service.output(),
        timeout=10,
        what="the refusal in the log",
    )
    assert [link["ifname"] for link in ip_json(namespace, "link", "show")] == ["lo"]


def test_a_name_in_use_is_refused_and_a_free_one_given(
    namespace: str, accounts: Accounts, processes: Processes
) -> None:
    service = processes.service(accounts.group)
    first = processes.client(service, accounts.member, name="jptnsvc")
    assert first.next()["interface"] == "jptnsvc"
    second = processes.client(service, accounts.member, name="jptnsvc")
    refused = second.next()
    assert refused["code"] == "network_setup"
    assert refused["message"] == "interface jptnsvc exists already"
    check_created(namespace, "jptnsvc")  # the first one is untouched
    first.command("close")
    wait_gone(namespace, "jptnsvc")


def test_a_route_over_a_network_the_machine_is_on_is_refused(
    namespace: str, accounts: Accounts, processes: Processes
) -> None:
    run("ip", "-n", namespace, "link", "add", "jpt-v0", "type", "veth", "peer", "name", "jpt-v1")
    run("ip", "-n", namespace, "addr", "add", "198.18.5.1/24", "dev", "jpt-v0")
    run("ip", "-n", namespace, "link", "set", "jpt-v0", "up")
    run("ip", "-n", namespace, "link", "set", "jpt-v1", "up")
    service = processes.service(accounts.group)
    client = processes.client(service, accounts.member, routes=["198.18.1.0/24", "198.18.5.128/25"])
    refused = client.next()
    assert refused["code"] == "invalid_request"
    assert refused["message"] == (
        "routes: 198.18.5.128/25 overlaps 198.18.5.0/24, the network of jpt-v0 on this machine"
        " (routing it into the tunnel would cut this machine off from it)"
    )
    links = sorted(link["ifname"] for link in ip_json(namespace, "link", "show"))
    assert links == ["jpt-v0", "jpt-v1", "lo"]  # no TUN was made
    assert [r["dst"] for r in jpt_routes(namespace)] == ["198.18.5.0/24"]  # jpt-v0's own


def test_stopping_the_service_removes_every_interface(
    namespace: str, accounts: Accounts, processes: Processes
) -> None:
    service = processes.service(accounts.group)
    client = processes.client(service, accounts.member)
    interface = client.next()["interface"]
    check_created(namespace, interface)
    service.popen.send_signal(signal.SIGTERM)
    assert service.popen.wait(timeout=20) == 0
    wait_gone(namespace, interface)
    assert not service.socket.exists()
    assert "removed (the service is stopping" in service.output()
    assert "Unhandled Error" not in service.output()  # the port removed its socket file, once
    assert "Traceback" not in service.output()


def test_as_root_the_console_creates_the_interface_itself(
    namespace: str, processes: Processes, run_dir: Path
) -> None:
    absent = Service(subprocess.Popen(["true"]), run_dir / "absent.sock", run_dir / "none.log")
    absent.popen.wait()
    client = processes.client(absent, None, in_namespace=True)
    acquired = client.next()
    assert acquired["event"] == "acquired", acquired
    assert acquired["method"] == "direct"
    interface = acquired["interface"]
    check_created(namespace, interface)
    client.popen.send_signal(signal.SIGKILL)  # the kernel removes a dead process's TUN
    client.popen.wait(timeout=10)
    wait_gone(namespace, interface)
