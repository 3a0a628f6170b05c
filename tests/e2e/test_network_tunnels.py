"""Network tunnels end to end: real `jumpoint serve`, real `jump open`, real clients, three namespaces.

The lab (L{tests.e2e.network_lab}): a console namespace running `jump open
lab-net --json` (as root: it makes its TUN itself; or as an ordinary user
through `jump network-service`), a Jumpoint namespace running `jumpoint serve`
with masquerading egress, and a remote namespace with a UDP echo (socat), a
DNS server (dnsmasq), two HTTP servers and C{iperf3 -s}; addresses only from
198.18.0.0/15, no default route anywhere.  What the tests show:

* ping, a DNS query (dig), UDP echo (socat), HTTP (curl), iperf3 TCP and UDP
  through the tunnel, and a fragmented ping (3000 bytes over an MTU of 1400:
  later fragments pass with the first, docs/policy-guide.md);
* each filter field (address, protocol, ports) allowing and denying, filters
  added and removed with `jump item filter add/remove`;
* denied packets, spoofed sources and stray later fragments never reach the
  remote namespace, and unsolicited traffic from it never reaches the
  console (nftables counters there, L{tests.e2e.netns.Probe}; each check waits
  for a packet sent after the bad ones to arrive first, so "still zero" means
  something);
* the audit's C{network_flow_opened}/C{network_flow_closed} and
  C{network_denied} rows with their rules;
* the console's interface and routes gone after close and after kill -9 of
  `jump open`; the Jumpoint's interface and nftables table gone when it stops,
  its interface gone when it is killed (its table then stays, inert, until a
  restarted Jumpoint replaces it);
* `jump network-service` serving a member of its group and refusing a caller
  outside it.

Module-scoped: one lab, one Jumpoint and one long session serve most tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.accounts import Account, Accounts, folder_others_may_enter, throwaway_accounts
from tests.e2e.harness import audit_until, tool, wait_until
from tests.e2e.netns import JUMPOINT_REMOTE_VETH, REMOTE_VETH, Lab, Probe, three_namespaces
from tests.e2e.network_lab import (
    DNS_NAME,
    GATEWAY,
    HTTP,
    IPERF,
    JUMPOINT_LAN,
    PAGE,
    POOL,
    REMOTE,
    REMOTE_OTHER,
    ROOT,
    UDP_ECHO,
    NetnsDeployment,
    NetworkSession,
    interface_gone,
    jump_as_user_command,
    network_deployment,
    network_item,
    nft_table_present,
    open_network,
    start_targets,
    wait_interface_gone,
)

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="network namespaces and TUN devices need Linux and root",
)

DISCARD = 9
"""A UDP port the items allow where nothing listens: a counter there sees what arrives."""
LAB_NET = network_item(
    "lab-net",
    f"{REMOTE}/icmp",
    f"{REMOTE}/udp/{UDP_ECHO},{DISCARD},53,{IPERF}",
    f"{REMOTE}/tcp/{HTTP},{IPERF}",
)
"""The item of the long session (L{session})."""

FILTERED, FILTERED_OTHER, HOSTILE, AUDITED, CLOSED, SERVED = (
    f"198.18.2.{n}" for n in (20, 21, 30, 40, 50, 60)
)
"""More addresses of the remote host, one per item: two sessions of one console never route
the same address (the second one's route would exist already), so each test that opens
sessions of its own has an item, and a target, of its own."""
ITEMS = [
    LAB_NET,
    network_item("lab-hostile", f"{HOSTILE}/udp/{UDP_ECHO},{DISCARD}"),
    network_item("lab-audited", f"{AUDITED}/icmp", f"{AUDITED}/udp/{UDP_ECHO}"),
    network_item("lab-closed", f"{CLOSED}/icmp"),
    network_item("lab-served", f"{SERVED}/icmp", f"{SERVED}/udp/{UDP_ECHO}"),
]
GROUPS = {"default": {"jump_groups": {"see": ["*"], "open": ["*"], "manage": ["lab"]}}}


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A folder the throwaway users may enter (their JUMP_HOMEs, the service's socket)."""
    with folder_others_may_enter("jpt-netlab-") as path:
        yield path


@pytest.fixture(scope="module")
def lab(workdir: Path) -> Iterator[Lab]:
    with three_namespaces() as made:
        for address in (FILTERED, FILTERED_OTHER, HOSTILE, AUDITED, CLOSED, SERVED):
            made.run(made.remote, "ip", "addr", "add", f"{address}/24", "dev", REMOTE_VETH)
        start_targets(made, workdir / "targets")
        yield made


def remote_probe(lab: Lab, target: str, other: str = REMOTE_OTHER) -> Probe:
    """What arrives in the remote namespace from the Jumpoint, for one test's target."""
    on = f'iifname "{REMOTE_VETH}"'
    return Probe(
        lab,
        lab.remote,
        {
            "masqueraded": f"{on} ip saddr {JUMPOINT_LAN}",
            "inner_source": f"{on} ip saddr {POOL}",
            "to_other": f"{on} ip daddr {other}",
            "echo_requests": f"{on} ip daddr {target} icmp type echo-request",
            "dns": f"{on} ip daddr {target} udp dport 53",
            "discard": f"{on} ip daddr {target} udp dport {DISCARD}",
            "stray_fragment": f"{on} ip id 30583",
        },
    )


@pytest.fixture(scope="module")
def deployment(lab: Lab, workdir: Path) -> Iterator[NetnsDeployment]:
    made = network_deployment(lab, workdir / "jumpoint", ITEMS, groups=GROUPS)
    try:
        yield made
    finally:
        made.stop_and_show()


@pytest.fixture(scope="module")
def session(deployment: NetnsDeployment) -> Iterator[NetworkSession]:
    """One `jump open lab-net --json` as root for the tests that only send traffic."""
    opened = open_network(deployment, "lab-net")
    try:
        yield opened
    finally:
        opened.close()


# -- clients in the console namespace ---------------------------------------------------------


def ping(lab: Lab, address: str, *args: str, count: int = 1) -> subprocess.CompletedProcess[str]:
    return lab.run(
        lab.console, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", *args, address,
        check=False,
    )  # fmt: skip


ASK = """
import socket, sys
address, port, payload, wait = sys.argv[1:]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
    udp.settimeout(float(wait))
    udp.sendto(payload.encode(), (address, int(port)))
    try:
        sys.stdout.write(udp.recv(65535).decode())
    except TimeoutError:
        pass
"""
"""One UDP question and its answer (or none within the wait): socat always waits it out."""


def udp_echo(lab: Lab, address: str, payload: str = "jpt-echo", wait: float = 2) -> str:
    """What the UDP echo sends back (empty when nothing came within C{wait} s)."""
    done = lab.run(
        lab.console, sys.executable, "-c", ASK, address, str(UDP_ECHO), payload, str(wait)
    )
    return done.stdout


def socat_echo(lab: Lab, address: str, payload: str) -> str:
    """The same with socat, a real client (it waits its 2 s whatever comes back)."""
    done = lab.run(
        lab.console, "socat", "-t2", "-T2", "-", f"UDP4:{address}:{UDP_ECHO}",
        stdin=payload, check=False,
    )  # fmt: skip
    return done.stdout


def dig(lab: Lab, address: str) -> subprocess.CompletedProcess[str]:
    return lab.run(
        lab.console, "dig", f"@{address}", DNS_NAME, "+short", "+time=1", "+tries=1", check=False
    )


def send_datagram(lab: Lab, address: str, port: int) -> None:
    """One UDP datagram from an ordinary socket in the console namespace."""
    lab.run(lab.console, "socat", "-u", "-", f"UDP4-SENDTO:{address}:{port}", stdin="barrier")


def wait_count(probe: Probe, name: str, at_least: int) -> int:
    return wait_until(
        lambda: probe[name] if probe[name] >= at_least else None,
        what=f"{at_least} packets in counter {name} of {probe.namespace}",
    )


def network_audit(deployment: NetnsDeployment, session_id: str) -> list[dict[str, Any]]:
    output = deployment.jumpoint("audit", "--json", "--session", session_id).stdout
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def denials(rows: list[dict[str, Any]]) -> set[tuple[str, str | None, int | None]]:
    return {
        (row["rule"], row.get("peer"), row.get("protocol"))
        for row in rows
        if row["event"] == "network_denied"
    }


def session_closed(
    deployment: NetnsDeployment, session_id: str, event: str = "session_closed"
) -> list[dict[str, Any]]:
    return audit_until(
        deployment,
        lambda rows: any(row["event"] == event for row in rows),
        "--session",
        session_id,
        what=f"the {event} of session {session_id} in the audit",
    )


# -- the session and its interface -------------------------------------------------------


def test_ready_names_the_interface_its_address_and_routes(
    lab: Lab, session: NetworkSession
) -> None:
    ready = session.ready
    assert session.interface.startswith("jpt")
    address = IPv4Address(session.address)
    assert address in IPv4Network(POOL) and str(address) != GATEWAY
    assert session.routes == [f"{REMOTE}/32"]
    assert ready["method"] == "direct"  # root: jump made the interface itself
    links = {link["ifname"]: link for link in lab.ip_json(lab.console, "addr", "show")}
    link = links[session.interface]
    assert [(a["local"], a["prefixlen"]) for a in link["addr_info"]] == [(str(address), 32)]
    assert link["mtu"] == 1400
    routed = [
        route["dst"] for route in lab.routes(lab.console) if route.get("dev") == link["ifname"]
    ]
    assert routed == [REMOTE]
    assert f"network interface {session.interface}: address {address}/32" in "\n".join(
        session.process.stderr_lines
    )


# -- traffic through the tunnel ---------------------------------------------------------------


def test_ping(lab: Lab, session: NetworkSession) -> None:
    done = ping(lab, REMOTE, count=3)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 received" in done.stdout


def test_a_dns_query(lab: Lab, session: NetworkSession) -> None:
    done = dig(lab, REMOTE)
    assert done.returncode == 0 and done.stdout.split() == [REMOTE], done.stdout + done.stderr


def test_udp_echo(lab: Lab, session: NetworkSession) -> None:
    assert socat_echo(lab, REMOTE, "hello through the tunnel") == "hello through the tunnel"


def test_http(lab: Lab, session: NetworkSession) -> None:
    done = lab.run(
        lab.console, "curl", "-sS", "--max-time", "10", f"http://{REMOTE}:{HTTP}/", check=False
    )
    assert done.stdout == PAGE, done.stderr


def iperf3(lab: Lab, *args: str) -> dict[str, Any]:
    done = lab.run(
        lab.console, "iperf3", "-c", REMOTE, "-p", str(IPERF), "-t", "2", "-J", *args,
        check=False, timeout=60,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    assert "error" not in result, result["error"]
    return result


def test_iperf3_tcp(lab: Lab, session: NetworkSession) -> None:
    end = iperf3(lab)["end"]
    assert end["sum_received"]["bytes"] > 0
    assert end["sum_received"]["bytes"] <= end["sum_sent"]["bytes"]


def test_iperf3_udp(lab: Lab, session: NetworkSession) -> None:
    end = iperf3(lab, "-u", "-b", "20M", "-l", "1200")["end"]
    total = end["sum"]
    assert total["packets"] > 0
    assert total["packets"] - total["lost_packets"] > 0  # the server received datagrams


def test_the_remote_network_sees_the_jumpoint_never_an_inner_address(
    lab: Lab, session: NetworkSession
) -> None:
    probe = remote_probe(lab, REMOTE)
    assert ping(lab, REMOTE, count=2).returncode == 0
    assert wait_count(probe, "echo_requests", 2)
    assert probe["masqueraded"] >= 2
    assert probe["inner_source"] == 0


def test_a_fragmented_ping_passes_with_its_first_fragment(
    lab: Lab, session: NetworkSession
) -> None:
    """docs/policy-guide.md, rule network.fragment: later fragments pass with their first."""
    done = ping(lab, REMOTE, "-M", "dont", "-s", "3000", count=2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3008 bytes from" in done.stdout


# -- filters --------------------------------------------------------------------------------


def test_each_filter_field_allows_and_denies(lab: Lab, deployment: NetnsDeployment) -> None:
    created = deployment.jump(
        "item", "create", "network", "lab-filters", "--filter", f"{FILTERED}/udp/{UDP_ECHO}",
        "--jump-group", "lab", "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    more = [f"{FILTERED_OTHER}/udp/{UDP_ECHO}", f"{FILTERED}/icmp", f"{FILTERED}/udp/53"]
    # one filter per field: another address, another protocol, another port
    probe = remote_probe(lab, FILTERED, FILTERED_OTHER)

    def denied_everywhere(opened: NetworkSession) -> None:
        # the console routes what the filters name: the other address is routed by hand here
        lab.run(lab.console, "ip", "route", "add", FILTERED_OTHER, "dev", opened.interface)
        before = probe.packets()
        assert udp_echo(lab, FILTERED_OTHER, wait=1) == ""  # address
        assert ping(lab, FILTERED, "-W", "1").returncode != 0  # protocol
        assert dig(lab, FILTERED).returncode != 0  # port
        assert udp_echo(lab, FILTERED) == "jpt-echo"  # sent after them: they had their chance
        after = probe.packets()
        for name in ("to_other", "echo_requests", "dns"):
            assert after[name] == before[name], (name, before, after)

    first = open_network(deployment, "lab-filters")
    assert first.routes == [f"{FILTERED}/32"]
    denied_everywhere(first)
    assert first.close() == 0
    wait_interface_gone(lab, lab.console, first.interface)
    rows = session_closed(deployment, first.ready["session"])
    assert {
        ("network.filter", FILTERED_OTHER, 17),
        ("network.filter", FILTERED, 1),
        ("network.filter", FILTERED, 17),
    } <= denials(rows)

    for spec in more:
        added = deployment.jump("item", "filter", "add", "lab-filters", spec)
        assert added.returncode == 0, added.stderr
    second = open_network(deployment, "lab-filters")
    assert second.routes == ["198.18.2.20/31"]  # both addresses, in as few networks as cover them
    before = probe.packets()
    assert udp_echo(lab, FILTERED_OTHER) == "jpt-echo"
    assert ping(lab, FILTERED).returncode == 0
    assert dig(lab, FILTERED).stdout.split() == [REMOTE]
    after = probe.packets()
    for name in ("to_other", "echo_requests", "dns"):
        assert after[name] > before[name], (name, before, after)
    assert second.close() == 0
    wait_interface_gone(lab, lab.console, second.interface)

    for spec in more:
        removed = deployment.jump("item", "filter", "remove", "lab-filters", spec)
        assert removed.returncode == 0, removed.stderr
    third = open_network(deployment, "lab-filters")
    assert third.routes == [f"{FILTERED}/32"]
    denied_everywhere(third)
    assert third.close() == 0
    changes = audit_until(
        deployment,
        lambda rows: len(rows) == 6,
        "--event", "item_changed", "--item", "lab-filters",
        what="the six filter changes",
    )  # fmt: skip
    assert [(row["change"], row["value"]) for row in changes] == [
        *(("filter_add", spec) for spec in more),
        *(("filter_remove", spec) for spec in more),
    ]


# -- what must never pass ---------------------------------------------------------------------


def test_spoofed_sources_and_stray_fragments_never_reach_the_remote_network(
    lab: Lab, deployment: NetnsDeployment
) -> None:
    probe = remote_probe(lab, HOSTILE)
    opened = open_network(deployment, "lab-hostile")
    before = probe.packets()
    forged = [
        "198.19.0.77",  # another inner address of the pool: masquerade would hide it
        "198.18.1.2",  # the console's own address on its veth
    ]
    for source in forged:
        lab.run(
            lab.console, sys.executable, "-m", "tests.e2e.packets", "udp",
            source, HOSTILE, "40000", str(DISCARD), "5",
        )  # fmt: skip
    lab.run(
        lab.console, sys.executable, "-m", "tests.e2e.packets", "fragment",
        opened.address, HOSTILE, "30583", "3",
    )  # fmt: skip
    send_datagram(lab, HOSTILE, DISCARD)  # from the session's own address: this one passes
    wait_count(probe, "discard", before["discard"] + 1)
    after = probe.packets()
    assert after["discard"] == before["discard"] + 1
    assert after["stray_fragment"] == before["stray_fragment"] == 0
    assert after["inner_source"] == 0
    assert opened.close() == 0
    rows = session_closed(deployment, opened.ready["session"])
    found = {
        (row["rule"], row.get("peer")): row["count"]
        for row in rows
        if row["event"] == "network_denied"
    }
    assert found == {  # the peer is the remote end: the packets' destination
        ("network.spoofed_source", HOSTILE): 5 + 5,
        ("network.fragment", HOSTILE): 3,
    }, rows


def test_unsolicited_traffic_from_the_remote_network_never_reaches_the_console(
    lab: Lab, session: NetworkSession
) -> None:
    on_tun = f'iifname "{session.interface}"'
    console_probe = Probe(
        lab,
        lab.console,
        {
            "unsolicited_udp": f"{on_tun} udp sport 7777",
            "unsolicited_ping": f"{on_tun} icmp type echo-request",
            "echo_replies": f"{on_tun} udp sport {UDP_ECHO}",
        },
    )
    jumpoint_probe = Probe(
        lab,
        lab.jumpoint,
        {
            "to_pool": f'iifname "{JUMPOINT_REMOTE_VETH}" ip daddr {POOL}',
            "to_jumpoint": f'iifname "{JUMPOINT_REMOTE_VETH}" ip daddr {JUMPOINT_LAN}',
        },
    )
    assert udp_echo(lab, REMOTE) == "jpt-echo"  # a flow the console opened: its reply passes
    # the remote host tries the console's inner address (given a route) and the Jumpoint
    lab.run(lab.remote, "ip", "route", "add", POOL, "via", JUMPOINT_LAN)
    try:
        for target in (session.address, GATEWAY, JUMPOINT_LAN):
            lab.run(
                lab.remote, sys.executable, "-m", "tests.e2e.packets", "udp",
                REMOTE, target, "7777", "7777", "3",
            )  # fmt: skip
        lab.run(lab.remote, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", session.address,
                check=False)  # fmt: skip
        wait_count(jumpoint_probe, "to_pool", 3 + 3 + 2)
        wait_count(jumpoint_probe, "to_jumpoint", 3)
    finally:
        lab.run(lab.remote, "ip", "route", "del", POOL, "via", JUMPOINT_LAN)
    replies = console_probe["echo_replies"]
    assert (
        udp_echo(lab, REMOTE) == "jpt-echo"
    )  # after the unsolicited packets, through the same path
    wait_count(console_probe, "echo_replies", replies + 1)
    seen = console_probe.packets()
    assert seen["unsolicited_udp"] == 0 and seen["unsolicited_ping"] == 0, seen


# -- the audit -------------------------------------------------------------------------------


def test_the_audit_has_every_flow_with_its_packets(lab: Lab, deployment: NetnsDeployment) -> None:
    opened = open_network(deployment, "lab-audited")
    assert ping(lab, AUDITED).returncode == 0
    assert udp_echo(lab, AUDITED) == "jpt-echo"
    assert opened.close() == 0
    rows = session_closed(deployment, opened.ready["session"])
    flows = {
        (row["event"], row["protocol"], row["src"], row["dst"])
        for row in rows
        if row["event"].startswith("network_flow_")
    }
    for event in ("network_flow_opened", "network_flow_closed"):
        assert (event, 1, opened.address, AUDITED) in flows
        assert (event, 17, opened.address, AUDITED) in flows
    udp_closed = next(
        row for row in rows if row["event"] == "network_flow_closed" and row["protocol"] == 17
    )
    assert udp_closed["dport"] == UDP_ECHO
    assert udp_closed["packets_out"] >= 1 and udp_closed["packets_in"] >= 1
    assert udp_closed["bytes_out"] > 0 and udp_closed["duration"] >= 0
    assert rows[-1]["event"] == "session_closed"


# -- the end: close, kill -9 --------------------------------------------------------------------


def test_close_removes_the_interface_and_its_routes(lab: Lab, deployment: NetnsDeployment) -> None:
    opened = open_network(deployment, "lab-closed")
    assert not interface_gone(lab, lab.console, opened.interface)
    assert opened.close() == 0
    assert interface_gone(lab, lab.console, opened.interface)  # gone before jump exits
    closed = opened.process.wait_for_event("closed")
    assert closed["session"] == opened.ready["session"]
    assert closed["removed"] == [  # the console says what it removed
        f"interface {opened.interface} ({opened.address}/32; routes {CLOSED}/32) removed"
    ]


def test_kill_9_of_jump_open_removes_the_interface_and_its_routes(
    lab: Lab, deployment: NetnsDeployment
) -> None:
    opened = open_network(deployment, "lab-closed")
    assert ping(lab, CLOSED).returncode == 0
    opened.process.signal(signal.SIGKILL)
    opened.process.wait()
    wait_interface_gone(lab, lab.console, opened.interface)
    # the lost channel detaches the session (resumable): its flows are closed already
    rows = session_closed(deployment, opened.ready["session"], "session_detached")
    assert any(row["event"] == "network_flow_closed" for row in rows)


def test_the_jumpoint_removes_its_interface_and_table_at_stop_and_a_kill_leaves_them_inert(
    workdir: Path,
) -> None:
    with three_namespaces("life") as other:
        deployment = network_deployment(other, workdir / "life", [LAB_NET], groups=GROUPS)
        try:
            jumpoint = deployment.processes[-1]
            assert not nft_table_present(other, other.jumpoint)  # made at the first session
            first = open_network(deployment, "lab-net")
            assert nft_table_present(other, other.jumpoint)
            assert "jpt0" in other.links(other.jumpoint)
            forwarding = other.run(other.jumpoint, "sysctl", "-n", "net.ipv4.ip_forward")
            assert forwarding.stdout.strip() == "1"

            jumpoint.signal(signal.SIGTERM)
            assert jumpoint.wait() == 0
            assert not nft_table_present(other, other.jumpoint)
            assert "jpt0" not in other.links(other.jumpoint)
            forwarding = other.run(other.jumpoint, "sysctl", "-n", "net.ipv4.ip_forward")
            assert forwarding.stdout.strip() == "0"  # it switched it on: it switches it off
            first.process.wait()  # the console's session ended with the Jumpoint
            wait_interface_gone(other, other.console, first.interface)

            jumpoint = deployment.serve()
            second = open_network(deployment, "lab-net")
            jumpoint.signal(signal.SIGKILL)
            jumpoint.wait()
            wait_until(
                lambda: "jpt0" not in other.links(other.jumpoint),
                what="the killed Jumpoint's TUN interface to go",
            )
            # nothing ran to remove the table: it stays, matching an interface that is gone
            assert nft_table_present(other, other.jumpoint)
            second.process.wait()
            wait_interface_gone(other, other.console, second.interface)

            jumpoint = deployment.serve()
            third = open_network(deployment, "lab-net")
            listed = other.run(other.jumpoint, "nft", "list", "table", "inet", "jumpoint").stdout
            assert listed.count("chain forward") == 1  # the old table replaced, not doubled
            assert ping(other, REMOTE).returncode == 0  # the kernel answers: no targets needed
            assert third.close() == 0
            jumpoint.signal(signal.SIGTERM)
            assert jumpoint.wait() == 0
            assert not nft_table_present(other, other.jumpoint)
        finally:
            deployment.stop_all()


# -- through jump network-service, as an ordinary user ---------------------------------------


@pytest.fixture(scope="module")
def accounts() -> Iterator[Accounts]:
    with throwaway_accounts() as made:
        yield made


@dataclass
class Service:
    """`jump network-service` in the console namespace, and what its tests need around it."""

    lab: Lab
    deployment: NetnsDeployment
    accounts: Accounts
    socket: Path
    log: Path
    workdir: Path

    def user_home(self, name: str, account: Account) -> Path:
        """An enrolled JUMP_HOME (of Jumpoint user C{name}) that belongs to C{account}."""
        home = self.workdir / f"home-{name}"
        self.deployment.add_user(name, home=home)
        for path in [home, *home.rglob("*")]:
            os.chown(path, account.uid, account.gid)
        return home

    def env(self, home: Path) -> dict[str, str]:
        return {"JUMP_HOME": str(home), "JUMP_NETWORK_SOCKET": str(self.socket)}


@pytest.fixture(scope="module")
def service(
    lab: Lab, deployment: NetnsDeployment, accounts: Accounts, workdir: Path
) -> Iterator[Service]:
    """The service for the throwaway group, listening."""
    socket_path = workdir / "run" / "network.sock"
    log = workdir / "network-service.log"
    popen = lab.spawn(
        lab.console,
        *tool("jump"), "network-service", "--socket", str(socket_path), "--group", accounts.group,
        log=log, cwd=ROOT,
    )  # fmt: skip
    wait_until(
        lambda: "listening on" in log.read_text(errors="replace") or popen.poll() is not None,
        what="the network service to listen",
    )
    assert popen.poll() is None, log.read_text(errors="replace")
    try:
        yield Service(lab, deployment, accounts, socket_path, log, workdir)
    finally:
        popen.terminate()
        popen.wait(10)
        print("=== jump network-service\n" + log.read_text(errors="replace"))


def test_an_ordinary_user_in_the_group_opens_through_the_network_service(
    service: Service,
) -> None:
    lab, member = service.lab, service.accounts.member
    opened = open_network(
        service.deployment,
        "lab-served",
        as_user=jump_as_user_command(member.uid, member.gid, member.groups),
        **service.env(service.user_home("bob", member)),
    )
    assert opened.ready["method"] == "service"
    assert not interface_gone(lab, lab.console, opened.interface)
    assert ping(lab, SERVED).returncode == 0
    assert socat_echo(lab, SERVED, "as bob") == "as bob"
    assert opened.close() == 0
    wait_interface_gone(lab, lab.console, opened.interface)
    log = service.log.read_text(errors="replace")
    assert f"admitted uid {member.uid} ({member.name})" in log


def test_a_user_outside_the_group_is_refused_by_the_network_service(service: Service) -> None:
    lab, outsider = service.lab, service.accounts.outsider
    home = service.user_home("carol", outsider)
    links = lab.links(lab.console)
    argv = [
        *Lab.prefix(lab.console),
        *jump_as_user_command(outsider.uid, outsider.gid, outsider.groups),
        *("open", "lab-served", "--json"),
    ]
    done = subprocess.run(
        argv,
        env=service.deployment.env(**service.env(home), PYTHONPATH=str(ROOT)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "error", done.stdout
    assert events[-1]["code"] == "network_service_unavailable", events[-1]
    assert "permission denied" in events[-1]["message"]
    assert "Traceback" not in done.stderr
    assert lab.links(lab.console) == links  # no interface was made
