"""`jump open` of a network item for real: root, one network namespace, the direct TUN.

The test makes its own namespace (C{jpt-open-PID}) and moves its own thread
into it (C{setns}), so that every process it starts (the real `jumpoint
serve` with a C{network:} section, the real `jump open lab-net --json` as
root, C{ip}, C{ping}) runs there; the thread moves back and the namespace
is deleted whatever happens.  Addresses come from 198.18.0.0/15 only.

What it shows: the C{ready} event names the interface, the inner address
and the routes; while the session is open the interface exists with that
address and those routes (read with C{ip -j}, not with the code under
test); a ping from the namespace goes into the interface, through `jump`
and the Jumpoint's filter (the Jumpoint's audit counts its bytes); Ctrl-C
removes the interface and says so; after `kill -9` of `jump open` the
kernel removes it with its last descriptor, routes and all; a command run
with C{-- CMD} gets its variables; a route that clashes with a network of
the namespace ends `jump open` with its message and status.  Without
CAP_NET_ADMIN (C{setpriv --bounding-set -net_admin}) `jump` asks the real
`jump network-service`, which removes the interface when asked and when its
caller is killed.  The replies
of the target are not tested here: in one namespace the console's inner
address is local, so the kernel would not route them back through the
tunnel (the three-namespace suite does that).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.errors import ExitCode
from tests.e2e.harness import Deployment, Process, audit_until, tool, wait_until

CLONE_NEWNET = 0x40000000
POOL = "198.19.77.0/24"
INNER = "198.19.77.2"
ROUTE = "198.18.77.0/24"
ATTACHED = "198.18.78.0/24"
"""A network of a veth pair in the namespace: an item routing it is refused."""
TARGET = "198.18.77.5"
JUMPOINT_INTERFACE = "jptopen0"
GROUPS = {"default": {"jump_groups": {"see": ["*"], "open": ["*"], "manage": ["lab"]}}}

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="needs Linux, root and /dev/net/tun",
)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"setns: {os.strerror(number)}")


@pytest.fixture
def inside_namespace() -> Iterator[str]:
    """A namespace of the test's own, with this thread (and so its children) inside."""
    name = f"jpt-open-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            yield name
        finally:
            _setns(home)
    finally:
        os.close(home)
        subprocess.run(["ip", "netns", "del", name], check=False)


