"""The sans-IO HTTP/1.1 proxy engine both Kubernetes legs run (console and Jumpoint).

Both legs of a Kubernetes tunnel are an HTTP/1.1 proxy: on the console,
kubectl's TLS connection relayed to a stream; on the Jumpoint, the stream
relayed to the cluster's TLS connection.  L{HttpRelay} holds two h11
connections, a server for the client's side and a client for the upstream
side, so every message is parsed by h11 and re-encoded by h11 before it goes
on: the framing the next hop reads is always the framing h11 wrote, never
the sender's bytes, so nothing can be smuggled past a check.

Rules:

  - one request at a time: h11 holds pipelined bytes until the answer is
    complete (at most L{MAX_PENDING} bytes, else the connection is dropped);
  - the handler decides each request (L{Forward} with the head to send, or
    L{Answer} with a local response) and hears of every exchange exactly
    once (L{RelayHandler.exchange_finished}), however it ends: C{complete},
    or C{aborted} with the bytes so far when it is cut;
  - after C{101 Switching Protocols}, the bytes each h11 connection already
    holds beyond the heads (the first frames of the upgraded protocol, from
    either side, possibly in the same read as the 101) are passed on first,
    then raw bytes both ways;
  - a malformed request is answered (its status, C{Connection: close}) and
    the connection closed; a malformed or lost response before anything was
    relayed is answered 502, after that the connection is cut.

The relay's mode is an explicit lifecycle, L{HttpRelay.mode}: L{RelayMode}
moved by L{RelayEvent}s along L{RELAY_TRANSITIONS} (idle between exchanges,
one exchange in flight, upgraded, done); message framing within an exchange
(Content-Length, chunked, until close) is h11's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

import h11

from shared.codecs.http.heads import (
    MAX_HEAD,
    Answer,
    Forward,
    HttpError,
    RequestHead,
    check_request_head,
    check_response_head,
    decode_headers,
    error_answer,
    h11_headers,
    request_head,
    status_phrase,
)
from shared.lifecycle import Transitions

MAX_PENDING = 1 << 20
"""Most bytes a peer may send ahead of the answer to its current request."""


class RelayMode(enum.Enum):
    """What an L{HttpRelay} is doing."""

    IDLE = enum.auto()
    """Waiting for the next request head."""
    EXCHANGE = enum.auto()
    """One request and its answer are in flight (L{HttpRelay.exchange})."""
    UPGRADED = enum.auto()
    """101 Switching Protocols: raw bytes both ways (L{HttpRelay.upgraded})."""
    DONE = enum.auto()
    """The conversation is over (L{RelayHandler.finished} was called)."""


class RelayEvent(enum.Enum):
    """What moves an L{HttpRelay} from one L{RelayMode} to the next."""

    REQUEST = enum.auto()
    """A request head arrived."""
    CYCLE_DONE = enum.auto()
    """Both messages of the exchange are complete; the connection is kept."""
    SWITCHED = enum.auto()
    """The upstream side answered 101."""
    FINISH = enum.auto()
    """The conversation ends, in order or not."""


RELAY_TRANSITIONS: Transitions[RelayMode, RelayEvent] = Transitions(
    "http relay",
    RelayMode,
    RelayEvent,
    {
        RelayMode.IDLE: {RelayEvent.REQUEST: RelayMode.EXCHANGE, RelayEvent.FINISH: RelayMode.DONE},
        RelayMode.EXCHANGE: {
            RelayEvent.CYCLE_DONE: RelayMode.IDLE,
            RelayEvent.SWITCHED: RelayMode.UPGRADED,
            RelayEvent.FINISH: RelayMode.DONE,
        },
        RelayMode.UPGRADED: {RelayEvent.FINISH: RelayMode.DONE},
        RelayMode.DONE: {},
    },
)
"""Every move a relay may make; anything else raises L{IllegalTransition}."""


@dataclass(eq=False)
class Exchange:
    """One request and what became of it.

    @ivar context: whatever the handler keeps with it (classification ...).
    @ivar ended: C{complete}, or C{aborted} when the exchange was cut.
    """

    head: RequestHead
    started: float
    context: Any = None
    forwarded: bool = False
    answered: bool = False
    upgraded: bool = False
    status: int | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    ended: str | None = None
    _request_done: bool = field(default=False, repr=False)


class RelayHandler(Protocol):
    """What an L{HttpRelay} needs from the bridge that drives it."""

    def now(self) -> float:
        """The clock, for L{Exchange.started}."""

    def decide(self, exchange: Exchange) -> Forward | Answer:
        """Forward the request (with which head) or answer it here."""

    def refused(self, status: int, reason: str) -> None:
        """A malformed request was answered C{status} (the connection then closes)."""

    def to_client(self, data: bytes) -> None:
        """Bytes for the client's side."""

    def to_upstream(self, data: bytes) -> None:
        """Bytes for the upstream side."""

    def switched(self, exchange: Exchange) -> None:
        """C{exchange} got 101: raw bytes both ways from now on."""

    def exchange_finished(self, exchange: Exchange) -> None:
        """C{exchange} is over (exactly one call per exchange)."""

    def upstream_ended(self) -> None:
        """Upgraded: the upstream side sent its last byte (half-close the client's side)."""

    def client_ended(self) -> None:
        """Upgraded: the client's side sent its last byte (half-close upstream)."""

    def finished(self, reason: str, clean: bool) -> None:
        """The conversation is over: close both sides (in order if C{clean}, else abort)."""


