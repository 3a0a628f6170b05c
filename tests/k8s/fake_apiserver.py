"""A fake Kubernetes API server for tests: real HTTPS/JSON that real kubectl 1.27-1.33 accepts.

Threaded (C{ThreadingHTTPServer} + C{ssl}, HTTP/1.1 keep-alive, ALPN C{http/1.1} only).

Serves legacy discovery, pods (list, get, Table, watch), an in-memory ConfigMap store for
C{kubectl apply}, exec over WebSocket C{v5.channel.k8s.io} and over SPDY/3.1
(C{v4.channel.k8s.io}), and port-forward over SPDY/3.1, raw or tunnelled in WebSocket
(C{SPDY/3.1+portforward.k8s.io}).  Every forwarded port is an in-process echo.

Fake commands for exec: C{cat} echoes stdin to stdout until stdin closes; C{false} exits 1;
C{exit N} (also C{sh -c 'exit N'}) exits N; C{echo WORDS} prints the words; anything else exits 0.

    with FakeApiServer(cert, key, token="sa-token") as server:
        server.port, server.requests

    python -m tests.k8s.fake_apiserver --cert C --key K --token T
    -> {"event":"listening","port":N}
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import json
import shlex
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.k8s.spdy_dictionary import SPDY3_DICTIONARY

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TABLE_ACCEPT = "as=Table"
CREATED = "2024-01-01T00:00:00Z"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: list[tuple[str, str]]
    body_size: int
    status: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """The first value of header C{name} (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def _status(code: int, reason: str, message: str, **extra: Any) -> dict[str, Any]:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    body.update(extra)
    return body


def _pod(name: str, namespace: str, rv: str = "10") -> dict[str, Any]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": hashlib.md5(f"{namespace}/{name}".encode()).hexdigest(),
            "resourceVersion": rv,
            "creationTimestamp": CREATED,
            "labels": {"app": "demo"},
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "stdin": True,
                    "ports": [{"containerPort": 8080}],
                }
            ]
        },
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "containerStatuses": [
                {"name": "main", "ready": True, "restartCount": 0, "image": "busybox"}
            ],
        },
    }


def _resource(
    name: str, kind: str, verbs: list[str], namespaced: bool = True, short: list[str] | None = None
) -> dict[str, Any]:
    singular = "" if "/" in name else kind.lower()
    entry: dict[str, Any] = {
        "name": name,
        "singularName": singular,
        "namespaced": namespaced,
        "kind": kind,
        "verbs": verbs,
    }
    if short:
        entry["shortNames"] = short
    return entry


CRUD = ["create", "delete", "get", "list", "patch", "update", "watch"]
CORE_RESOURCES = [
    _resource("pods", "Pod", CRUD, short=["po"]),
    _resource("pods/exec", "PodExecOptions", ["create", "get"]),
    _resource("pods/log", "Pod", ["get"]),
    _resource("pods/portforward", "PodPortForwardOptions", ["create", "get"]),
    _resource("pods/attach", "PodAttachOptions", ["create", "get"]),
    _resource("configmaps", "ConfigMap", CRUD, short=["cm"]),
    _resource("secrets", "Secret", CRUD),
    _resource("namespaces", "Namespace", CRUD, namespaced=False, short=["ns"]),
    _resource("services", "Service", CRUD, short=["svc"]),
]
APPS_RESOURCES = [_resource("deployments", "Deployment", CRUD, short=["deploy"])]


# ---------------------------------------------------------------------------------------------
# WebSocket (RFC 6455), server side


class WebSocket:
    """Minimal RFC 6455 server framing over a buffered reader and a socket."""

    def __init__(self, rfile: Any, sock: socket.socket) -> None:
        self.rfile = rfile
        self.sock = sock
        self.lock = threading.Lock()
        self.closed = False

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.rfile.read(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def send(self, payload: bytes, opcode: int = 2) -> None:
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([n])
        elif n < 65536:
            head += bytes([126]) + struct.pack("!H", n)
        else:
            head += bytes([127]) + struct.pack("!Q", n)
        with self.lock:
            if not self.closed:
                self.sock.sendall(head + payload)

    def close(self, code: int = 1000) -> None:
        with contextlib.suppress(OSError):
            self.send(struct.pack("!H", code), opcode=8)
        self.closed = True

    def receive(self) -> bytes | None:
        """The next data message (fragments joined); None when the peer closed."""
        message = b""
        while True:
            try:
                b0, b1 = self._read_exact(2)
            except (EOFError, OSError):
                return None
            opcode = b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read_exact(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read_exact(8))
            mask = self._read_exact(4) if b1 & 0x80 else b"\0\0\0\0"
            raw = self._read_exact(n)
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(raw))
            if opcode == 8:
                self.close()
                return None
            if opcode == 9:
                self.send(payload, opcode=10)
                continue
            if opcode == 10:
                continue
            message += payload
            if b0 & 0x80:
                return message


