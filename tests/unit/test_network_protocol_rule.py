"""C{tunnels_restricted.protocol} judged per flow of a network session (docs/policy-guide.md).

TCP needs C{tcp} or C{tcp-udp}, UDP needs C{udp} or C{tcp-udp}; every other
IP protocol passes only when the groups leave C{protocol} unrestricted.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jumpoint.network.tunnel_service import protocol_check
from jumpoint.policy import Restrictions

TCP, UDP, ICMP, SCTP = 6, 17, 1, 132

TABLE = [
    (None, {TCP: True, UDP: True, ICMP: True, SCTP: True}),
    (frozenset({"tcp"}), {TCP: True, UDP: False, ICMP: False, SCTP: False}),
    (frozenset({"udp"}), {TCP: False, UDP: True, ICMP: False, SCTP: False}),
    (frozenset({"tcp-udp"}), {TCP: True, UDP: True, ICMP: False, SCTP: False}),
    (frozenset({"tcp", "udp"}), {TCP: True, UDP: True, ICMP: False, SCTP: False}),
]


def test_each_restriction_allows_the_protocols_the_policy_guide_names() -> None:
    for protocols, expected in TABLE:
        allowed = protocol_check(Restrictions(protocol=protocols))
        assert {number: allowed(number) for number in expected} == expected, protocols


@given(st.integers(0, 255).filter(lambda n: n not in (TCP, UDP)))
def test_a_restricted_group_never_passes_another_protocol(number: int) -> None:
    for protocols, _ in TABLE[1:]:
        assert not protocol_check(Restrictions(protocol=protocols))(number)
    assert protocol_check(Restrictions(protocol=None))(number)
