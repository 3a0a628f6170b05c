"""The HTTP/1.1 layer of the Kubernetes legs: heads and checks (shared/codecs/http/heads.py) and the
h11 relay engine (shared/codecs/http/relay.py), driven with a recording handler."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.codecs.http.heads import (
    MAX_HEAD,
    Answer,
    Forward,
    HttpError,
    RequestHead,
    check_request_head,
    error_answer,
    rewrite_headers,
)
from shared.codecs.http.relay import MAX_PENDING, Exchange, HttpRelay

EXEC_WS = (
    b"GET /api/v1/namespaces/default/pods/p/exec?command=ls&command=-l&stdout=true HTTP/1.1\r\n"
    b"Host: 127.0.0.5:18443\r\n"
    b"User-Agent: kubectl/v1.31.9\r\n"
    b"Connection: Upgrade\r\n"
    b"Upgrade: websocket\r\n"
    b"Sec-Websocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-Websocket-Protocol: v5.channel.k8s.io\r\n"
    b"Sec-Websocket-Version: 13\r\n"
    b"Impersonate-Group: dev\r\n"
    b"Impersonate-Group: ops\r\n"
    b"\r\n"
)

EXEC_SPDY = (
    b"POST /api/v1/namespaces/default/pods/p/exec?command=ls HTTP/1.1\r\n"
    b"Host: 127.0.0.5:18443\r\n"
    b"Connection: Upgrade\r\n"
    b"Upgrade: SPDY/3.1\r\n"
    b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    b"X-Stream-Protocol-Version: v3.channel.k8s.io\r\n"
    b"X-Stream-Protocol-Version: v2.channel.k8s.io\r\n"
    b"X-Stream-Protocol-Version: channel.k8s.io\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class Recorder:
    """A relay handler that forwards everything (or answers what C{answer} says)."""

    answer: Answer | None = None
    client: bytearray = field(default_factory=bytearray)
    upstream: bytearray = field(default_factory=bytearray)
    heads: list[RequestHead] = field(default_factory=list)
    finished_exchanges: list[Exchange] = field(default_factory=list)
    refusals: list[int] = field(default_factory=list)
    switches: int = 0
    end: tuple[str, bool] | None = None
    upstream_eofs: int = 0
    client_eofs: int = 0

    def now(self) -> float:
        return 0.0

    def decide(self, exchange: Exchange) -> Forward | Answer:
        self.heads.append(exchange.head)
        return self.answer if self.answer is not None else Forward(exchange.head)

    def refused(self, status: int, reason: str) -> None:
        self.refusals.append(status)

    def to_client(self, data: bytes) -> None:
        self.client += data

    def to_upstream(self, data: bytes) -> None:
        self.upstream += data

    def switched(self, exchange: Exchange) -> None:
        self.switches += 1

    def exchange_finished(self, exchange: Exchange) -> None:
        assert exchange not in self.finished_exchanges
        self.finished_exchanges.append(exchange)

    def upstream_ended(self) -> None:
        self.upstream_eofs += 1

    def client_ended(self) -> None:
        self.client_eofs += 1

    def finished(self, reason: str, clean: bool) -> None:
        assert self.end is None
        self.end = (reason, clean)

    def take_client(self) -> bytes:
        data = bytes(self.client)
        self.client.clear()
        return data

    def take_upstream(self) -> bytes:
        data = bytes(self.upstream)
        self.upstream.clear()
        return data


def make() -> tuple[HttpRelay, Recorder]:
    recorder = Recorder()
    return HttpRelay(recorder), recorder


def test_websocket_exec_head_keeps_order_names_and_repeats() -> None:
    relay, rec = make()
    relay.feed_client(EXEC_WS)
    (head,) = rec.heads
    assert head.method == "GET" and head.version == "HTTP/1.1" and head.is_upgrade
    assert head.get_all("impersonate-group") == ("dev", "ops")
    assert head.headers[0] == ("Host", "127.0.0.5:18443")
    assert rec.take_upstream() == EXEC_WS  # h11 writes the same bytes back


def test_spdy_exec_keeps_repeated_lines_as_separate_lines() -> None:
    relay, rec = make()
    relay.feed_client(EXEC_SPDY)
    lines = rec.take_upstream().split(b"\r\n")
    assert [line for line in lines if line.startswith(b"X-Stream")] == [
        b"X-Stream-Protocol-Version: v4.channel.k8s.io",
        b"X-Stream-Protocol-Version: v3.channel.k8s.io",
        b"X-Stream-Protocol-Version: v2.channel.k8s.io",
        b"X-Stream-Protocol-Version: channel.k8s.io",
    ]


def test_not_upgrade_without_both_headers() -> None:
    head = RequestHead("GET", "/", "HTTP/1.1", (("Host", "x"), ("Upgrade", "websocket")))
    assert not head.is_upgrade
    head = RequestHead(
        "GET", "/", "HTTP/1.1", (("Host", "x"), ("Connection", "keep-alive, Upgrade"))
    )
    assert not head.is_upgrade


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"NOT A REQUEST\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 250 + b"\r\n", 431),
    ],
)
def test_bad_requests_are_answered_with_their_status_and_closed(data: bytes, status: int) -> None:
    relay, rec = make()
    relay.feed_client(data)
    assert rec.refusals == [status]
    assert rec.take_client().startswith(b"HTTP/1.1 %d " % status)
    assert rec.upstream == b"" and rec.heads == []
    assert rec.end is not None and relay.done


def test_a_huge_head_in_small_pieces_is_refused_431_without_buffering_it() -> None:
    relay, rec = make()
    relay.feed_client(b"GET / HTTP/1.1\r\nHost: a\r\nX: ")
    for _ in range(MAX_HEAD // 1000 + 2):
        relay.feed_client(b"a" * 1000)
        if relay.done:
            break
    assert rec.refusals == [431] and relay.done


def test_check_request_head_directly() -> None:
    head = RequestHead("GET", "/", "HTTP/1.0", (("Transfer-Encoding", "chunked"),))
    with pytest.raises(HttpError) as caught:
        check_request_head(head)
    assert caught.value.status == 400


def test_rewrite_headers() -> None:
    head = RequestHead(
        "GET",
        "/",
        "HTTP/1.1",
        (
            ("Host", "x"),
            ("Authorization", "Bearer a"),
            ("Impersonate-User", "root"),
            ("impersonate-extra-scopes", "s"),
            ("Accept", "a"),
        ),
    )
    new = rewrite_headers(
        head, remove=("authorization", "Impersonate-*"), add=[("Authorization", "Bearer b")]
    )
    assert new.headers == (("Host", "x"), ("Accept", "a"), ("Authorization", "Bearer b"))
    with pytest.raises(ValueError):
        rewrite_headers(head, remove=(), add=[("X", "a\r\nInjected: 1")])
    with pytest.raises(ValueError):
        rewrite_headers(head, remove=(), add=[("Bad Name", "a")])


def test_a_chunked_response_is_relayed_piece_by_piece() -> None:
    relay, rec = make()
    relay.feed_client(b"GET /w HTTP/1.1\r\nHost: a\r\n\r\n")
    relay.feed_upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert rec.take_client() == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    relay.feed_upstream(b"1d\r\n{")
    assert rec.take_client() == b"1\r\n{\r\n"  # at the client before the chunk is complete
    assert rec.finished_exchanges == []
    relay.feed_upstream(b"x" * 28 + b"\r\n0\r\n\r\n")
    assert rec.take_client() == b"1c\r\n" + b"x" * 28 + b"\r\n0\r\n\r\n"
    (exchange,) = rec.finished_exchanges
    assert exchange.status == 200 and exchange.ended == "complete"
    assert relay.exchange is None and not relay.done


def test_a_close_delimited_response_is_reframed_as_chunked() -> None:
    relay, rec = make()
    relay.feed_client(b"GET /w HTTP/1.1\r\nHost: a\r\n\r\n")
    relay.feed_upstream(b"HTTP/1.1 200 OK\r\n\r\nhello")
    relay.upstream_eof()
    out = rec.take_client()
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in out
    assert out.endswith(b"5\r\nhello\r\n0\r\n\r\n")
    assert rec.finished_exchanges[0].ended == "complete"
    assert rec.end is not None and rec.end[1]


@pytest.mark.parametrize("request_head", [EXEC_WS, EXEC_SPDY])
def test_bytes_with_the_101_and_early_bytes_from_the_client_both_pass(request_head: bytes) -> None:
    relay, rec = make()
    relay.feed_client(request_head + b"early")
    assert rec.take_upstream() == request_head  # early bytes held until the answer
    relay.feed_upstream(SWITCH + b"first-output")
    assert rec.take_client() == SWITCH + b"first-output"
    assert rec.take_upstream() == b"early"
    assert rec.switches == 1 and relay.upgraded is not None
    relay.feed_client(b"GET / HTTP/1.1\r\n\r\n")  # raw now
    assert rec.take_upstream() == b"GET / HTTP/1.1\r\n\r\n"
    relay.upstream_eof()
    relay.client_eof()
    (exchange,) = rec.finished_exchanges
    assert exchange.upgraded and exchange.status == 101 and exchange.ended == "complete"
    assert exchange.response_bytes == len(SWITCH) + len(b"first-output")


def test_a_refused_upgrade_turns_held_bytes_back_into_requests() -> None:
    relay, rec = make()
    second = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    relay.feed_client(EXEC_WS + second)
    assert len(rec.heads) == 1
    relay.feed_upstream(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    assert [head.target for head in rec.heads] == [
        "/api/v1/namespaces/default/pods/p/exec?command=ls&command=-l&stdout=true",
        "/next",
    ]
    assert rec.take_upstream().endswith(second)


def test_local_answers_drain_the_body_and_keep_the_connection() -> None:
    relay, rec = make()
    rec.answer = error_answer(403, "no")
    relay.feed_client(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
    assert rec.take_client().startswith(b"HTTP/1.1 403 Forbidden\r\n")
    relay.feed_client(b"cdGET /y HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [head.target for head in rec.heads] == ["/x", "/y"]
    assert rec.upstream == b""
    assert not relay.done


def test_pipelined_bytes_are_bounded() -> None:
    relay, rec = make()
    relay.feed_client(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    relay.feed_client(b"G" * (MAX_PENDING + 1))
    assert relay.done and rec.end is not None and not rec.end[1]
    (exchange,) = rec.finished_exchanges
    assert exchange.ended == "aborted"


def test_a_malformed_response_before_anything_was_relayed_is_a_502() -> None:
    relay, rec = make()
    relay.feed_client(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    relay.feed_upstream(b"HTTP/1.1 2000 Nope\r\n\r\n")
    assert rec.take_client().startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    (exchange,) = rec.finished_exchanges
    assert exchange.status == 502
    assert rec.end is not None and relay.done


def test_abort_reports_the_exchange_in_flight_once_with_its_bytes() -> None:
    relay, rec = make()
    relay.feed_client(b"GET /w?watch=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    relay.feed_upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    relay.abort("session closed")
    relay.abort("again")
    (exchange,) = rec.finished_exchanges
    assert exchange.ended == "aborted" and exchange.status == 200
    assert exchange.response_bytes == len(rec.client)


# -- random chunkings: what arrives does not depend on how the bytes were cut -------------


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return [p for p in pieces if p]


CONVERSATION = (
    b"POST /api/v1/namespaces/d/configmaps HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;x=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
)
ANSWER = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n"


@given(
    client_cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    upstream_cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_random_chunkings_relay_the_same_bytes(
    client_cuts: list[int], upstream_cuts: list[int]
) -> None:
    whole, whole_rec = make()
    whole.feed_client(CONVERSATION + EXEC_SPDY + b"early")
    whole.feed_upstream(ANSWER)
    whole.feed_upstream(SWITCH + b"out")
    relay, rec = make()
    for piece in _cut(CONVERSATION + EXEC_SPDY + b"early", client_cuts):
        relay.feed_client(piece)
    for piece in _cut(ANSWER + SWITCH + b"out", upstream_cuts):
        relay.feed_upstream(piece)
    assert _dechunked(rec.upstream) == _dechunked(whole_rec.upstream)
    assert _dechunked(rec.client) == _dechunked(whole_rec.client)
    assert rec.switches == 1 and len(rec.finished_exchanges) == 1


def _dechunked(data: bytearray) -> bytes:
    """Chunk boundaries depend on the reads: compare the bytes without chunk-size lines."""
    import re

    return re.sub(rb"\r\n[0-9a-f]+(;[^\r]*)?\r\n", b"", bytes(data))
