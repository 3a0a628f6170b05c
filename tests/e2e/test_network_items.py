"""End to end: network items and their filters, and tunnel pairs with a protocol.

Real `jumpoint serve` and `jump` processes: a network item created with
`jump item create network --filter`, a filter added and removed, the item
listed and shown in its canonical form, the changes audited; a configured
network item in the YAML mapping form; a tcp item with a UDP pair, which
`jump open` binds as a UDP socket beside the TCP pair's listener.
"""

from __future__ import annotations

import json
from typing import Any

from shared.errors import ExitCode
from tests.e2e.harness import Deployment

GROUPS = {"default": {"jump_groups": {"see": ["*"], "open": ["*"], "manage": ["lab"]}}}


def _audit(deployment: Deployment, *args: str) -> list[dict[str, Any]]:
    result = deployment.jumpoint("audit", "--json", *args)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_a_network_item_is_created_its_filters_added_removed_and_listed(
    deployment: Deployment,
) -> None:
    deployment.items = [
        {
            "name": "fixed-net",
            "type": "network",
            "filters": [
                {"ip": "198.18.2.0/24", "protocol": "udp", "ports": "53,123"},
                {"ip": "198.18.2.10", "protocol": "tcp", "ports": "443,22"},
                "198.18.2.0/24/icmp",
            ],
        }
    ]
    deployment.sections = {"groups": GROUPS}
    deployment.create()
    checked = deployment.jumpoint("check-config")
    assert checked.returncode == 0, checked.stderr
    deployment.serve()

    fixed = json.loads(deployment.jump("item", "show", "fixed-net", "--json").stdout)
    assert fixed["filters"] == [
        "198.18.2.0/24/udp/53,123",
        "198.18.2.10/tcp/22,443",
        "198.18.2.0/24/icmp",
    ]

    created = deployment.jump(
        "item", "create", "network", "lab-net",
        "--filter", "198.18.4.0/24/udp/53,123", "--filter", "198.18.4.10/TCP/443,22",
        "--jump-group", "lab", "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["filters"] == [
        "198.18.4.0/24/udp/53,123",
        "198.18.4.10/tcp/22,443",
    ]

    added = deployment.jump("item", "filter", "add", "lab-net", "198.18.5.1-198.18.5.9/47")
    assert added.returncode == 0, added.stderr
    assert "added filter 198.18.5.1-198.18.5.9/47 to 'lab-net'" in added.stdout
    again = deployment.jump(
        "item", "filter", "add", "lab-net", "198.18.5.1-198.18.5.9/gre", "--json"
    )
    assert again.returncode == ExitCode.USAGE
    error = json.loads(again.stdout)
    assert (error["event"], error["code"]) == ("error", "usage")
    assert error["message"] == "item 'lab-net' already has filter 198.18.5.1-198.18.5.9/gre"

    removed = deployment.jump(
        "item", "filter", "remove", "lab-net", "198.18.4.10/tcp/22,443", "--json"
    )
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["filters"] == [
        "198.18.4.0/24/udp/53,123",
        "198.18.5.1-198.18.5.9/gre",
    ]

    listed = json.loads(deployment.jump("items", "--json", "--jump-group", "lab").stdout)
    assert [(i["name"], i["type"], i["filters"]) for i in listed] == [
        ("lab-net", "network", ["198.18.4.0/24/udp/53,123", "198.18.5.1-198.18.5.9/gre"])
    ]
    table = deployment.jump("items", "--jump-group", "lab")
    assert "198.18.4.0/24/udp/53,123, 198.18.5.1-198.18.5.9/gre" in table.stdout
    shown = deployment.jump("item", "show", "lab-net")
    assert "filter:          198.18.5.1-198.18.5.9/gre" in shown.stdout

    # refusals keep their codes: the last filter, IPv6, a read-only item
    deployment.jump("item", "filter", "remove", "lab-net", "198.18.5.1-198.18.5.9/gre")
    last = deployment.jump("item", "filter", "remove", "lab-net", "198.18.4.0/24/udp/53,123")
    assert last.returncode == ExitCode.USAGE
    assert "is the last filter of item 'lab-net': an item has at least one" in last.stderr
    ipv6 = deployment.jump("item", "filter", "add", "lab-net", "fd00::/64")
    assert ipv6.returncode == ExitCode.USAGE and "filters are IPv4 only" in ipv6.stderr
    read_only = deployment.jump("item", "filter", "add", "fixed-net", "198.18.9.9")
    assert read_only.returncode == ExitCode.USAGE and "read-only" in read_only.stderr
    assert "Traceback" not in last.stderr + ipv6.stderr + read_only.stderr

    changes = [
        (entry["user"], entry["item"], entry["change"], entry["value"])
        for entry in _audit(deployment, "--event", "item_changed")
    ]
    assert changes == [
        ("alice", "lab-net", "filter_add", "198.18.5.1-198.18.5.9/gre"),
        ("alice", "lab-net", "filter_remove", "198.18.4.10/tcp/22,443"),
        ("alice", "lab-net", "filter_remove", "198.18.5.1-198.18.5.9/gre"),
    ]


def test_a_tcp_item_with_a_udp_pair_is_listed_and_opened(deployment: Deployment) -> None:
    deployment.sections = {"groups": GROUPS}
    deployment.create().serve()
    created = deployment.jump(
        "item", "create", "tcp", "dns", "--host", "127.0.0.1", "--tunnel", "5353:53/udp",
        "--tunnel", "auto:9/tcp", "--jump-group", "lab", "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert [(t["remote_port"], t["protocol"]) for t in json.loads(created.stdout)["tunnels"]] == [
        (53, "udp"),
        (9, "tcp"),
    ]
    table = deployment.jump("items", "--jump-group", "lab")
    assert "5353:53/udp, auto:9" in table.stdout
    opened = deployment.jump("open", "dns", "--json", "--for", "1", timeout=60)
    assert opened.returncode == 0, opened.stderr
    ready = json.loads(opened.stdout.splitlines()[0])
    assert ready["event"] == "ready"
    udp, tcp = ready["tunnels"]
    assert (udp["local_port"], udp["protocol"]) == (5353, "udp") and "protocol" not in tcp
