"""Tests of the webhook notifier (jumpoint/notify.py).

Most tests are synchronous: a fake C{post} records each request and returns a
Deferred the test fires, and time only passes when the test advances a
L{Clock}.  One test drives the real Agent and reactor in a subprocess
(tests/unit/notify_probe.py) against a threaded HTTP server in this process.
"""

from __future__ import annotations

import base64
import json
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from zope.interface import provider

from jumpoint import __version__
from jumpoint.notify import (
    SIGNATURE_HEADER,
    Delivery,
    Notifier,
    check_webhook_url,
    redact_url,
    signature_header,
    split_userinfo,
)
from jumpoint.secret_ref import SecretRef

URL = "https://hooks.example/x"
SECRET_URL = "https://user:pw@hooks.example/x?token=abc"
REPO = Path(__file__).resolve().parents[2]


# -- fakes --------------------------------------------------------------------


@dataclass
class Post:
    url: str
    body: bytes
    headers: dict[str, str]
    result: Deferred[int]


@dataclass
class FakeWebhook:
    """A C{post} function whose requests wait for the test to answer them."""

    posts: list[Post] = field(default_factory=list)
    cancelled: list[Post] = field(default_factory=list)

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> Deferred[int]:
        def cancel(_: Deferred[int]) -> None:
            self.cancelled.append(post)

        post = Post(url, body, headers, Deferred(cancel))
        self.posts.append(post)
        return post.result

    def events(self) -> list[str]:
        return [json.loads(p.body)["event"] for p in self.posts]

    def pending(self) -> list[Post]:
        return [p for p in self.posts if not p.result.called]


@dataclass
class Harness:
    clock: Clock
    webhook: FakeWebhook
    results: list[Delivery]
    logs: list[LogEvent]

    def notifier(self, **kwargs: Any) -> Notifier:
        return Notifier(self.clock, post=self.webhook, on_result=self.results.append, **kwargs)

    def warnings(self) -> list[str]:
        return [
            formatEvent(e)
            for e in self.logs
            if e.get("log_level") == LogLevel.warn and e.get("log_namespace") == "jumpoint.notify"
        ]


@pytest.fixture
def harness() -> Iterator[Harness]:
    logs: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        logs.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield Harness(Clock(), FakeWebhook(), [], logs)
    finally:
        globalLogPublisher.removeObserver(observe)


def refused(*args: str) -> Exception:
    return ConnectionRefusedError(*args)  # type: ignore[no-untyped-call]


def fired(d: Deferred[Any]) -> bool:
    return d.called


def start(n: int) -> dict[str, Any]:
    return {"event": f"session-start-{n}", "session": f"s{n}", "user": "alice"}


# -- URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (SECRET_URL, "https://hooks.example/x"),
        ("http://hooks.example:8080/a/b?x=1#frag", "http://hooks.example:8080/a/b"),
        ("https://:secret@hooks.example", "https://hooks.example"),
        ("https://a:b@c@[::1]:8443/p", "https://[::1]:8443/p"),
        ("https://hooks.example/x#token=abc", "https://hooks.example/x"),
        ("user:pw@hooks.example/x?token=abc", "hooks.example/x"),
        ("https://[::1/x?token=abc", "https://[::1/x"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_split_userinfo() -> None:
    assert split_userinfo(URL) == (URL, None)
    assert split_userinfo("https://us%40er:p%3Aw:x@hooks.example:8443/x?t=1") == (
        "https://hooks.example:8443/x?t=1",
        "Basic " + base64.b64encode(b"us@er:p:w:x").decode(),
    )
    assert split_userinfo("https://token@hooks.example/") == (
        "https://hooks.example/",
        "Basic " + base64.b64encode(b"token:").decode(),
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example/x",
        "http://10.0.0.5:8080/notify?token=abc",
        "HTTPS://hooks.example",
        "https://user:pw@[2001:db8::1]:443/x",
    ],
)
def test_check_webhook_url_accepts(url: str) -> None:
    assert check_webhook_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "ftp://hooks.example/x?token=abc",
            "'ftp://hooks.example/x' must start with http:// or https://",
        ),
        ("hooks.example/x?token=abc", "'hooks.example/x' must start with http:// or https://"),
        ("https:///x?token=abc", "has no host name"),
        ("https://user:pw@:443/x", "has no host name"),
        (
            "https://hooks.example/x?token=abc#frag",
            "'https://hooks.example/x' must not have a fragment",
        ),
        (
            "https://hooks.example:http/x?token=abc",
            "'https://hooks.example:http/x' is not a valid URL",
        ),
        ("https://hooks.example:0/x", "has port 0"),
        ("https://[::1/x?token=abc", "is not a valid URL"),
        ("https://hooks.example/a b?token=abc", "printable ASCII"),
        ("https://hööks.example/x?token=abc", "printable ASCII"),
    ],
)
def test_check_webhook_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="webhook URL") as info:
        check_webhook_url(url)
    assert message in str(info.value)
    assert "token" not in str(info.value)
    assert "pw" not in str(info.value)