def ip_json(*args: str) -> list[dict[str, Any]]:
    """`ip -j ARGS` in the namespace ([] when the object does not exist)."""
    done = subprocess.run(["ip", "-j", *args], capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        return []
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def interface_state(interface: str) -> tuple[list[str], list[str]]:
    """The interface's IPv4 addresses and its routes' destinations (empty: it is gone)."""
    addresses = [
        f"{info['local']}/{info['prefixlen']}"
        for link in ip_json("addr", "show", "dev", interface)
        for info in link.get("addr_info", [])
        if info.get("family") == "inet"
    ]
    routes = [route["dst"] for route in ip_json("route", "show", "dev", interface)]
    return addresses, routes


def gone(interface: str) -> bool:
    return not ip_json("link", "show", "dev", interface)


def network_deployment(deployment: Deployment) -> Deployment:
    deployment.items = [
        {"name": "lab-net", "type": "network", "filters": [f"{ROUTE}/icmp"]},
        {"name": "clash-net", "type": "network", "filters": [f"{ATTACHED}/icmp"]},
    ]
    deployment.sections = {
        "groups": GROUPS,
        "network": {"pool": POOL, "interface": JUMPOINT_INTERFACE},
        "allowed_targets": ["127.0.0.0/8", ROUTE, ATTACHED],
    }
    deployment.create()
    deployment.serve()
    return deployment


def test_jump_open_of_a_network_item_makes_its_interface_and_removes_it(
    inside_namespace: str, deployment: Deployment
) -> None:
    network_deployment(deployment)
    opened = deployment.open("lab-net")
    ready = opened.wait_for_event("ready")
    interface = ready["interface"]
    assert interface.startswith("jpt")
    assert (ready["address"], ready["routes"], ready["tunnels"]) == (INNER, [ROUTE], [])
    assert (ready["mtu"], ready["method"]) == (1400, "direct")
    assert interface_state(interface) == ([f"{INNER}/32"], [ROUTE])
    opened.wait_for_stderr(f"network interface {interface}: address {INNER}/32")
    opened.wait_for_stderr(f"routes into {interface}: {ROUTE}")

    # into the interface, through jump and the Jumpoint's filter (no answer in one namespace)
    assert shutil.which("ping") is not None
    subprocess.run(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", TARGET], capture_output=True)

    # a stats event counts the packets (here) and the flow (as the Jumpoint's filter decided)
    def counted() -> dict[str, Any] | None:
        for event in opened.json_events():
            link = event.get("link", {})
            if event["event"] == "stats" and link.get("total_flows", 0) >= 1:
                return event
        return None

    stats = wait_until(counted, what="a stats event with the Jumpoint's flow")
    assert stats is not None
    link = stats["link"]
    assert link["packets_out"] >= 3 and link["bytes_out"] >= 3 * 84  # the echo requests
    assert stats["bytes_to_remote"] == link["bytes_out"]  # a network session's bytes
    assert (link["flows"], link["denied_out"], link["jumpoint_dropped_out"]) == (1, 0, 0)
    assert link["dropped_out"] == 0 and "send_rate" in link

    opened.signal(signal.SIGINT)
    assert opened.wait() == 0, opened.output()
    closed = opened.json_events()[-1]
    assert closed["event"] == "closed" and closed["code"] == "interrupted"
    assert closed["link"]["packets_out"] >= link["packets_out"]
    assert closed["link"]["total_flows"] >= 1 and closed["bytes_to_remote"] >= 3 * 84
    assert closed["removed"] == [f"interface {interface} ({INNER}/32; routes {ROUTE}) removed"]
    assert gone(interface)
    (row,) = audit_until(
        deployment,
        lambda rows: len(rows) == 1,
        "--event",
        "session_closed",
        what="the session's closing row",
    )
    assert row["bytes_to_target"] >= 3 * 84  # three echo requests of 84 bytes
    flows = audit_until(deployment, lambda rows: len(rows) >= 1, "--event", "network_flow_opened")
    assert flows[0]["dst"] == TARGET


def test_kill_9_of_jump_open_leaves_no_interface_behind(
    inside_namespace: str, deployment: Deployment
) -> None:
    network_deployment(deployment)
    opened = deployment.open("lab-net")
    interface = opened.wait_for_event("ready")["interface"]
    assert interface_state(interface) == ([f"{INNER}/32"], [ROUTE])
    opened.signal(signal.SIGKILL)
    opened.wait()
    wait_until(lambda: gone(interface), what=f"{interface} to go with its descriptor")
    assert not any(route.get("dst") == ROUTE for route in ip_json("route", "show"))
    # the name is free again: the next session gets an interface of the same name
    again = deployment.open("lab-net")
    assert again.wait_for_event("ready")["interface"] == interface


def test_a_command_gets_the_interface_and_a_refused_interface_ends_the_open_cleanly(
    inside_namespace: str, deployment: Deployment
) -> None:
    network_deployment(deployment)
    script = 'echo "$JUMP_NETWORK_INTERFACE $JUMP_NETWORK_ADDRESS $JUMP_NETWORK_ROUTES"'
    done = deployment.jump("open", "lab-net", "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    interface, address, routes = done.stdout.split()
    assert (address, routes) == (INNER, ROUTE)
    assert f"interface {interface} ({INNER}/32; routes {ROUTE}) removed" in done.stderr
    assert gone(interface)

    veth = ["ip", "link", "add", "jptveth0", "type", "veth", "peer", "name", "jptveth1"]
    subprocess.run(veth, check=True)  # both ends in the namespace: deleted with it
    subprocess.run(["ip", "addr", "add", "198.18.78.1/24", "dev", "jptveth0"], check=True)
    for end in ("jptveth0", "jptveth1"):
        subprocess.run(["ip", "link", "set", end, "up"], check=True)
    refused = deployment.jump("open", "clash-net")
    assert refused.returncode == ExitCode.USAGE, refused.stderr
    assert f"routes: {ATTACHED} overlaps {ATTACHED}, the network of jptveth0" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout
    assert [link["ifname"] for link in ip_json("link", "show", "type", "tun")] == [
        JUMPOINT_INTERFACE
    ]


def test_without_cap_net_admin_the_service_makes_the_interface_and_removes_it_after_kill_9(
    inside_namespace: str, deployment: Deployment, tmp_path: Path
) -> None:
    """Root without CAP_NET_ADMIN (its bounding set): `jump` asks the real service."""
    network_deployment(deployment)
    path = tmp_path / "run" / "network.sock"
    service = Process(
        [*tool("jump"), "network-service", "--socket", str(path), "--group", "root"],
        deployment.env(),
    )
    deployment.processes.append(service)
    service.wait_for_stderr("jump network-service listening on")
    unprivileged = ["setpriv", "--bounding-set", "-net_admin", *tool("jump"), "open", "lab-net"]
    env = deployment.env(JUMP_NETWORK_SOCKET=str(path))

    opened = Process([*unprivileged, "--json"], env)
    deployment.processes.append(opened)
    ready = opened.wait_for_event("ready")
    interface = ready["interface"]
    assert (ready["method"], ready["address"], ready["routes"]) == ("service", INNER, [ROUTE])
    assert interface_state(interface) == ([f"{INNER}/32"], [ROUTE])
    opened.wait_for_stderr(f"network interface {interface}: address {INNER}/32, MTU 1400 (made by")
    opened.signal(signal.SIGINT)
    assert opened.wait() == 0, opened.output()
    assert opened.json_events()[-1]["removed"] == [
        f"interface {interface} ({INNER}/32; routes {ROUTE}) removed"
    ]
    assert gone(interface)

    killed = Process([*unprivileged, "--json"], env)
    deployment.processes.append(killed)
    ready = killed.wait_for_event("ready")
    interface = ready["interface"]  # its address may be the next one: the pool decides
    assert interface_state(interface) == ([f"{ready['address']}/32"], [ROUTE])
    killed.signal(signal.SIGKILL)
    killed.wait()
    wait_until(lambda: gone(interface), what=f"the service to remove {interface}")
    assert not any(route.get("dst") == ROUTE for route in ip_json("route", "show"))
