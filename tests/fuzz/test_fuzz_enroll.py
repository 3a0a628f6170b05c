"""Fuzz target of the enrollment exchange's request side (shared/protocol/enroll.py).

Valid requests, mutated ones and random bytes are fed in random chunkings to
a L{LineBuffer} and L{parse_request}: only a request, L{InvalidRequest} or
L{LineTooLong} may come out; the buffer never holds more than its limit; a
request fed in pieces parses exactly as fed at once.  Run long with
C{scripts/fuzz.sh}.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from shared.errors import InvalidRequest
from shared.protocol.enroll import (
    MAX_LINE,
    EnrollRequest,
    LineBuffer,
    LineTooLong,
    parse_request,
)

TOKEN = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
                min_size=43, max_size=43)  # fmt: skip


@st.composite
def request_line(draw: st.DrawFn) -> bytes:
    message: dict[str, object] = {
        "token": draw(st.one_of(TOKEN, st.text(max_size=60), st.integers())),
        "csr": draw(st.one_of(st.just("-----BEGIN CERTIFICATE REQUEST-----\nAA\n"), st.text())),
        "client": draw(st.one_of(st.text(max_size=200), st.none(), st.integers())),
    }
    line = json.dumps(message).encode()
    if draw(st.booleans()):
        position = draw(st.integers(0, len(line)))
        line = line[:position] + draw(st.binary(max_size=8)) + line[position:]
    return line + b"\n"


def outcome(pieces: list[bytes]) -> object:
    buffer = LineBuffer()
    try:
        for piece in pieces:
            line = buffer.feed(piece)
            assert len(buffer._data) <= MAX_LINE + max(map(len, pieces))
            if line is not None:
                return parse_request(line)
    except (InvalidRequest, LineTooLong) as error:
        return type(error)
    return None


@given(st.one_of(request_line(), st.binary(max_size=MAX_LINE + 100)), st.data())
def test_enroll_requests_in_any_chunking(data: bytes, draw: st.DataObject) -> None:
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=6)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    whole = outcome([data])
    assert outcome(pieces) == whole
    assert (
        whole is None or whole in (InvalidRequest, LineTooLong) or isinstance(whole, EnrollRequest)
    )