# -- delivery -----------------------------------------------------------------


def test_body_and_headers(harness: Harness) -> None:
    notifier = harness.notifier()
    event = {
        "event": "session-start",
        "user": "alice",
        "session": "0123456789abcdef",
        "item": "db",
        "ports": [5432],
        "note": "héllo",
    }
    notifier.notify(SECRET_URL, event)

    [post] = harness.webhook.posts
    assert post.url == SECRET_URL  # the real URL is used for the request
    assert post.body == json.dumps(event).encode()
    assert json.loads(post.body) == event
    assert post.headers == {
        "Content-Type": "application/json",
        "User-Agent": f"jumpoint/{__version__}",
    }
    post.result.callback(204)
    assert harness.results == [
        Delivery("https://hooks.example/x", "session-start", True, 204, 1, None)
    ]
    # the audit row of the delivery names what it was about
    (delivery,) = harness.results
    assert (delivery.user, delivery.session, delivery.item) == ("alice", "0123456789abcdef", "db")
    assert notifier.delivered == 1
    assert (notifier.in_flight, notifier.queued) == (0, 0)
    assert harness.clock.getDelayedCalls() == []  # the timeout was cancelled


# -- signatures -------------------------------------------------------------------


def _documented_verifier() -> Any:
    """The verification snippet of docs/policy-guide.md, as a receiver would paste it."""
    text = (REPO / "docs" / "policy-guide.md").read_text(encoding="utf-8")
    start = text.index("```python\nimport hashlib")
    code = text[start + len("```python\n") : text.index("```", start + 10)]
    namespace: dict[str, Any] = {}
    exec(compile(code, "policy-guide.md", "exec"), namespace)
    return namespace["verify_jumpoint_signature"]


verify_jumpoint_signature = _documented_verifier()


def test_signature_header_is_hmac_sha256_of_timestamp_dot_body() -> None:
    header = signature_header(b"k3y", 1700000000, b'{"a":1}')
    # computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac k3y
    assert header == (
        "t=1700000000,v1=fd5a70e965043f7df6309c2c3b5ff5a8ffa99b1f5175e9a311459e73c4634d4a"
    )
    assert verify_jumpoint_signature(b"k3y", header, b'{"a":1}', now=1700000000)
    assert not verify_jumpoint_signature(b"k3y", header, b'{"a":2}', now=1700000000)
    assert not verify_jumpoint_signature(b"other", header, b'{"a":1}', now=1700000000)
    assert not verify_jumpoint_signature(b"k3y", header, b'{"a":1}', now=1700000000 + 301)
    assert not verify_jumpoint_signature(b"k3y", "garbage", b'{"a":1}', now=1700000000)


