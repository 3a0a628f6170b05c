"""The Twisted side of the console's SQL Server leg: a L{TcpBridge} with a L{ClientLeg} inside.

Bytes from the local client go through L{ClientLeg.from_client}: what it
answers itself (the PRELOGIN reply, TLS handshake flights, a login refusal)
is written back to the client, what is meant for the Jumpoint (the LOGIN7
without credentials, then the client's TDS) enters the stream through
L{TcpBridge.dataReceived}, so that the stream's backpressure applies as for
any tunnel.  Bytes from the Jumpoint go through L{ClientLeg.from_jumpoint}
(encrypted when the client's connection is in TLS) and then on to the socket
as usual.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from console.tds_client_leg import ClientLeg
from shared.bridge import TcpBridge
from shared.frames import ErrorCode
from shared.mux import Stream

log = Logger()

_MODE_TEXT = {
    "none": "no encryption",
    "login-only": "encryption of the login only",
    "full": "TLS for the whole connection",
    "strict": "TDS 8.0 strict TLS",
}


class TdsClientBridge(TcpBridge):
    """A local SQL Server client's connection, bridged to a stream through a L{ClientLeg}.

    @param local: the listener's address, C{host:port} (for logs only).
    """

    def __init__(
        self,
        stream: Stream,
        leg: ClientLeg,
        on_closed: Callable[[TcpBridge], None] | None = None,
        *,
        local: str = "",
    ) -> None:
        super().__init__(stream, on_closed)
        self.leg = leg
        self.local = local
        self._mode_logged = False
        self._client_closed = False

    def dataReceived(self, data: bytes) -> None:
        if self._client_closed:
            return
        output = self.leg.from_client(data)
        self._log_mode()
        if output.to_client:
            self._write_client(output.to_client)
        if output.to_jumpoint:
            super().dataReceived(output.to_jumpoint)
        if output.close is not None:
            self._close_client(output.close)

    def stream_data(self, data: bytes) -> None:
        if self._client_closed:
            return
        out = self.leg.from_jumpoint(data)
        if out:
            super().stream_data(out)
        if self.leg.failure is not None:
            self._close_client(self.leg.failure)

    def _write_client(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        # Through the stream's write batch, so that the order with relayed bytes holds.
        self.stream.mux.writes.write(transport, data)

    def _log_mode(self) -> None:
        leg = self.leg
        if self._mode_logged or leg.mode is None:
            return
        if leg.mode != "none" and leg.tls_version is None and leg.failure is None:
            return  # wait for the handshake, to log the TLS version with the mode
        self._mode_logged = True
        details = _MODE_TEXT[leg.mode]
        if leg.tls_version:
            details += f", {leg.tls_version}"
        if leg.mode == "strict" and leg.alpn is None and leg.tls_version:
            details += ", without ALPN tds/8.0"
        log.info(
            "SQL Server client {peer} connected to {local}: {details}",
            peer=self._peer(),
            local=self.local,
            details=details,
        )

    def _peer(self) -> str:
        transport = self.transport
        if transport is None:
            return "?"
        peer = transport.getPeer()
        host, port = getattr(peer, "host", "?"), getattr(peer, "port", "?")
        return f"{host}:{port}"

    def _close_client(self, reason: str) -> None:
        """Write what is pending, close the client's connection, reset the stream with C{reason}."""
        if self._client_closed:
            return
        self._client_closed = True
        log.warn(
            "closed the SQL Server client {peer} on {local}: {reason}",
            peer=self._peer(),
            local=self.local,
            reason=reason,
        )
        self.close_reason = f"sql server client: {reason}"
        self.reset_code = ErrorCode.CANCEL
        self.stream.reset(ErrorCode.CANCEL, f"the SQL Server client's connection closed: {reason}")
        transport = self.transport
        if transport is None:
            self._finish()
            return
        self.stream.mux.writes.flush(transport)
        # As in stream_ended: a paused producer would make Twisted forget the close.
        transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()