class HttpRelay:
    """A sans-IO HTTP/1.1 proxy between a client's side and an upstream side (module docstring).

    The bridge feeds bytes with L{feed_client}/L{feed_upstream} and the ends
    with L{client_eof}/L{upstream_eof}; L{abort} ends everything (the
    exchange in flight is reported C{aborted}).
    """

    def __init__(self, handler: RelayHandler, *, max_head: int = MAX_HEAD) -> None:
        self.handler = handler
        self.inbound = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self.outbound = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head)
        self.exchange: Exchange | None = None
        self.upgraded: Exchange | None = None
        self.lifecycle = RELAY_TRANSITIONS.start(RelayMode.IDLE)
        self.requests = 0
        """Requests read so far (local answers included)."""
        self._client_eof = False
        self._upstream_eof = False
        self._pumping = False

    # -- input ----------------------------------------------------------------

    def feed_client(self, data: bytes) -> None:
        if self.done or not data:
            return
        upgraded = self.upgraded
        if upgraded is not None:
            upgraded.request_bytes += len(data)
            self.handler.to_upstream(data)
            return
        self.inbound.receive_data(data)
        self._pump()

    def feed_upstream(self, data: bytes) -> None:
        if self.done or not data:
            return
        upgraded = self.upgraded
        if upgraded is not None:
            upgraded.response_bytes += len(data)
            self.handler.to_client(data)
            return
        if self.exchange is None or not self.exchange.forwarded:
            self._fail("the upstream side sent bytes that answer no request")
            return
        self.outbound.receive_data(data)
        self._pump()

    def client_eof(self) -> None:
        if self.done or self._client_eof:
            return
        self._client_eof = True
        if self.upgraded is not None:
            self.handler.client_ended()
            self._maybe_end_upgraded()
            return
        self.inbound.receive_data(b"")
        self._pump()

    def upstream_eof(self) -> None:
        if self.done or self._upstream_eof:
            return
        self._upstream_eof = True
        if self.upgraded is not None:
            self.handler.upstream_ended()
            self._maybe_end_upgraded()
            return
        exchange = self.exchange
        if exchange is not None and exchange.forwarded:
            self.outbound.receive_data(b"")
            self._pump()
            if not self.done and self.exchange is exchange:
                self._upstream_lost(exchange, "the upstream side closed the connection")
            return
        self._finish("closed", clean=True)

    def upstream_lost(self, reason: str) -> None:
        """The upstream side failed (or could not be reached): 502 if nothing was answered yet."""
        if self.done:
            return
        self._upstream_eof = True
        exchange = self.upgraded or self.exchange
        if exchange is not None and exchange.forwarded:
            self._upstream_lost(exchange, reason)
        else:
            self._finish(reason, clean=True)

    def end(self, reason: str) -> None:
        """End in order: an upgraded exchange is C{complete}, a request in flight C{aborted}."""
        if self.done:
            return
        self._finish(reason, clean=True)

    def abort(self, reason: str) -> None:
        """End now: an exchange in flight is reported C{aborted}, with its bytes so far."""
        if self.done:
            return
        self._finish(reason, clean=False)

    @property
    def mode(self) -> RelayMode:
        return self.lifecycle.state

    @property
    def done(self) -> bool:
        """The conversation is over."""
        return self.lifecycle.state is RelayMode.DONE

    @property
    def busy(self) -> bool:
        """An exchange is in flight (or the connection is upgraded)."""
        return self.lifecycle.state in (RelayMode.EXCHANGE, RelayMode.UPGRADED)

    # -- the loop -----------------------------------------------------------------------

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            progress = True
            while progress and not self.done and self.upgraded is None:
                progress = self._upstream_step() | self._client_step()
        finally:
            self._pumping = False

    def _client_step(self) -> bool:
        """Handle the next event from the client; False if there is none now."""
        if self.done:  # the upstream step of this round may have ended the conversation
            return False
        exchange = self.exchange
        if exchange is not None and exchange._request_done:
            if len(self.inbound.trailing_data[0]) > MAX_PENDING:
                self._fail("the client sent too much ahead of an answer")
            return False
        try:
            event = self.inbound.next_event()
        except h11.RemoteProtocolError as error:
            self._bad_request(error.error_status_hint, str(error))
            return False
        if event is h11.NEED_DATA or event is h11.PAUSED:
            if len(self.inbound.trailing_data[0]) > MAX_PENDING:
                self._fail("the client sent too much ahead of an answer")
            return False
        if isinstance(event, h11.Request):
            self._start(event)
        elif isinstance(event, h11.Data):
            self._request_data(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            self._request_end(event)
        elif isinstance(event, h11.ConnectionClosed):
            if self.exchange is None:
                self._finish("closed", clean=True)
            return False
        return True

    def _upstream_step(self) -> bool:
        exchange = self.exchange
        if exchange is None or not exchange.forwarded:
            return False
        try:
            event = self.outbound.next_event()
        except h11.RemoteProtocolError as error:
            self._upstream_lost(exchange, f"malformed response: {error}")
            return False
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return False
        try:
            if isinstance(event, h11.InformationalResponse):
                self._informational(exchange, event)
            elif isinstance(event, h11.Response):
                headers = decode_headers(event.headers.raw_items())
                try:
                    check_response_head(headers)
                except HttpError as error:
                    self._upstream_lost(exchange, error.reason)
                    return False
                exchange.status = event.status_code
                self._send_client(
                    exchange,
                    h11.Response(
                        status_code=event.status_code,
                        headers=event.headers.raw_items(),
                        reason=event.reason,
                    ),
                )
            elif isinstance(event, h11.Data):
                self._send_client(exchange, h11.Data(data=bytes(event.data)))
            elif isinstance(event, h11.EndOfMessage):
                self._send_client(exchange, h11.EndOfMessage(headers=event.headers.raw_items()))
                self._response_done(exchange)
            elif isinstance(event, h11.ConnectionClosed):
                return False
        except h11.LocalProtocolError as error:
            self._upstream_lost(exchange, f"the response cannot be relayed: {error}")
            return False
        return True

    # -- requests -------------------------------------------------------------------------

    def _start(self, event: h11.Request) -> None:
        head = request_head(event)
        self.requests += 1
        exchange = Exchange(head=head, started=self.handler.now())
        self.lifecycle.fire(RelayEvent.REQUEST)
        self.exchange = exchange
        try:
            check_request_head(head)
        except HttpError as error:
            self._bad_request(error.status, error.reason)
            return
        decision = self.handler.decide(exchange)
        if isinstance(decision, Answer):
            self._answer(exchange, decision)
            return
        sent = decision.head
        try:
            data = self.outbound.send(
                h11.Request(
                    method=sent.method.encode("ascii"),
                    target=sent.target.encode("ascii"),
                    headers=h11_headers(sent.headers),
                )
            )
        except (h11.LocalProtocolError, UnicodeEncodeError) as error:
            self._answer(exchange, error_answer(400, f"the request cannot be forwarded: {error}"))
            return
        exchange.forwarded = True
        self._send_upstream(exchange, data)

    def _request_data(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None or not exchange.forwarded or not data:
            return
        self._send_upstream(exchange, self.outbound.send(h11.Data(data=data)))

    def _request_end(self, event: h11.EndOfMessage) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        exchange._request_done = True
        if exchange.forwarded and self.outbound.our_state is h11.SEND_BODY:
            try:
                data = self.outbound.send(h11.EndOfMessage(headers=event.headers.raw_items()))
            except h11.LocalProtocolError as error:  # a Content-Length the body did not match
                self._fail(f"the request body cannot be forwarded: {error}")
                return
            self._send_upstream(exchange, data)
        self._maybe_next()

    def _send_upstream(self, exchange: Exchange, data: bytes | None) -> None:
        if data:
            exchange.request_bytes += len(data)
            self.handler.to_upstream(data)

    def _send_client(self, exchange: Exchange, event: h11.Event) -> None:
        data = self.inbound.send(event)
        if data:
            exchange.response_bytes += len(data)
            self.handler.to_client(data)

    def _write_answer(self, exchange: Exchange, answer: Answer) -> None:
        """Write a complete local response (Content-Length, and close if asked)."""
        headers = [*answer.headers, ("Content-Length", str(len(answer.body)))]
        if answer.close:
            headers.append(("Connection", "close"))
        exchange.status = answer.status
        self._send_client(
            exchange,
            h11.Response(
                status_code=answer.status,
                headers=h11_headers(tuple(headers)),
                reason=status_phrase(answer.status).encode("ascii"),
            ),
        )
        self._send_client(exchange, h11.Data(data=answer.body))
        self._send_client(exchange, h11.EndOfMessage())

    def _answer(self, exchange: Exchange, answer: Answer) -> None:
        """A local response; the exchange is over once the request's body is read."""
        exchange.answered = True
        self._write_answer(exchange, answer)
        self._report(exchange, "complete")
        if answer.close:
            self._finish("closed after a local answer", clean=True)
            return
        self._maybe_next()

    def _bad_request(self, status: int, reason: str) -> None:
        """A malformed request: answer C{status} if we still can, then close."""
        exchange = self.exchange
        self.handler.refused(status, reason)
        if self.inbound.our_state in (h11.IDLE, h11.SEND_RESPONSE) and (
            exchange is None or not exchange.forwarded
        ):
            answer = error_answer(status, f"malformed request: {reason}", close=True)
            target = exchange or Exchange(RequestHead("", "", "", ()), self.handler.now())
            try:
                self._answer(target, answer)
            except h11.LocalProtocolError:
                self._fail(f"malformed request: {reason}")
            if exchange is None:
                self.exchange = None
            return
        self._fail(f"malformed request: {reason}")

    # -- responses -----------------------------------------------------------------

    def _informational(self, exchange: Exchange, event: h11.InformationalResponse) -> None:
        if event.status_code != 101:
            self._send_client(
                exchange,
                h11.InformationalResponse(
                    status_code=event.status_code,
                    headers=event.headers.raw_items(),
                    reason=event.reason,
                ),
            )
            return
        self._send_client(
            exchange,
            h11.InformationalResponse(
                status_code=101, headers=event.headers.raw_items(), reason=event.reason
            ),
        )
        exchange.status = 101
        exchange.upgraded = True
        self.lifecycle.fire(RelayEvent.SWITCHED)
        self.upgraded = exchange
        self.exchange = None
        # What each side sent beyond its head is the upgraded protocol already.
        from_upstream, upstream_closed = self.outbound.trailing_data
        from_client, client_closed = self.inbound.trailing_data
        self.handler.switched(exchange)
        if from_upstream:
            exchange.response_bytes += len(from_upstream)
            self.handler.to_client(bytes(from_upstream))
        if from_client:
            exchange.request_bytes += len(from_client)
            self.handler.to_upstream(bytes(from_client))
        self._client_eof = self._client_eof or client_closed
        self._upstream_eof = self._upstream_eof or upstream_closed
        if self._client_eof:
            self.handler.client_ended()
        if self._upstream_eof:
            self.handler.upstream_ended()
        self._maybe_end_upgraded()

    def _response_done(self, exchange: Exchange) -> None:
        self._report(exchange, "complete")
        self._maybe_next()

    def _maybe_next(self) -> None:
        """Both messages of the exchange are complete: start the next cycle, or close."""
        exchange = self.exchange
        if exchange is None or not exchange._request_done or exchange.ended is None:
            return
        inbound, outbound = self.inbound, self.outbound
        if inbound.our_state is not h11.DONE or inbound.their_state is not h11.DONE:
            if h11.MUST_CLOSE in (inbound.our_state, inbound.their_state) or (
                inbound.their_state is h11.CLOSED
            ):
                self._finish("closed", clean=True)
            return
        if exchange.forwarded:
            if outbound.our_state is not h11.DONE or outbound.their_state is not h11.DONE:
                self._finish("closed", clean=True)
                return
            outbound.start_next_cycle()
        inbound.start_next_cycle()
        self.lifecycle.fire(RelayEvent.CYCLE_DONE)
        self.exchange = None
        if self._upstream_eof and exchange.forwarded:
            self._finish("the upstream side closed the connection", clean=True)

    def _upstream_lost(self, exchange: Exchange, reason: str) -> None:
        """The upstream side broke: answer 502 if the client got nothing yet, else cut."""
        if (
            exchange.response_bytes == 0
            and exchange.upgraded is False
            and self.inbound.our_state in (h11.IDLE, h11.SEND_RESPONSE)
        ):
            try:
                self._write_answer(
                    exchange, error_answer(502, reason, close=True, reason="InternalError")
                )
            except h11.LocalProtocolError:
                self._finish(reason, clean=False)
                return
            exchange.status = 502
            self._report(exchange, "complete")
            self._finish(reason, clean=True)
            return
        self._finish(reason, clean=False)

    def _maybe_end_upgraded(self) -> None:
        if self._client_eof and self._upstream_eof:
            self._finish("closed", clean=True)

    # -- the end --------------------------------------------------------------------------

    def _report(self, exchange: Exchange, ended: str) -> None:
        if exchange.ended is not None:
            return
        exchange.ended = ended
        self.handler.exchange_finished(exchange)

    def _fail(self, reason: str) -> None:
        self._finish(reason, clean=False)

    def _finish(self, reason: str, clean: bool) -> None:
        if self.done:
            return
        self.lifecycle.fire(RelayEvent.FINISH)
        for exchange in (self.upgraded, self.exchange):
            if exchange is None or exchange.ended is not None:
                continue
            if exchange.upgraded:
                self._report(exchange, "complete" if clean else "aborted")
            elif exchange.forwarded or exchange.answered:
                self._report(exchange, "aborted")
        self.handler.finished(reason, clean)


__all__ = [
    "MAX_PENDING",
    "RELAY_TRANSITIONS",
    "Exchange",
    "HttpRelay",
    "RelayEvent",
    "RelayHandler",
    "RelayMode",
]