class WebSocketByteStream:
    """A byte stream carried in WebSocket binary messages (the SPDY-over-WebSocket tunnel)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.buffer = b""

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            message = self.ws.receive()
            if message is None:
                raise EOFError
            self.buffer += message
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def write(self, data: bytes) -> None:
        self.ws.send(data)


class SocketByteStream:
    def __init__(self, rfile: Any, sock: socket.socket) -> None:
        self.rfile = rfile
        self.sock = sock
        self.lock = threading.Lock()

    def read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.rfile.read(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def write(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)


# ---------------------------------------------------------------------------------------------
# SPDY/3.1, server side

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
)
FLAG_FIN = 0x01


class SpdySession:
    """Frames in and out of one SPDY/3.1 connection (one zlib context per direction)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.inflate = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        self.deflate = zlib.compressobj(zdict=SPDY3_DICTIONARY)
        self.lock = threading.Lock()

    def _decode_headers(self, block: bytes) -> dict[str, str]:
        raw = self.inflate.decompress(block)
        (count,) = struct.unpack_from("!I", raw, 0)
        offset = 4
        headers = {}
        for _ in range(count):
            (n,) = struct.unpack_from("!I", raw, offset)
            name = raw[offset + 4 : offset + 4 + n].decode()
            offset += 4 + n
            (n,) = struct.unpack_from("!I", raw, offset)
            value = raw[offset + 4 : offset + 4 + n].decode()
            offset += 4 + n
            headers[name.lower()] = value
        return headers

    def _encode_headers(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack("!I", len(headers))
        for name, value in headers.items():
            raw += struct.pack("!I", len(name)) + name.encode()
            raw += struct.pack("!I", len(value)) + value.encode()
        with self.lock:
            return self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def read_frame(self) -> tuple[str, Any]:
        """('syn', (sid, headers, fin)), ('data', (sid, data, fin)), ('ping', id), ('goaway', None),
        ('rst', sid) or ('other', type)."""
        head = self.stream.read_exact(8)
        length = int.from_bytes(head[5:8], "big")
        flags = head[4]
        body = self.stream.read_exact(length) if length else b""
        if not head[0] & 0x80:
            sid = struct.unpack("!I", head[:4])[0] & 0x7FFFFFFF
            return "data", (sid, body, bool(flags & FLAG_FIN))
        ftype = struct.unpack("!H", head[2:4])[0]
        if ftype == SYN_STREAM:
            sid = struct.unpack("!I", body[:4])[0] & 0x7FFFFFFF
            return "syn", (sid, self._decode_headers(body[10:]), bool(flags & FLAG_FIN))
        if ftype == HEADERS:
            self._decode_headers(body[4:])  # keep the zlib context in step
            return "other", ftype
        if ftype == PING:
            return "ping", body
        if ftype == GOAWAY:
            return "goaway", None
        if ftype == RST_STREAM:
            return "rst", struct.unpack("!I", body[:4])[0] & 0x7FFFFFFF
        return "other", ftype

    def _control(self, ftype: int, flags: int, body: bytes) -> None:
        head = struct.pack("!HH", 0x8003, ftype) + bytes([flags]) + len(body).to_bytes(3, "big")
        self.stream.write(head + body)

    def syn_reply(self, sid: int, headers: dict[str, str] | None = None) -> None:
        block = self._encode_headers(headers or {})
        self._control(SYN_REPLY, 0, struct.pack("!I", sid) + block)

    def ping(self, body: bytes) -> None:
        self._control(PING, 0, body)

    def goaway(self) -> None:
        self._control(GOAWAY, 0, struct.pack("!II", 0, 0))

    def data(self, sid: int, data: bytes, fin: bool = False) -> None:
        flags = FLAG_FIN if fin else 0
        self.stream.write(
            struct.pack("!I", sid) + bytes([flags]) + len(data).to_bytes(3, "big") + data
        )


# ---------------------------------------------------------------------------------------------
# Fake commands


def _exit_code(command: list[str]) -> int | None:
    """The exit status of a fake non-interactive command, or None for C{cat}."""
    if command[:1] == ["cat"]:
        return None
    if command[:2] == ["sh", "-c"] and len(command) > 2:
        command = shlex.split(command[2])
    if command[:1] == ["false"]:
        return 1
    if command[:1] == ["exit"]:
        return int(command[1]) if len(command) > 1 else 0
    return 0


def _command_output(command: list[str]) -> bytes:
    if command[:1] == ["echo"]:
        return (" ".join(command[1:]) + "\n").encode()
    return b""


def _exit_status(code: int) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


# ---------------------------------------------------------------------------------------------
# HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing

    def _dispatch(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = RecordedRequest(
            self.command, url.path, parse_qs(url.query), list(self.headers.items()), len(body)
        )
        with fake.lock:
            fake.requests.append(record)
        self.record = record
        self.query = {k: v[-1] for k, v in record.query.items()}
        if self.headers.get("Authorization") != f"Bearer {fake.token}":
            self._json(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        try:
            self._route(url.path.rstrip("/") or "/", body)
        except (ConnectionError, EOFError, ssl.SSLError, OSError):
            self.close_connection = True

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _dispatch

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.record.status = code
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj: Any, content_type: str = "application/json") -> None:
        self._send(code, json.dumps(obj).encode(), content_type)

    # -- routing

    def _route(self, path: str, body: bytes) -> None:
        fake = self.server.fake
        parts = path.strip("/").split("/")
        if path == "/version":
            return self._json(200, fake.version_info())
        if path == "/openapi/v3":
            root = {"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=FAKE"}}}
            return self._json(200, root)
        if path == "/openapi/v3/api/v1":
            return self._json(200, _openapi_v3_core())
        if path == "/api":
            return self._json(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{fake.port}"}
                    ],
                },
            )
        if path == "/apis":
            apps = {"groupVersion": "apps/v1", "version": "v1"}
            groups = [{"name": "apps", "versions": [apps], "preferredVersion": apps}]
            return self._json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if path == "/api/v1":
            return self._json(
                200,
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": "v1",
                    "resources": CORE_RESOURCES,
                },
            )
        if path == "/apis/apps/v1":
            return self._json(
                200,
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": "apps/v1",
                    "resources": APPS_RESOURCES,
                },
            )
        # /api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]]
        if len(parts) >= 5 and parts[:3] == ["api", "v1", "namespaces"]:
            ns, resource = parts[3], parts[4]
            name = parts[5] if len(parts) > 5 else None
            sub = parts[6] if len(parts) > 6 else None
            if resource == "pods":
                return self._pods(ns, name, sub)
            if resource == "configmaps":
                return self._configmaps(ns, name, body)
            return (
                self._json(
                    200,
                    {
                        "kind": "List",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": "1"},
                        "items": [],
                    },
                )
                if name is None
                else self._not_found(resource, name)
            )
        if len(parts) == 4 and parts[:3] == ["api", "v1", "namespaces"]:
            ns = parts[3]
            return self._json(
                200,
                {
                    "kind": "Namespace",
                    "apiVersion": "v1",
                    "metadata": {"name": ns, "creationTimestamp": CREATED},
                    "status": {"phase": "Active"},
                },
            )
        return self._json(
            404, _status(404, "NotFound", "the server could not find the requested resource")
        )

    def _not_found(self, resource: str, name: str) -> None:
        self._json(
            404,
            _status(
                404,
                "NotFound",
                f'{resource} "{name}" not found',
                details={"name": name, "kind": resource},
            ),
        )

    # -- pods

    def _pods(self, ns: str, name: str | None, sub: str | None) -> None:
        fake = self.server.fake
        if name is None:
            if self.query.get("watch") in ("true", "1"):
                return self._watch(ns)
            pods = [_pod(n, ns) for n in fake.pod_names]
            if TABLE_ACCEPT in (self.headers.get("Accept") or ""):
                return self._json(
                    200, _pod_table(pods), "application/json;as=Table;v=v1;g=meta.k8s.io"
                )
            return self._json(
                200,
                {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": "10"},
                    "items": pods,
                },
            )
        if name not in fake.pod_names:
            return self._not_found("pods", name)
        if sub is None:
            pod = _pod(name, ns)
            if TABLE_ACCEPT in (self.headers.get("Accept") or ""):
                return self._json(
                    200, _pod_table([pod]), "application/json;as=Table;v=v1;g=meta.k8s.io"
                )
            return self._json(200, pod)
        if sub == "log":
            return self._send(200, f"log line from {name}\n".encode(), "text/plain")
        upgrade = (self.headers.get("Upgrade") or "").lower()
        if sub in ("exec", "attach"):
            if upgrade == "websocket":
                return self._exec_websocket()
            if upgrade == "spdy/3.1":
                return self._exec_spdy()
        if sub == "portforward":
            if upgrade == "websocket":
                return self._portforward_websocket()
            if upgrade == "spdy/3.1":
                return self._portforward_spdy()
        return self._json(400, _status(400, "BadRequest", "Upgrade request required"))

    def _watch(self, ns: str) -> None:
        fake = self.server.fake
        self.record.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        events = [("ADDED", _pod(n, ns, "11")) for n in fake.pod_names]
        events.append(("MODIFIED", _pod(fake.pod_names[0], ns, "12")))
        events.extend(
            ("MODIFIED", _pod(fake.pod_names[0], ns, str(13 + n))) for n in range(fake.watch_events)
        )
        for kind, obj in events:
            time.sleep(fake.watch_delay)
            line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
            self.record.extra.setdefault("sent_at", []).append(time.monotonic())
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- configmaps (a tiny store for apply)

    def _configmaps(self, ns: str, name: str | None, body: bytes) -> None:
        fake = self.server.fake
        store = fake.configmaps
        if name is None:
            if self.command == "POST":
                obj = json.loads(body)
                key = (ns, obj["metadata"]["name"])
                with fake.lock:
                    if key in store:
                        return self._json(409, _status(409, "AlreadyExists", "already exists"))
                    obj["metadata"].update(
                        namespace=ns,
                        resourceVersion=fake.next_rv(),
                        uid=f"cm-{key[1]}",
                        creationTimestamp=CREATED,
                    )
                    store[key] = obj
                return self._json(201, obj)
            items = [v for (n, _), v in store.items() if n == ns]
            return self._json(
                200,
                {
                    "kind": "ConfigMapList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1"},
                    "items": items,
                },
            )
        key = (ns, name)
        with fake.lock:
            current = copy.deepcopy(store.get(key))
        if current is None:
            return self._not_found("configmaps", name)
        if self.command == "GET":
            return self._json(200, current)
        if self.command == "DELETE":
            with fake.lock:
                store.pop(key, None)
            return self._json(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        if self.command == "PATCH":
            patch = json.loads(body)
            self.record.extra["content_type"] = self.headers.get("Content-Type")
            merged = _merge(current, patch)
            with fake.lock:
                merged["metadata"]["resourceVersion"] = fake.next_rv()
                store[key] = merged
            return self._json(200, merged)
        if self.command == "PUT":
            obj = json.loads(body)
            with fake.lock:
                obj["metadata"]["resourceVersion"] = fake.next_rv()
                store[key] = obj
            return self._json(200, obj)
        return self._json(405, _status(405, "MethodNotAllowed", "method not allowed"))

    # -- upgrades

    def _switch(self, upgrade: str, extra: dict[str, str]) -> None:
        self.record.status = 101
        self.send_response(101)
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", upgrade)
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True

    def _websocket(self, offered: str) -> WebSocket | None:
        protocols = [
            p.strip()
            for line in self.headers.get_all("Sec-WebSocket-Protocol") or []
            for p in line.split(",")
        ]
        if offered not in protocols:
            self._json(400, _status(400, "BadRequest", f"subprotocol {offered} not offered"))
            return None
        key = (self.headers.get("Sec-WebSocket-Key") or "").encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        self._switch(
            "websocket", {"Sec-WebSocket-Accept": accept, "Sec-WebSocket-Protocol": offered}
        )
        return WebSocket(self.rfile, self.connection)

    def _command(self) -> list[str]:
        if self.record.path.endswith("/attach"):
            return ["cat"]  # attach: the container echoes its stdin until it closes
        return self.record.query.get("command", [])

    def _exec_websocket(self) -> None:
        fake = self.server.fake
        if not fake.websocket_exec:
            return self._json(400, _status(400, "BadRequest", "websocket exec disabled"))
        ws = self._websocket("v5.channel.k8s.io")
        if ws is None:
            return
        command = self._command()
        code = _exit_code(command)
        stdin = self.query.get("stdin") in ("true", "1")
        if code is None:  # cat
            while stdin:
                message = ws.receive()
                if message is None:
                    return
                if message[:1] == b"\x00" and len(message) > 1:
                    ws.send(b"\x01" + message[1:])
                elif message[:2] == b"\xff\x00":
                    break
            code = 0
        else:
            output = _command_output(command)
            if output:
                ws.send(b"\x01" + output)
        self.record.extra["exit_code"] = code
        ws.send(b"\x03" + json.dumps(_exit_status(code)).encode())
        ws.close()

    def _exec_spdy(self) -> None:
        versions = [
            v.strip()
            for line in self.headers.get_all("X-Stream-Protocol-Version") or []
            for v in line.split(",")
        ]
        if "v4.channel.k8s.io" not in versions:
            return self._json(400, _status(400, "BadRequest", f"unsupported protocols {versions}"))
        self._switch("SPDY/3.1", {"X-Stream-Protocol-Version": "v4.channel.k8s.io"})
        session = SpdySession(SocketByteStream(self.rfile, self.connection))
        wanted = {"error"} | {
            s for s in ("stdin", "stdout", "stderr") if self.query.get(s) in ("true", "1")
        }
        if self.query.get("tty") in ("true", "1"):
            wanted.add("resize")
            wanted.discard("stderr")
        streams: dict[str, int] = {}
        command = self._command()
        code = _exit_code(command)
        started = False

        def finish(exit_code: int) -> None:
            self.record.extra["exit_code"] = exit_code
            for kind in ("stdout", "stderr"):
                if kind in streams:
                    session.data(streams[kind], b"", fin=True)
            session.data(streams["error"], json.dumps(_exit_status(exit_code)).encode(), fin=True)

        while True:
            try:
                kind, value = session.read_frame()
            except (EOFError, OSError):
                return
            if kind == "syn":
                sid, headers, _fin = value
                session.syn_reply(sid)
                streams[headers.get("streamtype", "")] = sid
                if not started and wanted <= streams.keys():
                    started = True
                    if code is not None:
                        output = _command_output(command)
                        if output and "stdout" in streams:
                            session.data(streams["stdout"], output)
                        finish(code)
                    elif "stdin" not in streams:
                        finish(0)
            elif kind == "data":
                sid, data, fin = value
                if sid == streams.get("stdin") and code is None:
                    if data and "stdout" in streams:
                        session.data(streams["stdout"], data)
                    if fin:
                        finish(0)
            elif kind == "ping":
                session.ping(value)
            elif kind == "goaway":
                return

    def _portforward_websocket(self) -> None:
        fake = self.server.fake
        if not fake.websocket_portforward:
            return self._json(400, _status(400, "BadRequest", "websocket port-forward disabled"))
        ws = self._websocket("SPDY/3.1+portforward.k8s.io")
        if ws is None:
            return
        self._portforward(SpdySession(WebSocketByteStream(ws)))

    def _portforward_spdy(self) -> None:
        versions = self.headers.get_all("X-Stream-Protocol-Version") or []
        if "portforward.k8s.io" not in ",".join(versions):
            return self._json(400, _status(400, "BadRequest", "unsupported protocol"))
        self._switch("SPDY/3.1", {"X-Stream-Protocol-Version": "portforward.k8s.io"})
        self._portforward(SpdySession(SocketByteStream(self.rfile, self.connection)))

    def _portforward(self, session: SpdySession) -> None:
        """Every data stream is an echo of the forwarded pod port."""
        fake = self.server.fake
        data_streams: dict[int, str] = {}
        while True:
            try:
                kind, value = session.read_frame()
            except (EOFError, OSError):
                return
            if kind == "syn":
                sid, headers, _fin = value
                session.syn_reply(sid)
                if headers.get("streamtype") == "data":
                    data_streams[sid] = headers.get("port", "")
                    with fake.lock:
                        fake.forwarded_ports.append(headers.get("port", ""))
            elif kind == "data":
                sid, data, fin = value
                if sid in data_streams:
                    if data:
                        session.data(sid, data)
                    if fin:
                        session.data(sid, b"", fin=True)
            elif kind == "ping":
                session.ping(value)
            elif kind == "goaway":
                return


def _openapi_v3_core() -> dict[str, Any]:
    """Just enough OpenAPI v3 for kubectl >= 1.29 to see that the server validates fields
    (a PATCH operation per kind with a C{fieldValidation} parameter), so C{apply} needs no
    C{--validate=false}.  No schemas: C{kubectl explain} is out of scope."""
    paths = {}
    for resource in CORE_RESOURCES:
        if "/" in resource["name"]:
            continue
        prefix = "/api/v1/namespaces/{namespace}/" if resource["namespaced"] else "/api/v1/"
        gvk = {"group": "", "version": "v1", "kind": resource["kind"]}
        operation = {
            "x-kubernetes-group-version-kind": gvk,
            "x-kubernetes-action": "patch",
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
            ],
            "responses": {"200": {"description": "OK"}},
        }
        paths[prefix + resource["name"] + "/{name}"] = {"patch": operation}
    return {"openapi": "3.0.0", "info": {"title": "fake", "version": "v1"}, "paths": paths}


