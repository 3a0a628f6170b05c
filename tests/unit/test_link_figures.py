"""A session's own data path in `jump open`'s views, and the Jumpoint's figures it polls.

L{console.link_figures.LinkFigures} over a fake C{session_stats} request and
a L{Clock}; the three views (console/view.py) with a network session's link
counters, written to StringIO.
"""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher

from console.kinds.session_part import SessionPart
from console.link_figures import POLL_INTERVAL, LinkFigures, parse_link
from console.view import JsonView, PlainView, TerminalView, session_bytes
from shared.errors import UsageError

JUMPOINT_LINK = {
    "flows": 2,
    "total_flows": 5,
    "packets_out": 9,
    "bytes_out": 900,
    "packets_in": 7,
    "bytes_in": 700,
    "denied_out": 3,
    "denied_in": 1,
    "channel_drops": 4,
    "tun_drops": 6,
}
OURS = {
    "flows": 2,
    "total_flows": 5,
    "denied_out": 3,
    "denied_in": 1,
    "jumpoint_dropped_out": 6,
    "jumpoint_dropped_in": 4,
}


class Requests:
    """The fake C{session_stats}: each call is one Deferred the test answers."""

    def __init__(self) -> None:
        self.sent: list[Deferred[dict[str, Any]]] = []

    def __call__(self) -> Deferred[dict[str, Any]]:
        self.sent.append(Deferred())
        return self.sent[-1]


def answer(link: Any) -> dict[str, Any]:
    return {"session": {"session": "s1", "link": link}}


def test_one_request_at_a_time_and_at_most_one_per_interval() -> None:
    requests, clock = Requests(), Clock()
    figures = LinkFigures(requests, clock)
    figures.poll(True)
    figures.poll(True)
    assert len(requests.sent) == 1 and figures.latest() == {}
    clock.advance(POLL_INTERVAL * 3)
    figures.poll(True)  # still unanswered: nothing more goes out
    assert len(requests.sent) == 1
    requests.sent[0].callback(answer(JUMPOINT_LINK))
    assert figures.latest() == OURS
    figures.poll(True)  # the interval since the last question has passed
    assert len(requests.sent) == 2
    requests.sent[1].callback(answer({**JUMPOINT_LINK, "flows": 1}))
    clock.advance(POLL_INTERVAL - 0.5)
    figures.poll(True)
    assert len(requests.sent) == 2 and figures.latest()["flows"] == 1
    clock.advance(1)
    figures.poll(False)  # the session is ending: never again
    assert len(requests.sent) == 2 and figures.latest()["flows"] == 1


def test_a_malformed_or_failed_answer_keeps_the_last_figures_and_is_logged_once() -> None:
    requests, clock = Requests(), Clock()
    figures = LinkFigures(requests, clock)
    logged: list[LogEvent] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        figures.poll(True)
        requests.sent[-1].callback(answer(JUMPOINT_LINK))
        for bad in ({**JUMPOINT_LINK, "flows": -1}, {**JUMPOINT_LINK, "flows": True}, "x"):
            clock.advance(POLL_INTERVAL)
            figures.poll(True)
            requests.sent[-1].callback(answer(bad))
        clock.advance(POLL_INTERVAL)
        figures.poll(True)
        requests.sent[-1].errback(UsageError("no session is open on this connection"))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert figures.latest() == OURS and not figures.pending
    texts = [event.get("text") for event in logged if "text" in event]
    assert texts == ["the Jumpoint sent malformed session figures"]


def test_a_session_without_a_link_has_no_figures() -> None:
    assert parse_link(answer(None)) == {}
    assert parse_link({"session": {"session": "s1"}}) == {}
    assert parse_link({"sessions": []}) is None
    assert parse_link(answer({"flows": 1})) == {"flows": 1}  # an older Jumpoint: what it sends


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from([*JUMPOINT_LINK, "link", "session"]), inner)
        ),
        max_leaves=12,
    )
)
def test_any_answer_is_figures_or_nothing(value: Any) -> None:
    figures = parse_link(value)
    assert figures is None or all(
        type(count) is int and 0 <= count < 2**63 for count in figures.values()
    )


def test_the_default_part_has_no_data_path_of_its_own() -> None:
    part = SessionPart()
    assert part.counters() is None and part.counters_label() == ""


# -- the views ------------------------------------------------------------------------------

