"""HTTP/1.1 heads, header rewriting and chunked bodies (shared/k8s/http.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.k8s.http import (
    ChunkedDecoder,
    HttpError,
    RequestHead,
    RequestHeadParser,
    ResponseHead,
    ResponseHeadParser,
    encode_head,
    rewrite_headers,
)

EXEC_WS = (
    b"GET /api/v1/namespaces/default/pods/p/exec?command=ls&command=-l&stdout=true HTTP/1.1\r\n"
    b"Host: 127.0.0.5:18443\r\n"
    b"User-Agent: kubectl/v1.31.9\r\n"
    b"Authorization: Bearer session-token\r\n"
    b"Connection: Upgrade\r\n"
    b"Upgrade: websocket\r\n"
    b"Sec-Websocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-Websocket-Protocol: v5.channel.k8s.io\r\n"
    b"Sec-Websocket-Version: 13\r\n"
    b"Impersonate-User: alice\r\n"
    b"Impersonate-Group: dev\r\n"
    b"Impersonate-Group: ops\r\n"
    b"Kubectl-Command: kubectl exec\r\n"
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


def parse(data: bytes, **kwargs: int) -> RequestHead:
    parser = RequestHeadParser(**kwargs)
    head = parser.feed(data)
    assert head is not None
    return head


def test_websocket_exec_head() -> None:
    parser = RequestHeadParser()
    head = parser.feed(EXEC_WS + b"\x82\x01\x00")
    assert head is not None
    assert parser.done
    assert parser.rest() == b"\x82\x01\x00"
    assert head.method == "GET"
    assert head.version == "HTTP/1.1"
    assert head.path == "/api/v1/namespaces/default/pods/p/exec"
    assert head.query == {"command": ["ls", "-l"], "stdout": ["true"]}
    assert head.is_upgrade
    assert head.get("sec-websocket-protocol") == "v5.channel.k8s.io"
    assert head.get_all("IMPERSONATE-GROUP") == ("dev", "ops")
    assert head.get("missing") is None
    assert head.content_length is None
    assert not head.chunked
    assert not head.has_body
    assert head.keep_alive


def test_spdy_exec_keeps_repeated_lines() -> None:
    head = parse(EXEC_SPDY)
    assert head.is_upgrade
    assert head.content_length == 0
    assert len(head.get_all("x-stream-protocol-version")) == 4
    assert encode_head(head) == EXEC_SPDY


def test_not_upgrade_without_both_headers() -> None:
    assert not parse(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n").is_upgrade
    assert not parse(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n").is_upgrade
    assert parse(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"
    ).is_upgrade


def test_incomplete_then_complete() -> None:
    parser = RequestHeadParser()
    assert parser.feed(EXEC_SPDY[:-1]) is None
    assert not parser.done
    assert parser.rest() == b""
    assert parser.feed(EXEC_SPDY[-1:]) is not None
    with pytest.raises(RuntimeError):
        parser.feed(b"more")


def test_bare_lf_tolerated_and_reencoded_with_crlf() -> None:
    head = parse(b"GET /version HTTP/1.1\nHost: h\nAccept: */*\n\nrest")
    assert head.headers == (("Host", "h"), ("Accept", "*/*"))
    assert encode_head(head) == b"GET /version HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"


def test_leading_empty_lines_skipped() -> None:
    assert parse(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").target == "/"


def test_chunked_and_length() -> None:
    head = parse(
        b"POST /api/v1/namespaces/d/configmaps HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert head.chunked and head.has_body and head.content_length is None
    head = parse(
        b"PATCH /x HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nContent-Length: 12\r\n\r\n"
    )
    assert head.content_length == 12
    assert head.has_body


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /\r\nHost: h\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET http://evil/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"GET / HTTX\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-A : 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ],
)
def test_bad_requests(data: bytes, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        RequestHeadParser().feed(data)
    assert caught.value.status == status
    assert caught.value.reason


def test_limits() -> None:
    with pytest.raises(HttpError) as caught:
        RequestHeadParser(max_head=100).feed(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 30)
    assert caught.value.status == 431
    with pytest.raises(HttpError) as caught:
        RequestHeadParser(max_headers=3).feed(
            b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 3 + b"\r\n"
        )
    assert caught.value.status == 431
    with pytest.raises(HttpError) as caught:
        RequestHeadParser(max_line=50).feed(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"y" * 60)
    assert caught.value.status == 431
    with pytest.raises(HttpError) as caught:
        RequestHeadParser(max_line=50).feed(b"GET /" + b"a" * 60)
    assert caught.value.status == 414


def test_rewrite_headers() -> None:
    head = parse(EXEC_WS)
    rewritten = rewrite_headers(
        head,
        remove=["authorization", "Impersonate-*", "x-forwarded-for"],
        add=[("Authorization", "Bearer sa-token"), ("Impersonate-User", "pra:alice")],
    )
    names = [name for name, _ in rewritten.headers]
    assert names == [
        "Host",
        "User-Agent",
        "Connection",
        "Upgrade",
        "Sec-Websocket-Key",
        "Sec-Websocket-Protocol",
        "Sec-Websocket-Version",
        "Kubectl-Command",
        "Authorization",
        "Impersonate-User",
    ]
    assert rewritten.get("authorization") == "Bearer sa-token"
    assert rewritten.get_all("impersonate-group") == ()
    encoded = encode_head(rewritten)
    assert b"session-token" not in encoded
    assert b"alice\r\n" not in encoded.replace(b"pra:alice", b"")
    assert parse(encoded) == rewritten
    with pytest.raises(ValueError):
        rewrite_headers(head, remove=[], add=[("X-A", "a\r\nInjected: 1")])
    with pytest.raises(ValueError):
        rewrite_headers(head, remove=[], add=[("Bad Name", "v")])


def test_response_heads() -> None:
    parser = ResponseHeadParser()
    switching = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-Websocket-Protocol: v5.channel.k8s.io\r\n\r\n\x82\x02\x01a"
    )
    head = parser.feed(switching)
    assert isinstance(head, ResponseHead)
    assert (head.status, head.reason, head.version) == (101, "Switching Protocols", "HTTP/1.1")
    assert head.is_switching
    assert head.body_kind("GET") == "none"
    assert parser.rest() == b"\x82\x02\x01a"

    watch = ResponseHeadParser().feed(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert watch is not None and watch.chunked and watch.body_kind("GET") == "chunked"
    assert watch.body_kind("HEAD") == "none"
    plain = ResponseHeadParser().feed(b"HTTP/1.1 404\r\nContent-Length: 10\r\n\r\n")
    assert plain is not None and plain.status == 404 and plain.reason == ""
    assert plain.body_kind("GET") == "length" and plain.content_length == 10
    eof = ResponseHeadParser().feed(b"HTTP/1.0 200 OK\r\n\r\n")
    assert eof is not None and eof.body_kind("GET") == "close" and not eof.keep_alive
    assert ResponseHeadParser().feed(b"HTTP/1.1 204 No Content\r\n\r\n") is not None


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 99 Low\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
    ],
)
def test_bad_responses(data: bytes) -> None:
    with pytest.raises(HttpError) as caught:
        ResponseHeadParser().feed(data)
    assert caught.value.status == 502


def test_chunked_decoder() -> None:
    decoder = ChunkedDecoder()
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nGET / HTTP/1.1\r\n"
    pieces = decoder.feed(body)
    assert b"".join(pieces) == b"hello world"
    assert decoder.done
    assert decoder.data_bytes == 11
    assert decoder.trailers == [b"X-Trailer: t"]
    assert decoder.rest() == b"GET / HTTP/1.1\r\n"
    assert decoder.wire_bytes == len(body) - len(b"GET / HTTP/1.1\r\n")
    assert decoder.feed(b"x") == []
    assert decoder.rest().endswith(b"x")


def test_chunked_does_not_buffer_data() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"100000\r\n") == []
    assert decoder.feed(b"a" * 1000) == [b"a" * 1000]
    assert not decoder.done


@pytest.mark.parametrize(
    "body",
    [
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"g\r\n",
        b"-5\r\n",
        b" 5\r\n",
        b"5 \r\n",
        b"5;a b\r\n",
        b"11111111111111111\r\n",
        b"5\r\nhello\r\n0\r\n folded\r\n\r\n",
        b"5\r\nhello\r\n0\r\nno-colon\r\n\r\n",
        b"1" * 5000,
        b"",
    ],
)
def test_chunked_errors(body: bytes) -> None:
    decoder = ChunkedDecoder()
    if not body:
        decoder = ChunkedDecoder(max_trailers=10)
        body = b"0\r\n" + b"X: " + b"a" * 20 + b"\r\n\r\n"
    with pytest.raises(HttpError) as caught:
        decoder.feed(body)
    assert caught.value.status == 400
    with pytest.raises(HttpError):
        decoder.feed(b"0\r\n\r\n")


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


_names = st.sampled_from(
    [
        "Host",
        "Accept",
        "X-Stream-Protocol-Version",
        "Impersonate-Group",
        "Kubectl-Session",
        "Content-Type",
    ]
)
_values = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)


@given(
    headers=st.lists(st.tuples(_names, _values), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
    lf_only=st.booleans(),
)
def test_heads_in_random_chunks(
    headers: list[tuple[str, str]], cuts: list[int], lf_only: bool
) -> None:
    headers = [("Host", "h")] + [(n, v) for n, v in headers if n != "Host"]
    eol = "\n" if lf_only else "\r\n"
    text = (
        "GET /api/v1/pods?watch=1 HTTP/1.1"
        + eol
        + "".join(f"{n}: {v}{eol}" for n, v in headers)
        + eol
    )
    data = text.encode("ascii") + b"BODY"
    whole = parse(data)
    parser = RequestHeadParser()
    pieces = [piece for piece in _chunks(data[:-4], cuts) if piece]
    results = [parser.feed(piece) for piece in pieces[:-1]]
    assert results == [None] * len(results)
    assert parser.feed(pieces[-1]) == whole
    assert parser.rest() == b""
    assert whole.headers == tuple(headers)
    encoded = encode_head(whole)
    assert parse(encoded) == whole
    assert encoded == text.replace(eol, "\r\n").encode("ascii")


@given(
    payload=st.lists(st.binary(min_size=1, max_size=50), max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_chunked_in_random_pieces(payload: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in payload) + b"0\r\n\r\n"
    decoder = ChunkedDecoder()
    out = []
    for piece in _chunks(wire + b"NEXT", cuts):
        out.extend(decoder.feed(piece))
    assert b"".join(out) == b"".join(payload)
    assert decoder.done
    assert decoder.rest() == b"NEXT"
    assert decoder.wire_bytes == len(wire)


@given(st.binary(max_size=300))
def test_parsers_only_raise_http_error(data: bytes) -> None:
    for parser in (RequestHeadParser(max_head=200), ResponseHeadParser(max_head=200)):
        try:
            parser.feed(data)
        except HttpError as error:
            assert error.status in (400, 414, 431, 501, 505, 502)
    decoder = ChunkedDecoder(max_line=20, max_trailers=50)
    try:
        decoder.feed(data)
    except HttpError as error:
        assert error.status == 400
