"""makeService: the one place that builds a running Jumpoint from its configuration.

The launchers (the C{jumpoint serve} command, the systemd unit, the Windows
service) only load the configuration, call L{makeService} and start it.
L{makeService} first takes the instance lock (L{jumpoint.instance_lock}),
before it touches any state, then opens the state database for reads on the
reactor thread and starts the database thread that does every write, and
replays into the database what a stopped Jumpoint left in the audit spool
file (L{jumpoint.audit_spooler}) before it serves.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.logger import Logger

from jumpoint.audit import BATCH_LIMIT, AuditLog
from jumpoint.audit_spool_file import SpoolFile
from jumpoint.audit_spooler import Spooler
from jumpoint.config import JumpointConfig
from jumpoint.db_thread import DatabaseThread, DatabaseWriter, postgres_opener
from jumpoint.detached_rows import DETACHED_WRITES, attached_rows, detaching_left_open
from jumpoint.dialing import thread_resolver
from jumpoint.instance_lock import InstanceLock
from jumpoint.notify import Delivery, Notifier
from jumpoint.recording import SessionRecorder
from jumpoint.server import JumpointCore, JumpointFactory
from jumpoint.session_lifecycle import RecorderFactory
from jumpoint.session_store import SPOOLED_WRITES
from jumpoint.session_sweep import SWEEP_INTERVAL, sweep_expired_sessions
from jumpoint.state import READ_BUSY_TIMEOUT, StateDatabase, open_state
from jumpoint.store import postgres
from jumpoint.store.change_feed import ChangeFeed, ListenFeed
from jumpoint.targets import make_connector
from jumpoint.udp_flows import reactor_udp
from jumpoint.worker_thread import WorkerThread
from shared.errors import ConfigError
from shared.pki import KeyPair, load_pair
from shared.protocol.frames import ErrorCode
from shared.protocol.tls import server_options, wrap_server
from shared.schema import format_duration

log = Logger()

READER_THREADS = 2
"""PostgreSQL: threads (each with its connection) that run the daemon's reads."""

STOPPING_REASON = "the Jumpoint is shutting down (restarting: sessions stay resumable)"
"""The reason of the GOAWAY C{RESTARTING} a stopping Jumpoint sends every console."""