def _merge(target: Any, patch: Any) -> Any:
    """JSON merge patch (enough of strategic merge for ConfigMaps)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _pod_table(pods: list[dict[str, Any]]) -> dict[str, Any]:
    columns = [
        {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0},
        {"name": "Ready", "type": "string", "format": "", "description": "ready", "priority": 0},
        {"name": "Status", "type": "string", "format": "", "description": "status", "priority": 0},
        {
            "name": "Restarts",
            "type": "string",
            "format": "",
            "description": "restarts",
            "priority": 0,
        },
        {"name": "Age", "type": "string", "format": "", "description": "age", "priority": 0},
    ]
    rows = []
    for pod in pods:
        partial = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": pod["metadata"],
        }
        rows.append(
            {
                "cells": [pod["metadata"]["name"], "1/1", pod["status"]["phase"], "0", "1d"],
                "object": partial,
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "10"},
        "columnDefinitions": columns,
        "rows": rows,
    }


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeApiServer
    ssl_context: ssl.SSLContext

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        return self.ssl_context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up mid-request are normal here


class FakeApiServer:
    """The fake API server. C{start()} binds 127.0.0.1 on a free port (or C{port})."""

    def __init__(
        self,
        cert_pem_path: str,
        key_pem_path: str,
        token: str = "sa-token",
        host: str = "127.0.0.1",
        port: int = 0,
        git_version: str = "v1.31.0",
        pod_names: tuple[str, ...] = ("web-0", "web-1"),
        watch_delay: float = 0.2,
        watch_events: int = 0,
        websocket_exec: bool = True,
        websocket_portforward: bool = True,
    ) -> None:
        self.cert_pem_path = cert_pem_path
        self.key_pem_path = key_pem_path
        self.token = token
        self.host = host
        self.port = port
        self.git_version = git_version
        self.pod_names = list(pod_names)
        self.watch_delay = watch_delay
        self.watch_events = watch_events
        """Extra MODIFIED events a watch sends (one per C{watch_delay}) before it ends."""
        self.websocket_exec = websocket_exec
        self.websocket_portforward = websocket_portforward
        self.requests: list[RecordedRequest] = []
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.forwarded_ports: list[str] = []
        self.lock = threading.Lock()
        self._rv = 100
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def version_info(self) -> dict[str, str]:
        major, minor = self.git_version.lstrip("v").split(".")[:2]
        return {
            "major": major,
            "minor": minor,
            "gitVersion": self.git_version,
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": CREATED,
            "goVersion": "go1.22.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def start(self) -> FakeApiServer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_pem_path, self.key_pem_path)
        context.set_alpn_protocols(["http/1.1"])
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.fake = self
        httpd.ssl_context = context
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="fake-apiserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeApiServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_to(self, path_part: str) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if path_part in r.path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--token", default="sa-token")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = FakeApiServer(args.cert, args.key, args.token, host=args.host, port=args.port).start()
    print(json.dumps({"event": "listening", "port": server.port}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
