"""The network service's request checks and peer decisions (console/network_requests.py).

Pure code: no root, no socket.  Hypothesis covers the route rule against
the forbidden networks and the parser against arbitrary input.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.network_requests import (
    FORBIDDEN,
    GROUP_RULE,
    MAX_LINE,
    MAX_ROUTES,
    CloseRequest,
    Group,
    OpenRequest,
    Peer,
    admit,
    attached_clash,
    check_address,
    check_mtu,
    check_name,
    check_route,
    check_routes,
    encode,
    open_request,
    parse_request,
    parse_status_groups,
)
from shared.errors import AccessDenied, InvalidRequest

GROUP = Group("jumpoint-network", 990, frozenset({"carol"}))


def line(**fields: object) -> bytes:
    return json.dumps({"version": 1, **fields}).encode()


# -- fields -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("198.18.1.0/24", "198.18.1.0/24"),
        ("198.18.1.7", "198.18.1.7/32"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("1.0.0.0/8", "1.0.0.0/8"),
        ("223.255.255.0/24", "223.255.255.0/24"),
    ],
)
def test_a_routable_network_is_accepted(text: str, network: str) -> None:
    assert check_route(text) == IPv4Network(network)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0.0.0.0/0", "default route"),
        ("0.0.0.0/1", "'this network'"),
        ("128.0.0.0/1", "link-local"),
        ("127.0.0.1", "loopback"),
        ("126.0.0.0/7", "loopback"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.251", "multicast"),
        ("239.0.0.0/8", "multicast"),
        ("255.255.255.255", "reserved and broadcast"),
        ("198.18.1.5/24", "host bits set (the network is 198.18.1.0/24)"),
        ("198.18.1.0/33", "not an IPv4 network"),
        ("2001:db8::/32", "not an IPv4 network"),
        ("198.018.1.0/24", "not an IPv4 network"),
        ("", "not an IPv4 network"),
        ("198.18.100.100/255.255.255.0", "each route is an IPv4 network"),
    ],
)
def test_an_unsafe_or_malformed_route_is_refused(text: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        check_route(text)
    assert says in raised.value.message
    assert raised.value.message.startswith("routes: ")


@given(st.ip_addresses(v=4), st.integers(0, 32))
def test_a_route_is_accepted_exactly_when_it_is_a_network_clear_of_the_forbidden_ones(
    address: IPv4Address, prefix: int
) -> None:
    network = IPv4Network(f"{address}/{prefix}", strict=False)
    safe = prefix > 0 and not any(network.overlaps(reserved) for reserved, _ in FORBIDDEN)
    if safe:
        assert check_route(str(network)) == network
    else:
        with pytest.raises(InvalidRequest):
            check_route(str(network))


@pytest.mark.parametrize(
    "value", ["0.0.0.0", "127.0.0.1", "169.254.1.1", "224.0.0.1", "255.255.255.255", "1.2.3", 7]
)
def test_an_inner_address_outside_unicast_is_refused(value: object) -> None:
    with pytest.raises(InvalidRequest, match="^address: "):
        check_address(value)


def test_an_inner_address_is_one_unicast_address() -> None:
    assert check_address("198.19.0.2") == IPv4Address("198.19.0.2")
    with pytest.raises(InvalidRequest, match="not an IPv4 address"):
        check_address("198.19.0.2/32")


def test_routes_are_a_bounded_list_of_distinct_networks() -> None:
    assert check_routes(["198.18.1.0/24", "198.18.2.7"]) == (
        IPv4Network("198.18.1.0/24"),
        IPv4Network("198.18.2.7/32"),
    )
    many = [f"198.18.{n // 256}.{n % 256}" for n in range(MAX_ROUTES)]
    assert len(check_routes(many)) == MAX_ROUTES
    for bad, says in [
        ([], "non-empty list"),
        ("198.18.1.0/24", "non-empty list"),
        ([*many, "198.19.0.1"], f"at most {MAX_ROUTES}"),
        (["198.18.1.0/24", "198.18.1.0/24"], "listed twice"),
        (["198.18.1.7", "198.18.1.7/32"], "listed twice"),
        ([24], "each route is an IPv4 network"),
    ]:
        with pytest.raises(InvalidRequest, match=says):
            check_routes(bad)


def test_the_mtu_is_an_integer_in_range() -> None:
    assert check_mtu(576) == 576
    assert check_mtu(65535) == 65535
    for bad in [575, 65536, 0, -1, True, 1400.0, "1400", None]:
        with pytest.raises(InvalidRequest, match="^mtu: "):
            check_mtu(bad)


def test_an_interface_name_is_jpt_and_a_short_suffix() -> None:
    assert check_name(None) is None
    assert check_name("jpt0") == "jpt0"
    assert check_name("jptabcdef012345") == "jptabcdef012345"
    for bad in ["jpt", "eth0", "jpt-0", "JPT0", "jpt0\n", "jptabcdef0123456", "jpt%d", 3, "lo"]:
        with pytest.raises(InvalidRequest, match="^name: "):
            check_name(bad)


def test_a_route_over_a_network_this_machine_is_on_is_refused() -> None:
    attached = [(IPv4Network("192.168.1.0/24"), "eth0"), (IPv4Network("10.9.0.0/16"), "wg0")]
    assert (
        attached_clash([IPv4Network("198.18.1.0/24"), IPv4Network("10.8.0.0/16")], attached) is None
    )
    assert attached_clash(
        [IPv4Network("198.18.1.0/24"), IPv4Network("192.168.1.128/25")], attached
    ) == (
        "routes: 192.168.1.128/25 overlaps 192.168.1.0/24, the network of eth0 on this machine"
        " (routing it into the tunnel would cut this machine off from it)"
    )
    assert "the network of wg0" in str(attached_clash([IPv4Network("10.0.0.0/8")], attached))
    assert attached_clash([IPv4Network("10.0.0.0/8")], []) is None


# -- request lines ------------------------------------------------------------------------


def test_an_open_request_round_trips() -> None:
    request = open_request("198.19.0.2", ["198.18.1.0/24"], 1280, "jpt7")
    assert parse_request(encode(request.to_json()).rstrip(b"\n")) == request
    assert parse_request(line(op="open", address="198.19.0.2", routes=["198.18.1.0/24"])) == (
        OpenRequest(IPv4Address("198.19.0.2"), (IPv4Network("198.18.1.0/24"),), 1400, None)
    )
    assert parse_request(line(op="close")) == CloseRequest()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "one JSON object per line"),
        (b"[1]", "one JSON object per line"),
        (b"\xff", "one JSON object per line"),
        (b'{"op": "open"}', "version"),
        (line(op="shell"), "op: 'open' or 'close'"),
        (line(op=["open"]), "op: 'open' or 'close'"),
        (line(op="open", routes=["198.18.1.0/24"]), "'address' and 'routes' are needed"),
        (line(op="close", address="198.19.0.2"), "unknown field(s) in 'close': address"),
        (
            line(op="open", address="198.19.0.2", routes=["198.18.1.0/24"], uid=0),
            "unknown field(s) in 'open': uid",
        ),
        (line(op="open", address="198.19.0.2", routes=["0.0.0.0/0"]), "default route"),
        (b" " * (MAX_LINE + 1), f"longer than {MAX_LINE}"),
    ],
)
def test_a_bad_request_line_says_what_is_wrong(raw: bytes, says: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_request(raw)
    assert says in raised.value.message


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_line_is_a_request_or_an_invalid_request(raw: bytes) -> None:
    try:
        request = parse_request(raw)
    except InvalidRequest as error:
        assert error.message
    else:
        assert isinstance(request, OpenRequest | CloseRequest)


def test_a_reply_line_is_bounded() -> None:
    assert encode({"event": "ready"}) == b'{"event":"ready"}\n'
    with pytest.raises(ValueError, match="longer than"):
        encode({"event": "x" * MAX_LINE})


# -- peers ----------------------------------------------------------------------------------


def peer(uid: int, gid: int, groups: set[int] = set(), user: str | None = "bob") -> Peer:  # noqa: B006
    return Peer(pid=4242, uid=uid, gid=gid, groups=frozenset(groups), user=user)


def test_root_is_always_admitted() -> None:
    admission = admit(peer(0, 0, user="root"), GROUP)
    assert admission.allowed
    assert admission.reason == "root"


def test_a_member_by_primary_or_supplementary_group_is_admitted() -> None:
    assert admit(peer(1001, 990), GROUP).allowed
    assert admit(peer(1001, 1001, {27, 990}), GROUP).allowed
    assert admit(peer(1001, 1001, {990}), GROUP).reason == "member of group jumpoint-network"


def test_a_caller_outside_the_group_is_refused_with_the_rule_and_what_to_do() -> None:
    admission = admit(peer(1001, 1001, {27}), GROUP, primary_gid=1001)
    assert not admission.allowed
    error = admission.error
    assert isinstance(error, AccessDenied)
    assert error.rule == GROUP_RULE
    assert error.message == (
        "the network service refused uid 1001 (bob) gid 1001 pid 4242: not a member of group"
        " jumpoint-network (rule: network_service.group)"
    )
    assert error.hint is not None
    assert "usermod -aG jumpoint-network bob" in error.hint


def test_a_user_added_to_the_group_after_logging_in_is_told_to_log_in_again() -> None:
    listed = admit(peer(1002, 1002, user="carol"), GROUP, primary_gid=1002)
    assert not listed.allowed
    assert listed.error is not None and listed.error.hint is not None
    assert "log in again (or run `newgrp jumpoint-network`)" in listed.error.hint
    by_primary = admit(peer(1003, 1003, user="dave"), GROUP, primary_gid=990)
    assert by_primary.error is not None and by_primary.error.hint is not None
    assert "this login is not" in by_primary.error.hint


def test_a_uid_without_a_name_is_refused_by_number() -> None:
    error = admit(peer(4000, 4000, user=None), GROUP).error
    assert error is not None and error.hint is not None
    assert "uid 4000 gid 4000" in error.message
    assert "usermod -aG jumpoint-network #4000" in error.hint


def test_the_groups_of_a_process_are_read_from_its_status() -> None:
    status = "Name:\tbash\nUid:\t1001\t1001\t1001\t1001\nGroups:\t27 990 1001 \nNgid:\t0\n"
    assert parse_status_groups(status) == frozenset({27, 990, 1001})
    assert parse_status_groups("Groups:\t\n") == frozenset()
    assert parse_status_groups("Name:\tx\n") == frozenset()
