"""`jump open ITEM`: open a session, bind its tunnels, show them, close cleanly.

The session ends at the first of: Ctrl-C or SIGTERM, the C{--for} duration,
the command given after C{--} exiting, the Jumpoint closing the session
(revocation, shutdown), or a lost connection that reconnecting could not
bring back within C{--reconnect-for} (L{console.session_watch}; at once with
C{--no-reconnect}).  L{run_open} returns the exit status:
the command's own status with C{-- CMD}, 0 for a requested close, and the
L{SessionLost} code when the Jumpoint ended it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from console.channel import ConsoleChannel, ConsoleRefused, connect
from console.logrouter import LOG_ROUTER
from console.profiles import Profile, load_profile
from console.reconnect_attempt import SessionResumer, remember_members
from console.session_watch import SessionWatch
from console.tunnels import MAX_PACKET, TunnelSession
from console.view import JsonView, PlainView, SessionView, TerminalView
from shared.errors import ConsentRequired, ExitCode, JumpError, SessionLost, UsageError
from shared.protocol import control
from shared.startup_heap import freeze_startup_heap
from shared.text import printable

log = Logger()

STATS_INTERVAL = 1.0
RECONNECT_FOR = 300.0
"""Seconds `jump open` tries to reconnect after a loss (C{--reconnect-for})."""
CONNECT_WAIT = 10.0
"""Seconds a local connection accepted while reconnecting waits (C{--connect-wait})."""
CLOSE_TIMEOUT = 3.0
CHILD_GRACE = 5.0


@dataclass(frozen=True)
class OpenOptions:
    item: str
    profile: str | None = None
    as_json: bool = False
    duration: float | None = None
    command: tuple[str, ...] = ()
    local_address: str | None = None
    acl: tuple[str, ...] = ()
    ticket: str | None = None
    consent: bool = False
    auto_close: float | None = None
    idle_timeout: float | None = None
    stats_interval: float = STATS_INTERVAL
    reconnect_for: float | None = RECONNECT_FOR
    """C{None}: C{--no-reconnect}."""
    connect_wait: float = CONNECT_WAIT

    def request_fields(self) -> dict[str, Any]:
        """The members of the C{open_session} request."""
        return {
            "item": self.item,
            "ticket": self.ticket,
            "consent": self.consent or None,
            "local_address": self.local_address,
            "acl": list(self.acl) or None,
            "auto_close": self.auto_close,
            "idle_timeout": self.idle_timeout,
        }


@dataclass(frozen=True)
class Ending:
    """Why the session ends, and the exit status that goes with it."""

    code: str
    reason: str
    status: int
    error: JumpError | None = None


class _Child(ProcessProtocol):
    """The command run with the tunnels up; reports its exit status."""

    def __init__(self) -> None:
        self.ended: Deferred[int] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        status = 0
        if isinstance(value, ProcessTerminated):
            if value.signal is not None:
                status = 128 + int(value.signal)
            else:
                status = int(value.exitCode or 0)
        elif not isinstance(value, ProcessDone):
            status = ExitCode.FAILURE
        self.ended.callback(status)


def choose_view(options: OpenOptions, out: TextIO, seconds: Any) -> SessionView:
    if options.as_json:
        return JsonView(out, seconds)
    if options.command or not out.isatty():
        return PlainView(sys.stderr if options.command else out)
    return TerminalView(out, seconds)


def command_environment(session: TunnelSession) -> dict[str, str]:
    tunnels = [t.describe() for t in session.tunnels]
    env = dict(os.environ)
    env.update(
        {
            "JUMP_TUNNELS": json.dumps(tunnels),
            "JUMP_SESSION": session.session_id,
            "JUMP_ITEM": session.item,
        }
    )
    if session.tunnels:  # a network session has none
        first = session.tunnels[0]
        env["JUMP_LOCAL_ADDR"] = first.local_address
        env["JUMP_LOCAL_PORT"] = str(first.local_port)
    env.update(session.part.environment())
    return env


def _stderr_lines(lines: list[str]) -> None:
    for line in lines:
        sys.stderr.write(f"jump: {printable(line)}\n")
    sys.stderr.flush()


async def run_open(reactor: Any, options: OpenOptions, out: TextIO) -> int:
    """Run one session to its end; returns the process exit status."""
    if options.command and shutil.which(options.command[0]) is None:
        raise UsageError(f"command not found: {options.command[0]}")
    profile = load_profile(options.profile)
    channel = await connect_first(reactor, profile)
    profile = remember_members(profile, channel.welcome_message)
    session: TunnelSession | None = None
    try:
        try:
            result = await _request_session(channel, options)
            session = TunnelSession(channel, options.item, result)
            session.bind_all(
                lambda port, factory, address: reactor.listenTCP(
                    port, factory, backlog=511, interface=address
                ),
                listen_udp=lambda port, protocol, address: reactor.listenUDP(
                    port, protocol, interface=address, maxPacketSize=MAX_PACKET
                ),
            )
            try:
                pending = session.part.opened(
                    options.item, session.session_id, session.tunnels, _stderr_lines
                )
                if pending is not None:  # the kind's work off the reactor (a TUN interface)
                    await pending
            except JumpError:
                session.stop_listening()
                raise
            await channel.request(control.TUNNELS_BOUND, tunnels=session.bindings())
        except BaseException as error:
            reason = error.message if isinstance(error, JumpError) else "console error"
            await channel.close_and_wait(reactor, reason)
            raise
        return await _run_session(reactor, options, out, session, profile)
    finally:
        # An error after the kind set up its part (a kubeconfig): remove it all the same.
        if session is not None:
            _stderr_lines(session.part.remove() or [])


async def _run_session(
    reactor: Any, options: OpenOptions, out: TextIO, session: TunnelSession, profile: Profile
) -> int:
    part = session.part
    view = choose_view(options, out, reactor.seconds)
    if isinstance(view, TerminalView):
        LOG_ROUTER.note = view.note
    details = session.details()
    if isinstance(view, JsonView):
        details.update(part.details())
    view.ready(
        options.item,
        session.session_id,
        [t.describe() for t in session.tunnels],
        details,
        part.counters_label(),
    )
    shell_lines = part.shell_lines()
    if shell_lines and not isinstance(view, JsonView):
        # stdout, unless a command runs: its stdout is its own.
        shown = sys.stderr if options.command else out
        shown.write("".join(f"{line}\n" for line in shell_lines))
        shown.flush()
    for line in session.terms_lines():
        view.note(line)

    ending: Deferred[Ending] = Deferred()

    def finish(end: Ending) -> None:
        if not ending.called:
            ending.callback(end)

    def lost(error: JumpError, code: str) -> None:
        finish(Ending(code, error.message, error.exit_code, error))

    resumer = SessionResumer(reactor, profile, session, options.request_fields(), lambda c: None)
    watcher = SessionWatch(
        reactor,
        session,
        view,
        lost,
        resumer,
        options.reconnect_for,
        options.connect_wait,
    )
    resumer.on_channel = watcher.watch
    watcher.watch(session.channel)
    part.watch(lambda error: finish(Ending(error.code, error.message, error.exit_code, error)))

    calls = []
    if options.duration is not None:
        calls.append(
            reactor.callLater(
                options.duration,
                finish,
                Ending("expired", f"the --for duration of {options.duration:g}s ran out", 0),
            )
        )

    def tick() -> None:
        view.update(session.counters(), part.counters())
        calls[:] = [call for call in calls if call.active()]  # bounded: the ticks that ran go
        calls.append(reactor.callLater(options.stats_interval, tick))

    calls.append(reactor.callLater(options.stats_interval, tick))

    child: _Child | None = None
    if options.command:
        child = _Child()
        executable = shutil.which(options.command[0]) or options.command[0]
        reactor.spawnProcess(
            child,
            executable,
            list(options.command),
            env=command_environment(session),
            childFDs={0: 0, 1: 1, 2: 2},
        )
        child.ended.addCallback(
            lambda status: finish(
                Ending("command_exited", f"the command exited with status {status}", status)
            )
        )

    def on_signal(number: int, frame: object) -> None:
        name = "interrupted" if number == signal.SIGINT else "terminated"
        if child is not None and not child.ended.called:
            if number != signal.SIGINT:
                child.transport.signalProcess("TERM")  # type: ignore[union-attr]
            return
        reactor.callFromThread(finish, Ending(name, f"{name} by the user", 0))

    previous = {s: signal.signal(s, on_signal) for s in _signals()}
    # The session is set up, its signals handled: what was built so far lives as long
    # as it, so full GC collections need not walk it (its collect is not in the way
    # of a signal: the handlers above are in place).
    freeze_startup_heap()
    try:
        end = await ending
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for call in calls:
            if call.active():
                call.cancel()
        watcher.close()
    if child is not None and not child.ended.called:
        await _stop_child(reactor, child)
    end = await _close_session(reactor, session, end)
    removed = part.remove()
    link = part.counters()  # the last figures (the Jumpoint's as of its last answer)
    if isinstance(view, JsonView):
        view.closed(end.code, end.reason, session.counters(), link, removed=removed)
    else:
        view.closed(end.code, end.reason, session.counters(), link)
        _stderr_lines(removed or [])
    LOG_ROUTER.note = None
    if end.error is not None:
        raise end.error
    return end.status


async def connect_first(reactor: Any, profile: Profile) -> ConsoleChannel:
    """The first channel: the profile's addresses in order, the first that welcomes us."""
    error: JumpError | None = None
    for member in profile.dial_list():
        try:
            return await connect(reactor, profile, member)
        except ConsoleRefused:
            raise
        except JumpError as failed:
            error = failed
    assert error is not None
    raise error


