"""Webhook notifications of jump sessions (a jump policy's C{notify} URLs).

L{Notifier.notify} hands one event (a JSON-able dict) to an HTTP(S) webhook
without ever blocking or raising into the caller: the event is POSTed as a
JSON body by at most C{max_in_flight} concurrent deliveries; further events
wait in a bounded FIFO queue and are dropped (counted and logged) when it is
full.  A delivery that fails -- a status other than 2xx, no response within
the timeout, a connection error -- is retried with exponential backoff; its
final outcome is handed to the C{on_result} callback as a L{Delivery} (the
daemon writes these to its audit log).

When the jump policy names a secret (C{secret_file} or C{secret_env}), each
attempt is signed as payment providers do: the header
C{X-Jumpoint-Signature: t=TIMESTAMP,v1=HEX} carries the Unix time of the
attempt and the HMAC-SHA256, keyed with the secret, of C{TIMESTAMP.BODY}
(L{signature_header}); a receiver recomputes it and rejects stale timestamps.
The secret is read at each attempt (a rotated file takes effect at once); if
it cannot be read, the attempt fails and nothing is sent unsigned.

A webhook URL may carry a secret (userinfo, a token in the query string), so
only L{redact_url}'s scheme, host, port and path ever reach a log or a
L{Delivery}; bodies are never logged.

The default transport is Twisted's L{Agent} with a connection pool; HTTPS is
verified against the system trust store (L{BrowserLikePolicyForHTTPS}).
Tests inject a C{post} function instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit, urlunsplit

from twisted.internet import defer
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from jumpoint import __version__
from jumpoint.secret_ref import SecretRef, SecretUnavailable

PostFunction = Callable[[str, bytes, dict[str, str]], "Deferred[int]"]
"""POST C{body} with C{headers} to a URL; fires with the HTTP status code."""

USER_AGENT = f"jumpoint/{__version__}"
SIGNATURE_HEADER = "X-Jumpoint-Signature"
RESPONSE_BODY_LIMIT = 64 * 1024

log = Logger()


# -- URLs -----------------------------------------------------------------------


def redact_url(url: str) -> str:
    """C{url} with only its scheme, host, port and path: safe for logs.

    Userinfo, query string and fragment are removed; they may hold secrets.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.netloc:
        # Not an absolute URL: keep what precedes "?" or "#", minus anything
        # up to an "@" (it may be "user:password@").
        head = url.split("?", 1)[0].split("#", 1)[0]
        return head.rpartition("@")[2]
    host_port = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host_port}{parts.path}"