class JumpointService(MultiService):
    """The running daemon: the TLS listener and the revocation poller."""

    def __init__(
        self,
        core: JumpointCore,
        listener: StreamServerEndpointService,
        writer: DatabaseWriter | None = None,
        lock: InstanceLock | None = None,
        changes: ChangeFeed | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.core = core
        self.listener = listener
        self.writer = writer
        self.lock = lock
        listener.setServiceParent(self)
        if changes is None:
            poller = TimerService(
                core.config.limits.revocation_poll_interval, core.check_revocations
            )
            poller.clock = core.clock
            poller.setServiceParent(self)
        self.changes = changes
        sweeper = TimerService(SWEEP_INTERVAL, self.sweep)
        sweeper.clock = core.clock
        sweeper.setServiceParent(self)

    def sweep(self) -> Deferred[int]:
        """Close the detached sessions past their grace (L{sweep_expired_sessions})."""
        return sweep_expired_sessions(self.core.log_audit, self.core.detached.ids())

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.changes is not None:
            self.changes.start(self.core.changed)
        config = self.core.config
        log.info(
            "Jumpoint {name} listening on {host}:{port} with {items} items",
            name=config.name,
            host=config.listen_host,
            port=config.listen_port,
            items=len(config.items),
        )

    def stopService(self) -> Deferred[None]:
        if self.changes is not None:
            self.changes.stop()
        for channel in list(self.core.channels):
            if channel.mux is not None:
                channel.mux.go_away(ErrorCode.RESTARTING, STOPPING_REASON)
        self.core.detached.stop()  # their rows stay detached: resumable after a restart
        result: Deferred[None] = super().stopService()  # type: ignore[no-untyped-call]

        def close_audit(passed: object) -> Deferred[object]:
            return self.core.log_audit.close().addBoth(lambda _: passed)

        def stop_writer(passed: object) -> object:
            if self.writer is None:
                return passed
            return self.writer.stop().addBoth(lambda _: passed)

        def stop_reader(passed: object) -> object:
            reader = self.core.reader
            if reader is None or reader is self.writer:
                return passed
            return reader.stop().addBoth(lambda _: passed)

        def finish(passed: object) -> object:
            self.core.handshakes.stop()
            for name, service in self.core.kind_services.items():
                removed = service.stop()
                if removed:
                    log.info(
                        "{kind} items: removed {removed}", kind=name, removed=", ".join(removed)
                    )
            self.core.database.close()
            if self.lock is not None:
                self.lock.release()
            return passed

        if self.core.notifier is not None:
            stopping = self.core.notifier.stop()
            result.addBoth(lambda passed: stopping.addBoth(lambda _: passed))
        result.addBoth(close_audit)
        result.addBoth(stop_writer)
        result.addBoth(stop_reader)
        result.addBoth(finish)
        return result


def detach_left_open_sessions(
    database: StateDatabase, audit: AuditLog, now: float, grace: float
) -> int:
    """Sessions a killed daemon left attached become detached now (and audited).

    Only under the instance lock: their channels are certainly gone.  They
    stay resumable for C{grace} from now; the sweep closes those that are not
    resumed in time (and, at its first run, the detached rows already past
    their grace).  Each row changes in the same transaction as its event.
    """
    left_open = attached_rows(database.connection)
    reason = "the Jumpoint stopped while the session was open"
    for row in left_open:
        audit.record(
            "session_detached",
            user=row.user,
            session=row.session_id,
            item=row.item,
            apply=detaching_left_open(row.session_id, now, reason, grace),
            code="jumpoint_stopped",
            reason=reason,
            connections_reset=None,
            reconnect_grace=grace,
        )
    audit.flush()
    return len(left_open)


def _audit_spooler(config: JumpointConfig, reactor: Any) -> Spooler:
    """The audit spool file (mode 0600, next to the state database) and its worker thread."""
    spool_file = SpoolFile(config.spool_path, config.audit_spool_limit_bytes)
    worker = WorkerThread("jumpoint-audit-spool", reactor.callFromThread)
    return Spooler(spool_file, worker, {**SPOOLED_WRITES, **DETACHED_WRITES}, BATCH_LIMIT)


def _recorder_factory(config: JumpointConfig, reactor: Any) -> RecorderFactory | None:
    directory = config.recordings_directory
    if directory is None:
        return None

    def new(session_id: str, link_type: int) -> SessionRecorder:
        return SessionRecorder(
            directory,
            session_id,
            reactor,
            buffer_limit=config.recording_buffer_limit,
            link_type=link_type,
        )

    return new


def makeService(config: JumpointConfig, reactor: Any = None) -> IService:
    """Build the Jumpoint service for C{config} (the reactor is injectable for tests)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor

    lock = InstanceLock.acquire(config.state_database)  # before any state is touched
    try:
        return _build(config, reactor, lock)
    except BaseException:
        lock.release()
        raise


def _signing_ca(config: JumpointConfig) -> tuple[KeyPair | None, str | None]:
    """The CA that signs enrolling consoles' certificates, or why there is none.

    An admin may keep the CA key off the Jumpoint; then online enrollment is
    refused (rule C{enrollment.disabled}) and everything else works.
    """
    try:
        return load_pair(config.ca_certificate, config.ca_key), None
    except OSError as error:
        why = f"it cannot read its CA key ({error.strerror})"
        log.warn("online enrollment is off: {reason}", reason=why)
        return None, why


def _build(config: JumpointConfig, reactor: Any, lock: InstanceLock) -> IService:
    database = open_state(config)  # PostgreSQL: refused unless its schema is this one's
    reader: DatabaseWriter | None = None
    changes: ChangeFeed | None = None
    if database.dsn is not None:
        dsn = database.dsn
        writer = DatabaseThread(
            postgres_opener(dsn, f"jumpoint {config.name} writer"), reactor.callFromThread
        )
        reader = DatabaseThread(
            postgres_opener(dsn, f"jumpoint {config.name} reader"),
            reactor.callFromThread,
            threads=READER_THREADS,
            name="jumpoint-reader",
            retry_lost=True,
        )
        changes = ListenFeed(
            lambda: postgres.connect(dsn, application_name=f"jumpoint {config.name} changes"),
            reactor.callFromThread,
        )
    else:
        writer = DatabaseThread(config.state_database, reactor.callFromThread)
    try:
        spooler = _audit_spooler(config, reactor)
    except OSError as error:
        writer.stop()
        raise ConfigError(f"{config.path}: audit.spool_file: cannot open it: {error}") from None
    try:
        audit = AuditLog(writer, config.audit_file, reactor, spooler=spooler)
    except OSError as error:
        writer.stop()
        spooler.worker.stop()
        raise ConfigError(f"{config.path}: audit.file: cannot open it: {error}") from None
    # before serving, and before the stale rows are closed: what a crash left in the spool file
    audit.replay_spool_now(lambda job: job(database.connection))
    database.set_busy_timeout(READ_BUSY_TIMEOUT)  # reads only here; writes: the thread
    grace = config.limits.reconnect_grace
    stale = detach_left_open_sessions(database, audit, reactor.seconds(), grace)
    if stale:
        log.warn(
            "{count} sessions left open by a stopped Jumpoint are resumable for {grace}",
            count=stale,
            grace=format_duration(grace),
        )

    def delivered(delivery: Delivery) -> None:
        audit.record(
            "notification_sent" if delivery.ok else "notification_failed",
            user=delivery.user,
            session=delivery.session,
            item=delivery.item,
            url=delivery.url,
            notification=delivery.event,
            status=delivery.status,
            attempts=delivery.attempts,
            error=delivery.error,
        )

    ca, ca_unavailable = _signing_ca(config)
    core = JumpointCore(
        config=config,
        database=database,
        clock=reactor,
        connect_target=make_connector(reactor, config.limits.connect_timeout),
        resolve=thread_resolver(reactor),
        audit=audit,
        notifier=Notifier(reactor, on_result=delivered),
        new_recorder=_recorder_factory(config, reactor),
        open_udp=reactor_udp(reactor),
        ca=ca,
        ca_unavailable=ca_unavailable,
        reader=reader,
    )
    try:
        options = server_options(
            config.ca_certificate.read_bytes(),
            config.server_certificate.read_bytes(),
            config.server_key.read_bytes(),
            enrollment=True,
        )
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{config.path}: tls: cannot load the certificates and key: {error}"
        ) from None
    endpoint_class = TCP6ServerEndpoint if ":" in config.listen_host else TCP4ServerEndpoint
    endpoint = endpoint_class(
        reactor, config.listen_port, backlog=511, interface=config.listen_host
    )
    listener = StreamServerEndpointService(endpoint, wrap_server(options, JumpointFactory(core)))
    listener._raiseSynchronously = True
    return JumpointService(core, listener, writer, lock, changes)