async def _request_session(channel: Any, options: OpenOptions) -> dict[str, Any]:
    """Ask for the session; ask the user's consent when it will be recorded."""
    fields = options.request_fields()
    try:
        result: dict[str, Any] = await channel.request(control.OPEN_SESSION, **fields)
        return result
    except ConsentRequired as question:
        if options.consent or not sys.stdin.isatty():
            raise
        from twisted.internet.threads import deferToThread

        sys.stderr.write(f"jump: {printable(question.message)}\n")
        agreed = await deferToThread(_ask, "jump: do you consent to the recording?")
        if not agreed:
            raise ConsentRequired(
                "you declined the recording: no tunnel was created",
                hint="nothing was opened; use --yes to consent without the question",
            ) from None
        fields["consent"] = True
        result = await channel.request(control.OPEN_SESSION, **fields)
        return result


def _ask(prompt: str) -> bool:
    import click

    try:
        return bool(click.confirm(prompt, default=False, err=True))
    except (EOFError, click.exceptions.Abort):
        return False


def _signals() -> list[int]:
    numbers: list[int] = [signal.SIGINT]
    if hasattr(signal, "SIGTERM"):
        numbers.append(signal.SIGTERM)
    return numbers


async def _stop_child(reactor: Any, child: _Child) -> None:
    transport = child.transport
    assert transport is not None
    try:
        transport.signalProcess("TERM")
    except Exception:
        return
    timer = reactor.callLater(CHILD_GRACE, _kill, child)
    await child.ended
    if timer.active():
        timer.cancel()