LINK = {
    "packets_out": 12,
    "bytes_out": 1200,
    "dropped_out": 1,
    "packets_in": 10,
    "bytes_in": 3000,
    "dropped_in": 0,
    "refused_in": 0,
    **OURS,
}


class Seconds:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_json_events_of_a_network_session_carry_its_link() -> None:
    out, seconds = io.StringIO(), Seconds()
    view = JsonView(out, seconds)
    view.ready("lab-net", "s1", [], {"interface": "jpt0"}, "jpt0 -> 198.18.2.0/24")
    view.update([], LINK)
    seconds.now = 2.0
    view.update([], {**LINK, "bytes_out": 1600, "bytes_in": 4000})
    view.closed("interrupted", "interrupted by the user", [], LINK, removed=["gone"])
    ready, first, second, closed = (json.loads(line) for line in out.getvalue().splitlines())
    assert ready["interface"] == "jpt0" and ready["tunnels"] == []
    assert (first["bytes_to_remote"], first["bytes_from_remote"]) == (1200, 3000)
    assert first["link"] == {**LINK, "send_rate": 0.0, "receive_rate": 0.0}
    assert (second["link"]["send_rate"], second["link"]["receive_rate"]) == (200.0, 500.0)
    assert second["connections"] == 0 and second["tunnels"] == []
    assert closed["link"] == LINK and closed["removed"] == ["gone"]
    assert (closed["bytes_to_remote"], closed["bytes_from_remote"]) == (1200, 3000)


def test_a_session_without_a_link_has_no_link_member() -> None:
    out = io.StringIO()
    view = JsonView(out, Seconds())
    tunnel = {
        "local_address": "127.0.0.1",
        "local_port": 8080,
        "remote_host": "h",
        "remote_port": 80,
        "status": "listening",
        "connections": 0,
        "total_connections": 1,
        "bytes_to_remote": 5,
        "bytes_from_remote": 7,
    }
    view.update([tunnel])
    view.closed("expired", "done", [tunnel])
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all("link" not in event for event in events)
    assert [e["bytes_to_remote"] for e in events] == [5, 5]
    assert session_bytes([tunnel], {"bytes_out": 10, "bytes_in": 20}) == (15, 27)


def test_the_plain_closing_line_of_a_network_session_counts_packets_and_flows() -> None:
    out = io.StringIO()
    PlainView(out).closed("interrupted", "interrupted by the user", [], LINK)
    assert out.getvalue() == (
        "jump: session closed: interrupted by the user (12 packets sent, 10 received,"
        " 11 dropped, 4 denied by the Jumpoint, 5 flows, 1.2 KiB sent, 2.9 KiB received)\n"
    )
    early = io.StringIO()  # the Jumpoint never answered: the console's own counts only
    own = {key: LINK[key] for key in ("packets_out", "bytes_out", "packets_in", "bytes_in")}
    PlainView(early).closed("expired", "done", [], own)
    assert early.getvalue() == (
        "jump: session closed: done (12 packets sent, 10 received, 0 dropped,"
        " 1.2 KiB sent, 2.9 KiB received)\n"
    )


def test_the_live_view_has_a_row_for_the_interface() -> None:
    out, seconds = io.StringIO(), Seconds()
    view = TerminalView(out, seconds)
    view.ready("lab-net", "s1", [], None, "jpt0 -> 198.18.2.0/24")
    view.update([], {**LINK, "flows": 0, "total_flows": 0})
    seconds.now = 1.0
    view.update([], {**LINK, "bytes_in": 3000 + 2048})
    lines = out.getvalue().split("\x1b[")[-1].splitlines()  # the last drawing ("J" + header)
    header, row, packets = lines[1:4]
    assert header.split() == [
        "TUNNEL",
        "STATUS",
        "CONN",
        "TOTAL",
        "SENT",
        "RECEIVED",
        "UP/s",
        "DOWN/s",
    ]
    assert row.split() == [
        *("jpt0", "->", "198.18.2.0/24", "up", "2", "5"),
        *("1.2", "KiB", "4.9", "KiB", "0", "B", "2.0", "KiB"),
    ]
    assert packets == "  12 packets sent, 10 received, 11 dropped, 4 denied by the Jumpoint"
    view.closed("interrupted", "interrupted by the user", [], {"packets_out": 1})
    last = out.getvalue().split("\x1b[")[-1].splitlines()
    assert last[2].split()[:5] == ["jpt0", "->", "198.18.2.0/24", "closed", "-"]
    assert last[-1] == "session closed: interrupted by the user"
