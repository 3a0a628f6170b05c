"""`jump sessions`: the CONN column counts what a session carries now, whatever its kind."""

from __future__ import annotations

import pytest

from console.output import print_sessions

BASE = {"session": "s1", "user": "alice", "item": "x", "age": 5.0, "bytes_to_target": 1}


def conn_column(capsys: pytest.CaptureFixture[str], entry: dict[str, object]) -> str:
    print_sessions([entry], False, 0.0)
    captured = capsys.readouterr()
    header, row = (captured.out + captured.err).splitlines()
    start = header.index("CONN") - 1
    return row[start : start + 5].strip()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"connections": 3}, "3"),
        ({"connections": 1, "udp_flows": 2}, "3"),
        ({"connections": 0, "udp_flows": 0, "link": {"flows": 4, "packets_out": 9}}, "4"),
        ({"connections": 2, "link": "junk"}, "2"),
        ({"connections": 2, "udp_flows": True}, "2"),
    ],
)
def test_conn_counts_connections_udp_flows_and_network_flows(
    capsys: pytest.CaptureFixture[str], extra: dict[str, object], expected: str
) -> None:
    assert conn_column(capsys, {**BASE, **extra}) == expected