def _kill(child: _Child) -> None:
    if child.transport is not None and not child.ended.called:
        try:
            child.transport.signalProcess("KILL")
        except Exception:
            log.warn("could not kill the command")


async def _close_session(reactor: Any, session: TunnelSession, end: Ending) -> Ending:
    """Stop listening, tell the Jumpoint, close the channel (bounded in time).

    Returns the ending to report: C{end}, unless the Jumpoint never confirmed
    the close (the link is gone or dead), which is never a normal end.
    """
    session.closing = True
    session.stop_listening()
    channel = session.channel
    if channel.lost.called:
        session.abort_connections()
        if end.error is None:
            return _lost_while_closing(end, "the connection was already gone")
        return end
    request = channel.request(control.CLOSE_SESSION, reason=end.reason)
    timer = reactor.callLater(CLOSE_TIMEOUT, request.cancel)
    failure: str | None = None
    try:
        await request
    except CancelledError:
        failure = f"no answer within {CLOSE_TIMEOUT:g}s"
    except JumpError as error:
        if _link_gone(channel):
            failure = error.message
        else:  # the Jumpoint answered: the session is closed all the same
            log.info("closing the session: {error}", error=error.message)
    if timer.active():
        timer.cancel()
    session.abort_connections()
    await channel.close_and_wait(reactor, end.reason)
    if failure is not None and end.error is None:
        log.info("closing the session: {error}", error=failure)
        return _lost_while_closing(end, failure)
    return end


def _link_gone(channel: Any) -> bool:
    return bool(channel.lost.called)


def _lost_while_closing(end: Ending, why: str) -> Ending:
    error = SessionLost(
        f"the connection to the Jumpoint was lost: the session was not closed normally ({why})"
    )
    return Ending("jumpoint_lost", error.message, error.exit_code, error)


__all__ = ["OpenOptions", "SessionLost", "run_open"]