def test_signed_with_the_secret_file_read_at_each_attempt(harness: Harness, tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text("first-secret\n")
    harness.clock.advance(1_800_000_000)
    notifier = harness.notifier(retries=1, retry_delay=5)
    notifier.notify(URL, start(1), SecretRef(file=secret_file))
    [post] = harness.webhook.posts
    header = post.headers[SIGNATURE_HEADER]
    assert header.startswith("t=1800000000,v1=")
    assert verify_jumpoint_signature(b"first-secret", header, post.body, now=1_800_000_000)
    post.result.callback(500)
    secret_file.write_text("rotated\n")
    harness.clock.advance(5)
    retry = harness.webhook.posts[1]
    header = retry.headers[SIGNATURE_HEADER]
    assert header.startswith("t=1800000005,v1=")  # signed anew, with the new secret
    assert verify_jumpoint_signature(b"rotated", header, retry.body, now=1_800_000_005)
    assert not verify_jumpoint_signature(b"first-secret", header, retry.body, now=1_800_000_005)


def test_unreadable_secret_sends_nothing_unsigned(harness: Harness, tmp_path: Path) -> None:
    notifier = harness.notifier(retries=0)
    notifier.notify(URL, start(1), SecretRef(file=tmp_path / "missing.secret"))
    notifier.notify(URL, start(2), SecretRef(env="JUMPOINT_TEST_UNSET_SECRET"))
    assert harness.webhook.posts == []
    assert [(d.ok, d.attempts) for d in harness.results] == [(False, 1), (False, 1)]
    assert harness.results[0].error is not None
    assert "webhook secret is not available" in harness.results[0].error
    assert "JUMPOINT_TEST_UNSET_SECRET is not set" in (harness.results[1].error or "")


def test_unsigned_without_a_secret(harness: Harness) -> None:
    harness.notifier().notify(URL, start(1))
    assert SIGNATURE_HEADER not in harness.webhook.posts[0].headers


def test_fifo_order(harness: Harness) -> None:
    notifier = harness.notifier(max_in_flight=1)
    for n in range(4):
        notifier.notify(URL, start(n))
    assert harness.webhook.events() == ["session-start-0"]
    for expected in range(4):
        harness.webhook.pending()[0].result.callback(200)
        assert len(harness.webhook.posts) == min(expected + 2, 4)
    assert harness.webhook.events() == [f"session-start-{n}" for n in range(4)]
    assert [d.event for d in harness.results] == [f"session-start-{n}" for n in range(4)]


def test_concurrency_cap(harness: Harness) -> None:
    notifier = harness.notifier()  # max_in_flight defaults to 4
    for n in range(7):
        notifier.notify(URL, start(n))
    assert len(harness.webhook.posts) == 4
    assert (notifier.in_flight, notifier.queued) == (4, 3)

    harness.webhook.posts[2].result.callback(200)
    assert harness.webhook.events()[4:] == ["session-start-4"]
    assert (notifier.in_flight, notifier.queued) == (4, 2)

    for post in harness.webhook.pending():
        post.result.callback(200)
    # the two still queued started as slots freed
    assert len(harness.webhook.posts) == 7
    for post in harness.webhook.pending():
        post.result.callback(200)
    assert (notifier.in_flight, notifier.queued) == (0, 0)
    assert notifier.delivered == 7


def test_synchronous_results_do_not_recurse(harness: Harness) -> None:
    """A post that answers at once drains a long queue without deep recursion."""
    answered: list[str] = []

    def post(url: str, body: bytes, headers: dict[str, str]) -> Deferred[int]:
        answered.append(json.loads(body)["event"])
        return succeed(200)

    notifier = Notifier(harness.clock, post=post, queue_limit=5000, max_in_flight=1)
    for n in range(3000):
        notifier.notify(URL, start(n))
    assert len(answered) == 3000
    assert notifier.delivered == 3000


def test_queue_limit_drops(harness: Harness) -> None:
    notifier = harness.notifier(max_in_flight=1, queue_limit=2)
    for n in range(5):
        notifier.notify(SECRET_URL, start(n))
    assert len(harness.webhook.posts) == 1
    assert (notifier.in_flight, notifier.queued, notifier.dropped) == (1, 2, 2)
    assert harness.results == [
        Delivery(URL, f"session-start-{n}", False, None, 0, "the queue is full (2 waiting)")
        for n in (3, 4)
    ]
    warnings = harness.warnings()
    assert len(warnings) == 2
    assert "session-start-3" in warnings[0] and "dropped" in warnings[0]
    assert all("token" not in w and "pw" not in w for w in warnings)

    # the queue has room again once the post in flight finishes
    harness.webhook.posts[0].result.callback(200)
    notifier.notify(URL, start(5))
    assert notifier.queued == 2
    assert notifier.dropped == 2


def test_retries_with_backoff_then_success(harness: Harness) -> None:
    notifier = harness.notifier(retries=3, retry_delay=2.0)
    notifier.notify(URL, start(0))
    harness.webhook.posts[0].result.callback(503)
    assert len(harness.webhook.posts) == 1
    harness.clock.advance(1.9)
    assert len(harness.webhook.posts) == 1
    harness.clock.advance(0.1)
    assert len(harness.webhook.posts) == 2

    harness.webhook.posts[1].result.errback(refused())
    harness.clock.advance(3.9)
    assert len(harness.webhook.posts) == 2
    harness.clock.advance(0.1)
    assert len(harness.webhook.posts) == 3
    assert notifier.in_flight == 1  # the delivery kept its slot while waiting

    harness.webhook.posts[2].result.callback(201)
    assert harness.results == [Delivery(URL, "session-start-0", True, 201, 3, None)]
    assert harness.warnings() == []
    assert harness.clock.getDelayedCalls() == []


def test_final_failure_reported_and_logged(harness: Harness) -> None:
    notifier = harness.notifier(retries=2, retry_delay=1.0)
    event = {"event": "session-end", "secret_field": "do-not-log"}
    notifier.notify(SECRET_URL, event)
    harness.webhook.posts[0].result.callback(500)
    harness.clock.advance(1.0)
    harness.webhook.posts[1].result.callback(500)
    harness.clock.advance(2.0)
    assert len(harness.webhook.posts) == 3
    harness.webhook.posts[2].result.errback(refused("nobody home"))
    harness.clock.advance(100)
    assert len(harness.webhook.posts) == 3

    assert harness.results == [
        Delivery(
            "https://hooks.example/x",
            "session-end",
            ok=False,
            status=None,
            attempts=3,
            error="Connection was refused by other side: nobody home.",
        )
    ]
    assert (notifier.failed, notifier.in_flight) == (1, 0)
    [warning] = harness.warnings()
    assert "https://hooks.example/x" in warning
    assert "session-end" in warning
    assert "3 attempt(s)" in warning
    assert "refused" in warning
    for event_log in harness.logs:
        text = repr(event_log)
        assert "token=abc" not in text
        assert "pw@" not in text
        assert "do-not-log" not in text


def test_last_status_reported(harness: Harness) -> None:
    harness.notifier(retries=1, retry_delay=0.5).notify(URL, start(0))
    harness.webhook.posts[0].result.callback(500)
    harness.clock.advance(0.5)
    harness.webhook.posts[1].result.callback(404)
    assert harness.results == [Delivery(URL, "session-start-0", False, 404, 2, "HTTP status 404")]


def test_timeout_cancels_and_retries(harness: Harness) -> None:
    notifier = harness.notifier(timeout=5.0, retries=1, retry_delay=1.0)
    notifier.notify(URL, start(0))
    harness.clock.advance(4.9)
    assert harness.webhook.cancelled == []
    harness.clock.advance(0.1)
    assert harness.webhook.cancelled == [harness.webhook.posts[0]]
    harness.clock.advance(1.0)
    assert len(harness.webhook.posts) == 2
    harness.clock.advance(5.0)
    assert harness.results == [
        Delivery(URL, "session-start-0", False, None, 2, "no response within 5 seconds")
    ]
    assert notifier.in_flight == 0


def test_notify_never_raises(harness: Harness) -> None:
    def broken_post(url: str, body: bytes, headers: dict[str, str]) -> Deferred[int]:
        raise UnicodeEncodeError("ascii", url, 0, 1, "not ascii")

    notifier = Notifier(
        harness.clock, post=broken_post, retries=0, on_result=harness.results.append
    )
    notifier.notify("https://hööks.example/", {"event": "e1"})
    notifier.notify(URL, {"event": "e2", "when": object()})  # not JSON-able
    assert [(d.event, d.ok, d.attempts) for d in harness.results] == [
        ("e1", False, 1),
        ("e2", False, 0),
    ]
    assert "cannot be encoded as JSON" in (harness.results[1].error or "")
    assert notifier.dropped == 1

    def bad_callback(delivery: Delivery) -> None:
        raise RuntimeError("audit log full")

    other = Notifier(harness.clock, post=lambda u, b, h: fail(OSError("x")), retries=0)
    other._on_result = bad_callback
    other.notify(URL, {"event": "e3"})
    assert other.failed == 1
    assert any(e.get("log_failure") is not None for e in harness.logs)


def test_event_without_name(harness: Harness) -> None:
    harness.notifier().notify(URL, {"session": "s1"})
    harness.webhook.posts[0].result.callback(200)
    assert harness.results[0].event is None


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        Notifier(Clock(), max_in_flight=0, post=FakeWebhook())
    with pytest.raises(ValueError):
        Notifier(Clock(), timeout=0, post=FakeWebhook())


# -- stopping -----------------------------------------------------------------


def test_stop_waits_for_in_flight_and_queued(harness: Harness) -> None:
    notifier = harness.notifier(max_in_flight=1, retries=3)
    notifier.notify(URL, start(0))
    notifier.notify(URL, start(1))
    stopped = notifier.stop()
    assert not fired(stopped)

    notifier.notify(URL, start(2))  # refused: stopping
    assert harness.results[-1] == Delivery(
        URL, "session-start-2", False, None, 0, "the notifier is stopped"
    )

    harness.webhook.posts[0].result.callback(500)  # no retry while stopping
    assert harness.results[-1] == Delivery(URL, "session-start-0", False, 500, 1, "HTTP status 500")
    assert not fired(stopped)
    harness.webhook.posts[1].result.callback(200)  # the queued one was still sent
    assert fired(stopped)
    assert harness.clock.getDelayedCalls() == []
    assert notifier.stop().called


def test_stop_ends_retry_waits(harness: Harness) -> None:
    notifier = harness.notifier(retries=3, retry_delay=2.0)
    notifier.notify(URL, start(0))
    harness.webhook.posts[0].result.callback(502)
    stopped = notifier.stop()
    assert fired(stopped)
    assert harness.results == [Delivery(URL, "session-start-0", False, 502, 1, "HTTP status 502")]
    harness.clock.advance(60)
    assert len(harness.webhook.posts) == 1


def test_stop_is_bounded_by_the_timeout(harness: Harness) -> None:
    notifier = harness.notifier(timeout=10.0, max_in_flight=1)
    notifier.notify(URL, start(0))
    harness.clock.advance(9.0)  # the attempt's own timeout is 1 s away
    notifier.notify(URL, start(1))
    stopped = notifier.stop()
    harness.clock.advance(1.0)  # first attempt times out, no retry; second starts
    assert len(harness.webhook.posts) == 2
    assert not fired(stopped)
    harness.clock.advance(8.9)
    assert not fired(stopped)
    harness.clock.advance(0.1)  # the stop deadline: cancel what is left
    assert fired(stopped)
    assert [d.error for d in harness.results] == [
        "no response within 10 seconds",
        "cancelled: the notifier was stopped",
    ]
    assert harness.clock.getDelayedCalls() == []
    assert harness.webhook.cancelled == harness.webhook.posts


# -- the real Agent ---------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    requests: queue.Queue[tuple[str, dict[str, str], bytes]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.requests.put((self.path, dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def run_probe(url: str, event: dict[str, Any], *extra: str) -> tuple[dict[str, Any], int]:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.unit.notify_probe", url, json.dumps(event), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    delivery_line, pending_line = completed.stdout.strip().splitlines()[-2:]
    return json.loads(delivery_line), json.loads(pending_line)["pending_calls"]


def test_real_agent_against_http_server() -> None:
    class Handler(_Recorder):
        requests = queue.Queue()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # bound but not listening: connections are refused, and the port stays ours
    closed_port = socket.socket()
    closed_port.bind(("127.0.0.1", 0))
    try:
        port = server.server_address[1]
        event = {"event": "session-start", "user": "alice", "item": "db1", "n": 1}
        delivery, pending = run_probe(f"http://u:p%20w@127.0.0.1:{port}/hook?token=abc", event)
        assert delivery == {
            "url": f"http://127.0.0.1:{port}/hook",
            "event": "session-start",
            "ok": True,
            "status": 204,
            "attempts": 1,
            "error": None,
            "user": "alice",
            "session": None,
            "item": "db1",
        }
        assert pending == 0
        path, headers, body = Handler.requests.get(timeout=10)
        assert path == "/hook?token=abc"
        assert body == json.dumps(event).encode()
        assert headers["Content-Type"] == "application/json"
        assert headers["User-Agent"] == f"jumpoint/{__version__}"
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"u:p w").decode()
        assert Handler.requests.empty()

        dead = f"http://127.0.0.1:{closed_port.getsockname()[1]}/hook"
        delivery, pending = run_probe(dead, event, "--retries", "1", "--retry-delay", "0.05")
        assert delivery["ok"] is False
        assert delivery["attempts"] == 2
        assert delivery["status"] is None
        assert "refused" in delivery["error"].lower()
        assert pending == 0
    finally:
        closed_port.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_real_agent_sends_a_signature_the_documented_snippet_accepts(tmp_path: Path) -> None:
    class Handler(_Recorder):
        requests = queue.Queue()

    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text("s3cret-for-hooks\n")
    secret_file.chmod(0o600)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        event = {"event": "session_start", "user": "alice", "item": "db1"}
        delivery, _ = run_probe(url, event, "--secret-file", str(secret_file))
        assert delivery["ok"] is True
        _, headers, body = Handler.requests.get(timeout=10)
        header = headers[SIGNATURE_HEADER]
        assert verify_jumpoint_signature(b"s3cret-for-hooks", header, body)
        assert not verify_jumpoint_signature(b"s3cret-for-hooks", header, body + b" ")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
