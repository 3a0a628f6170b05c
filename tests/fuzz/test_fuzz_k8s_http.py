"""Fuzz target of the Kubernetes HTTP/1.1 layer (shared/codecs/http/heads.py and shared/codecs/http/relay.py).

Valid requests and responses (heads, chunked and sized bodies, upgrades),
mutated ones and random bytes are fed to an L{HttpRelay} in random chunkings
from both sides.  Nothing but the relay's own answers may come out of it (no
exception escapes), every exchange is reported at most once, and a relay
that ends reports its end exactly once.  Run long with C{scripts/fuzz.sh}.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.codecs.http.heads import Answer, Forward
from shared.codecs.http.relay import Exchange, HttpRelay

REQUESTS = [
    b"GET /api/v1/namespaces/d/pods HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /api/v1/namespaces/d/configmaps HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n",
    b"GET /api/v1/namespaces/d/pods/p/exec HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\n\r\n\x82\x01\x00",
    b"GET //api/v1/secrets HTTP/1.1\r\nHost: a\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nout",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nuntil close",
]


class Handler:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.reported: list[Exchange] = []
        """The exchanges themselves: an id() of a freed one may be reused."""
        self.ends = 0

    def now(self) -> float:
        return 0.0

    def decide(self, exchange: Exchange) -> Forward | Answer:
        if self.answer:
            return Answer(403, (("Content-Type", "application/json"),), b"{}")
        return Forward(exchange.head)

    def refused(self, status: int, reason: str) -> None:
        assert 400 <= status < 600

    def to_client(self, data: bytes) -> None:
        assert isinstance(data, bytes)

    def to_upstream(self, data: bytes) -> None:
        assert isinstance(data, bytes)

    def switched(self, exchange: Exchange) -> None:
        pass

    def exchange_finished(self, exchange: Exchange) -> None:
        assert all(seen is not exchange for seen in self.reported)
        self.reported.append(exchange)

    def upstream_ended(self) -> None:
        pass

    def client_ended(self) -> None:
        pass

    def finished(self, reason: str, clean: bool) -> None:
        self.ends += 1


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        if out:
            out[position % len(out)] = value
    return bytes(out)


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    client=st.lists(st.sampled_from(REQUESTS), min_size=1, max_size=4).map(b"".join),
    upstream=st.lists(st.sampled_from(RESPONSES), min_size=1, max_size=3).map(b"".join),
    client_edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
    upstream_edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
    order=st.lists(st.booleans(), max_size=20),
    answer=st.booleans(),
    noise=st.binary(max_size=64),
    ends=st.sampled_from(["none", "client", "upstream", "both", "abort"]),
)
def test_the_relay_survives_any_bytes_in_any_chunking(
    client: bytes,
    upstream: bytes,
    client_edits: list[tuple[int, int]],
    upstream_edits: list[tuple[int, int]],
    cuts: list[int],
    order: list[bool],
    answer: bool,
    noise: bytes,
    ends: str,
) -> None:
    handler = Handler(answer)
    relay = HttpRelay(handler)
    from_client = _pieces(_mutate(client, client_edits) + noise, cuts)
    from_upstream = _pieces(_mutate(upstream, upstream_edits), cuts)
    turns = iter(order)
    while from_client or from_upstream:
        if from_client and (not from_upstream or next(turns, True)):
            relay.feed_client(from_client.pop(0))
        else:
            relay.feed_upstream(from_upstream.pop(0))
    if ends in ("client", "both"):
        relay.client_eof()
    if ends in ("upstream", "both"):
        relay.upstream_eof()
    if ends == "abort":
        relay.abort("cut")
    relay.abort("the end")
    assert relay.done and handler.ends == 1