def check_webhook_url(url: str) -> str:
    """Validate a configured webhook URL and return it; raise L{ValueError} if unusable."""
    shown = repr(redact_url(url))
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(
            f"webhook URL {shown} may only contain printable ASCII characters "
            "(percent-encode the rest, use the punycode form of the host name)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"webhook URL {shown} is not a valid URL: {e}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"webhook URL {shown} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"webhook URL {shown} has no host name")
    if port == 0:
        raise ValueError(f"webhook URL {shown} has port 0")
    if "#" in url:
        raise ValueError(f"webhook URL {shown} must not have a fragment (#...)")
    return url


def signature_header(secret: bytes, timestamp: int, body: bytes) -> str:
    """The value of C{X-Jumpoint-Signature}: C{t=TIMESTAMP,v1=HMAC-SHA256(TIMESTAMP.BODY)}."""
    signed = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret, signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


# -- the default transport: Twisted's Agent ---------------------------------------


def split_userinfo(url: str) -> tuple[str, str | None]:
    """Move C{user:password@} out of C{url} into a Basic C{Authorization} value.

    Twisted's L{Agent} does not accept userinfo in a URL; like curl, a
    webhook URL's userinfo is sent as HTTP Basic authentication.
    """
    parts = urlsplit(url)
    userinfo, at, host_port = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    credentials = f"{unquote(user)}:{unquote(password)}".encode()
    bare = urlunsplit(parts._replace(netloc=host_port))
    return bare, "Basic " + base64.b64encode(credentials).decode("ascii")


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body that is already in memory."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _DiscardBody(Protocol):
    """Reads and throws away a response body; stops reading past a limit."""

    def __init__(self, limit: int) -> None:
        self.finished: Deferred[None] = Deferred(lambda _: self.abort())
        """Fires when the body has ended; cancelling it closes the connection."""
        self.limit = limit
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        if self.received > self.limit:
            return
        self.received += len(data)
        if self.received > self.limit:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The status line has arrived; how the body ended does not matter.
        if not self.finished.called:
            self.finished.callback(None)


class AgentPost:
    """The default L{PostFunction}: one L{Agent} over a connection pool."""

    def __init__(
        self,
        reactor: Any,
        pool: HTTPConnectionPool,
        connect_timeout: float,
        body_limit: int = RESPONSE_BODY_LIMIT,
    ) -> None:
        self._agent = Agent(  # type: ignore[no-untyped-call]
            reactor,
            contextFactory=BrowserLikePolicyForHTTPS(),  # type: ignore[no-untyped-call]
            connectTimeout=connect_timeout,
            pool=pool,
        )
        self._body_limit = body_limit

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> Deferred[int]:
        url, authorization = split_userinfo(url)
        headers = dict(headers)
        if authorization is not None:
            headers["Authorization"] = authorization
        request_headers = Headers(
            {k.encode("ascii"): [v.encode("ascii")] for k, v in headers.items()}
        )
        request = self._agent.request(
            b"POST", url.encode("ascii"), request_headers, _BytesProducer(body)
        )
        return request.addCallback(self._drain)

    def _drain(self, response: IResponse) -> Deferred[int]:
        reader = _DiscardBody(self._body_limit)
        response.deliverBody(reader)  # type: ignore[no-untyped-call]
        code: int = response.code
        return reader.finished.addCallback(lambda _: code)


# -- the notifier -------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """The final outcome of one notification, for the audit log."""

    url: str
    """The webhook URL, redacted (L{redact_url})."""
    event: str | None
    """The event's C{"event"} field."""
    ok: bool
    status: int | None
    """The last HTTP status received, if any."""
    attempts: int
    """POSTs made; 0 if the notification was dropped before any."""
    error: str | None
    """Why the last attempt failed (or why it was dropped)."""
    user: str | None = field(default=None, compare=False)
    """The event's C{"user"}, C{"session"} and C{"item"}, for the audit row."""
    session: str | None = field(default=None, compare=False)
    item: str | None = field(default=None, compare=False)


@dataclass(eq=False)
class _Job:
    url: str
    shown_url: str
    event: str | None
    body: bytes
    subject: dict[str, str | None]
    secret: SecretRef | None = None
    attempts: int = 0
    status: int | None = None
    error: str | None = None
    attempt: Deferred[None] | None = None
    retry_call: IDelayedCall | None = None


def _event_name(event: Any) -> str | None:
    name = event.get("event") if isinstance(event, dict) else None
    return None if name is None else str(name)


def _subject(event: Any) -> dict[str, str | None]:
    """The user, session and item an event is about (the audit row's columns)."""
    out: dict[str, str | None] = {}
    for key in ("user", "session", "item"):
        value = event.get(key) if isinstance(event, dict) else None
        out[key] = value if isinstance(value, str) else None
    return out


class Notifier:
    """Delivers webhook notifications in the background (see the module docstring).

    A delivery holds one of the C{max_in_flight} slots from its first attempt
    until its final outcome, retry delays included.  C{timeout} bounds each
    attempt (connect and response) and the wait in L{stop}.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        timeout: float = 10.0,
        queue_limit: int = 1000,
        retries: int = 3,
        retry_delay: float = 2.0,
        max_in_flight: int = 4,
        post: PostFunction | None = None,
        on_result: Callable[[Delivery], None] | None = None,
    ) -> None:
        if timeout <= 0 or retry_delay < 0 or retries < 0 or queue_limit < 0 or max_in_flight < 1:
            raise ValueError("Notifier: invalid timeout, retries, queue or concurrency limit")
        self._reactor = reactor
        self._timeout = timeout
        self._queue_limit = queue_limit
        self._retries = retries
        self._retry_delay = retry_delay
        self._max_in_flight = max_in_flight
        self._on_result = on_result
        self._pool: HTTPConnectionPool | None = None
        if post is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
            self._pool.maxPersistentPerHost = max_in_flight
            self._pool.cachedConnectionTimeout = 30
            post = AgentPost(reactor, self._pool, connect_timeout=timeout)
        self._post: PostFunction = post
        self._queue: deque[_Job] = deque()
        self._active: set[_Job] = set()
        self._pumping = False
        self._stopping = False
        self._stopped = False
        self._stop_deadline: IDelayedCall | None = None
        self._stop_waiters: list[Deferred[None]] = []
        self.dropped = 0
        """Notifications never sent: queue full, not encodable, or after L{stop}."""
        self.delivered = 0
        self.failed = 0
        """Notifications sent whose last attempt failed."""

    @property
    def in_flight(self) -> int:
        return len(self._active)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- the caller's side -------------------------------------------------------

    def notify(self, url: str, event: dict[str, Any], secret: SecretRef | None = None) -> None:
        """POST C{event} as JSON to C{url}, in the background, signed with C{secret} if given.

        Never raises.
        """
        try:
            self._notify(url, event, secret)
        except Exception:
            log.failure(
                "webhook notification {event} could not be queued", event=_event_name(event)
            )

    def stop(self) -> Deferred[None]:
        """Refuse new notifications, let the pending ones finish, close the connections.

        Queued notifications are still sent, but failures are no longer
        retried; whatever is unfinished after C{timeout} seconds is cancelled.
        The returned L{Deferred} never fails.
        """
        waiter: Deferred[None] = Deferred()
        if self._stopped:
            waiter.callback(None)
            return waiter
        self._stop_waiters.append(waiter)
        if not self._stopping:
            self._stopping = True
            self._stop_deadline = self._reactor.callLater(self._timeout, self._give_up)
            for job in list(self._active):
                if job.retry_call is not None and job.retry_call.active():
                    job.retry_call.cancel()
                    job.retry_call = None
                    self._finish(job, ok=False)
            self._check_stopped()
        return waiter

    # -- queueing ----------------------------------------------------------------

    def _notify(self, url: str, event: dict[str, Any], secret: SecretRef | None) -> None:
        name = _event_name(event)
        shown = redact_url(url)
        subject = _subject(event)
        if self._stopping:
            self._drop(shown, name, "the notifier is stopped", subject)
            return
        try:
            body = json.dumps(event).encode("utf-8")
        except (TypeError, ValueError) as e:
            self._drop(shown, name, f"the event cannot be encoded as JSON: {e}", subject)
            return
        job = _Job(url=url, shown_url=shown, event=name, body=body, subject=subject, secret=secret)
        if len(self._active) < self._max_in_flight and not self._queue:
            self._start(job)
        elif len(self._queue) < self._queue_limit:
            self._queue.append(job)
        else:
            self._drop(shown, name, f"the queue is full ({self._queue_limit} waiting)", subject)

    def _drop(
        self,
        shown_url: str,
        event: str | None,
        reason: str,
        subject: dict[str, str | None],
    ) -> None:
        self.dropped += 1
        log.warn(
            "webhook {url}: notification {event} dropped: {reason}",
            url=shown_url,
            event=event,
            reason=reason,
        )
        self._report(
            Delivery(shown_url, event, ok=False, status=None, attempts=0, error=reason, **subject)
        )

    def _pump(self) -> None:
        """Start queued jobs while there are free slots (not re-entrant)."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._queue and len(self._active) < self._max_in_flight:
                self._start(self._queue.popleft())
        finally:
            self._pumping = False

    # -- one delivery ------------------------------------------------------------

    def _start(self, job: _Job) -> None:
        self._active.add(job)
        self._attempt(job)

    def _attempt(self, job: _Job) -> None:
        job.retry_call = None
        job.attempts += 1
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        posted: Deferred[int]
        try:
            if job.secret is not None:
                timestamp = int(self._reactor.seconds())
                headers[SIGNATURE_HEADER] = signature_header(job.secret.read(), timestamp, job.body)
        except SecretUnavailable as error:
            posted = defer.fail(SecretUnavailable(f"the webhook secret is not available: {error}"))
        else:
            posted = maybeDeferred(self._post, job.url, job.body, headers)
        posted.addTimeout(self._timeout, self._reactor)
        attempt = posted.addBoth(self._attempt_done, job)
        if not attempt.called:
            job.attempt = attempt
        attempt.addErrback(lambda f: log.failure("webhook notifier: internal error", failure=f))

    def _attempt_done(self, result: int | Failure, job: _Job) -> None:
        job.attempt = None
        if isinstance(result, Failure):
            job.status, job.error = None, self._describe(result)
        else:
            job.status = result
            if 200 <= result < 300:
                job.error = None
                self._finish(job, ok=True)
                return
            job.error = f"HTTP status {result}"
        if job.attempts > self._retries or self._stopping:
            self._finish(job, ok=False)
            return
        delay = self._retry_delay * 2 ** (job.attempts - 1)
        log.debug(
            "webhook {url}: notification {event} attempt {attempt} failed ({reason}); "
            "retrying in {delay} s",
            url=job.shown_url,
            event=job.event,
            attempt=job.attempts,
            reason=job.error,
            delay=delay,
        )
        job.retry_call = self._reactor.callLater(delay, self._attempt, job)

    def _describe(self, failure: Failure) -> str:
        value = failure.value
        if isinstance(value, defer.TimeoutError):
            return f"no response within {self._timeout:g} seconds"
        if isinstance(value, defer.CancelledError):
            return "cancelled: the notifier was stopped"
        if isinstance(value, ResponseFailed) and value.reasons:
            value = value.reasons[0].value
        return str(value) or type(value).__name__

    def _finish(self, job: _Job, ok: bool) -> None:
        self._active.discard(job)
        if ok:
            self.delivered += 1
            log.debug(
                "webhook {url}: delivered notification {event} (HTTP {status})",
                url=job.shown_url,
                event=job.event,
                status=job.status,
            )
        else:
            self.failed += 1
            log.warn(
                "webhook {url}: notification {event} failed after {attempts} attempt(s): {reason}",
                url=job.shown_url,
                event=job.event,
                attempts=job.attempts,
                reason=job.error,
            )
        self._report(
            Delivery(
                job.shown_url, job.event, ok, job.status, job.attempts, job.error, **job.subject
            )
        )
        self._pump()
        self._check_stopped()

    def _report(self, delivery: Delivery) -> None:
        if self._on_result is None:
            return
        try:
            self._on_result(delivery)
        except Exception:
            log.failure("webhook notifier: the result callback failed")

    # -- stopping ----------------------------------------------------------------

    def _give_up(self) -> None:
        """The stop deadline passed: abandon the queue, cancel what is in flight."""
        self._stop_deadline = None
        while self._queue:
            job = self._queue.popleft()
            reason = "the notifier stopped before it was sent"
            self._drop(job.shown_url, job.event, reason, job.subject)
        for job in list(self._active):
            if job.attempt is not None:
                job.attempt.cancel()
        self._check_stopped()

    def _check_stopped(self) -> None:
        if not self._stopping or self._stopped or self._active or self._queue:
            return
        self._stopped = True
        if self._stop_deadline is not None and self._stop_deadline.active():
            self._stop_deadline.cancel()
        self._stop_deadline = None
        closed: Deferred[None] = succeed(None)
        if self._pool is not None:
            closed = self._pool.closeCachedConnections()  # type: ignore[no-untyped-call]
        closed.addErrback(
            lambda f: log.failure("webhook notifier: closing connections failed", failure=f)
        )
        closed.addCallback(lambda _: self._release_waiters())

    def _release_waiters(self) -> None:
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)
