"""The requests on UDP flows: open one (decided and audited), close one.

C{flow_open} asks for a UDP flow of the channel's session to one of its
item's remote ports; the rules, in order (each denial names its rule and is
audited as C{udp_flow_denied} by L{jumpoint.handlers.dispatch}):

1. the item has a C{udp} (or C{tcp-udp}) tunnel pair to that remote port
   (rule C{item host and remote ports});
2. the user's C{tunnels_restricted.protocol} allows C{udp};
3. the session carries fewer than its C{max_udp_flows} flows;
4. the target passes C{allowed_targets} and the built-in default, resolved
   and checked as a TCP target is (L{jumpoint.dialing.checked_address}).

An admitted flow (L{jumpoint.udp_flows.UdpFlow}) is committed to the audit
log (C{udp_flow_opened}) before the console hears of it.  C{close_flow}
ends one of the session's flows; a flow the Jumpoint already closed is
answered the same way (the two ends may close at once).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from jumpoint.dialing import checked_address
from jumpoint.handlers.request_context import Reply, RequestChannel, denied
from jumpoint.policy import Grant
from jumpoint.recording_tap import flow_client
from jumpoint.session import Session
from jumpoint.udp_flows import UdpFlow, UdpRelay, UdpSocket
from shared.errors import AccessDenied, InvalidRequest, NotSupported, UsageError
from shared.kinds.base import UDP
from shared.protocol import control
from shared.protocol.datagrams import FlowRefused

log = Logger()

RULE_TARGET = "item host and remote ports"
RULE_MAX_FLOWS = "max_udp_flows"


def _open_session(channel: RequestChannel) -> Session:
    session = channel.session
    if session is None or session.terms is None or session.closed:
        raise UsageError("no session is open on this connection")
    return session


async def flow_open(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
    """Decide on a UDP flow (module docstring); its socket is open when the reply is sent."""
    core = channel.core
    session = _open_session(channel)
    terms = session.terms
    assert terms is not None
    mux = channel.mux
    flow_id, port, protocol = message["flow"], message["remote_port"], message["protocol"]
    client = message.get("client") or "?"
    if protocol != UDP:
        raise NotSupported(f"flows of protocol {protocol!r} are not supported (only udp)")
    if flow_id % 2 == 0:
        raise InvalidRequest(
            "control message 'flow_open': field 'flow' must be odd (the console's)"
        )
    if mux is None or flow_id in session.flows or mux.datagrams.flow(flow_id) is not None:
        raise UsageError(f"flow {flow_id} is already open")
    item = session.item
    target = f"{item.host}:{port}"
    context = {"flow": flow_id, "target": target, "client": client}
    if not item.allows_target(item.host, port, UDP):
        raise denied(
            f"{target}/udp is not a tunnel of item {item.name!r} (rule: {RULE_TARGET})",
            rule=RULE_TARGET,
            **context,
        )
    if not grant.restrictions.allows_protocol(UDP):
        allowed = ", ".join(sorted(grant.restrictions.protocol or ()))
        raise denied(
            f"your {grant.rule_groups()} may open {allowed} tunnels only, not udp",
            rule="tunnels_restricted.protocol",
            **context,
        )
    if len(session.flows) >= terms.max_udp_flows:
        raise denied(
            f"the session already carries {terms.max_udp_flows} UDP flows (rule: {RULE_MAX_FLOWS})",
            rule=RULE_MAX_FLOWS,
            **context,
        )
    open_udp = core.open_udp
    if open_udp is None:
        raise NotSupported("this Jumpoint carries no UDP")
    try:
        address, _ = await checked_address(core, item.host, port)
    except AccessDenied as denial:
        raise denied(denial.message, rule="allowed_targets", **context) from None
    except Exception as error:  # the resolver failed: this flow fails, not the session
        log.warn(
            "session {session}: cannot resolve {host}: {error}",
            session=session.session_id,
            host=item.host,
            error=error,
        )
        raise UsageError(f"cannot resolve {item.host}") from None
    if channel.session is not session or session.closed or mux.closing:
        raise UsageError("the session closed while the flow was being opened")
    if flow_id in session.flows or mux.datagrams.flow(flow_id) is not None:
        raise UsageError(f"flow {flow_id} is already open")

    def tell_console(flow: UdpFlow, reason: str) -> None:
        if not mux.closing:
            mux.send_control(
                {"type": control.FLOW_CLOSED, "flow": flow.flow_id, "reason": reason[:200]}
            )

    flow = UdpFlow(
        session=session,
        datagrams=mux.datagrams,
        flow_id=flow_id,
        target=target,
        address=address,
        clock=core.clock,
        audit=core.log_audit,
        idle_timeout=terms.udp_idle_timeout,
        tell_console=tell_console,
    )
    relay = UdpRelay()
    try:
        mux.datagrams.open_flow(flow_id, flow)
    except FlowRefused as refusal:
        raise UsageError(f"cannot open flow {flow_id}: {refusal}") from None
    try:
        socket: UdpSocket = open_udp(address, port, relay)
    except Exception as error:
        mux.datagrams.close_flow(flow_id)
        raise UsageError(f"cannot open a UDP socket to {target}: {error}") from None
    relay.flow = flow
    if session.recorder is not None:
        console_side = flow_client(channel.peer_host, flow_id, address)
        flow.recording = session.recorder.flow(console_side, (address, port))
    flow.start(socket)
    try:
        await core.log_audit.record(
            "udp_flow_opened",
            **session.audit_fields(),
            durable=True,
            flow=flow_id,
            target=target,
            address=address,
            client=client,
        )
    except BaseException:
        flow.close("the audit log could not be written", tell_console=False)
        raise
    if flow.closed:  # the session ended while the decision was committed
        raise UsageError("the session closed while the flow was being opened")
    log.info(
        "session {session}: UDP flow {flow} from {client} to {target} ({address}) opened",
        session=session.session_id,
        flow=flow_id,
        client=client,
        target=target,
        address=address,
    )
    return {"flow": flow_id, "address": address, "idle_timeout": terms.udp_idle_timeout}


def close_flow(channel: RequestChannel, grant: Grant, message: dict[str, Any]) -> Reply:
    """The console closed one of its flows (idle, or its end of the session)."""
    session = _open_session(channel)
    flow_id = message["flow"]
    reason = message.get("reason") or "closed"
    flow = session.flows.get(flow_id)
    if flow is not None:
        flow.close(f"closed by the console: {reason}", tell_console=False)
    return {"flow": flow_id}
