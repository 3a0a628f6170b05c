"""Connects a Jumpoint-side bridge (or UDP flow) to its session's recording (L{jumpoint.recording}).

The tap is set on the bridge before the target is dialled and opens its
conversation in the pcap file on the first byte, when the target's address
is known.  The console side of the conversation is the console's address
with a port derived from the stream id.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from shared.bridge import TcpBridge

if TYPE_CHECKING:
    from jumpoint.recording import ConnectionRecording, SessionRecorder

_DOCUMENTATION_V4 = "192.0.2.1"


def _client_address(console_host: str, server_host: str) -> str:
    """The console's address, in the IP version of the target's."""
    try:
        console = ipaddress.ip_address(console_host)
        server = ipaddress.ip_address(server_host)
    except ValueError:
        return _DOCUMENTATION_V4
    if console.version == server.version:
        return str(console)
    if server.version == 6 and isinstance(console, ipaddress.IPv4Address):
        return f"::ffff:{console}"
    mapped = getattr(console, "ipv4_mapped", None)
    return str(mapped) if mapped is not None else _DOCUMENTATION_V4


def flow_client(console_host: str, flow_id: int, server_host: str) -> tuple[str, int]:
    """The console side of a recorded UDP flow: its address, a port derived from the flow id."""
    return _client_address(console_host, server_host), 10000 + flow_id % 50000


class RecordingTap:
    """The L{shared.bridge.BridgeTap} of one recorded connection."""

    def __init__(
        self,
        recorder: SessionRecorder,
        bridge: TcpBridge,
        stream_id: int,
        console_host: str,
        target_port: int,
    ) -> None:
        self._recorder = recorder
        self._bridge = bridge
        self._stream_id = stream_id
        self._console_host = console_host
        self._target_port = target_port
        self._recording: ConnectionRecording | None = None

    def _conversation(self) -> ConnectionRecording:
        if self._recording is None:
            transport: Any = self._bridge.transport
            peer = transport.getPeer() if transport is not None else None
            host = str(getattr(peer, "host", _DOCUMENTATION_V4))
            port = int(getattr(peer, "port", self._target_port))
            client = (_client_address(self._console_host, host), 10000 + self._stream_id % 50000)
            self._recording = self._recorder.connection(self._stream_id, client, (host, port))
        return self._recording

    def from_socket(self, data: bytes) -> None:
        self._conversation().from_server(data)

    def to_socket(self, data: bytes) -> None:
        self._conversation().to_server(data)

    def closed(self, reset: bool) -> None:
        if self._recording is not None:
            self._recording.closed(reset=reset)
