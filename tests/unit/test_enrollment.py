"""Online, single-use enrollment over real TLS 1.3 in memory (iosim): the token buys one key's
certificate once, every refusal names its rule and is audited, and nothing else gets in.

The Jumpoint is a real L{JumpointCore} behind L{server_options} with enrollment on; the
console is the real L{EnrollClient} behind L{enroll_client_options}.  No sockets.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient

from console.channel import ConsoleChannel
from console.enroll import EnrollClient
from console.profiles import Profile
from jumpoint import enrollment_tokens as tokens
from jumpoint.audit import query
from jumpoint.config import parse_config
from jumpoint.server import JumpointCore, JumpointFactory
from jumpoint.state import StateDatabase
from shared import pki
from shared.errors import (
    CertificateRejected,
    EnrollmentRefused,
    JumpError,
    ProtocolViolation,
    SessionLost,
)
from shared.protocol.enroll import ENROLL_ALPN, MAX_LINE, Certificate, encode_request
from shared.protocol.tls import (
    client_options,
    enroll_client_options,
    server_options,
    wrap_client,
    wrap_server,
)

CONFIG = """\
jumpoint: {name: unit, listen: "127.0.0.1:7443", addresses: [127.0.0.1]}
groups:
  ops: {jump_groups: ["*"]}
  dba: {jump_groups: ["*"]}
items: []
"""

START = time.time()


@dataclass
class Keys:
    ca: pki.KeyPair
    server: pki.KeyPair


@pytest.fixture(scope="module")
def keys() -> Keys:
    ca = pki.create_ca("unit")
    return Keys(ca, pki.issue_server(ca, "unit", ["127.0.0.1"]))


@dataclass
class Jumpoint:
    core: JumpointCore
    clock: Clock
    database: StateDatabase
    keys: Keys
    enrollment: bool = True

    def add(
        self, user: str, groups: tuple[str, ...] = ("ops", "dba"), valid_for: float = 3600
    ) -> str:
        token = tokens.new_token()
        with self.database.transaction() as db:
            tokens.add_user_with_token(
                db, user, groups, token, self.clock.seconds(), valid_for, certificate_days=30
            )
        return token

    def audit(self, event: str | None = None) -> list[dict[str, Any]]:
        self.clock.advance(1)  # the spool's flush delay
        return [entry.to_json() for entry in query(self.database, event=event)]


@pytest.fixture
def jumpoint(tmp_path: Path, keys: Keys) -> Jumpoint:
    clock = Clock()
    clock.advance(START)
    config = parse_config(CONFIG, tmp_path / "jumpoint.yaml")
    database = StateDatabase(tmp_path / "state.db")
    core = JumpointCore(
        config=config,
        database=database,
        clock=clock,
        connect_target=lambda *_: None,  # type: ignore[arg-type,return-value]
        ca=keys.ca,
    )
    return Jumpoint(core, clock, database, keys)


@dataclass
class Exchange:
    client: EnrollClient
    key_pem: bytes
    pump: IOPump

    def outcome(self) -> Certificate | JumpError:
        results: list[Any] = []
        self.client.answer.addBoth(results.append)
        assert results, "the exchange has not ended"
        if isinstance(results[0], Failure):
            assert isinstance(results[0].value, JumpError), results[0]
            return results[0].value
        assert isinstance(results[0], Certificate)
        return results[0]


def exchange(
    jumpoint: Jumpoint,
    token: str | None = None,
    request: bytes | None = None,
    server_enrollment: bool = True,
    csr: bytes | None = None,
) -> Exchange:
    keys = jumpoint.keys
    key_pem, made_csr = pki.new_key_and_request("alice")
    if request is None:
        assert token is not None
        request = encode_request(token, csr or made_csr, "jump test")
    server_factory = wrap_server(
        server_options(
            keys.ca.certificate_pem,
            keys.server.certificate_pem,
            keys.server.key_pem,
            enrollment=server_enrollment,
        ),
        JumpointFactory(jumpoint.core),
    )
    client = EnrollClient(jumpoint.clock, "127.0.0.1:7443", request)
    client_factory = wrap_client(
        enroll_client_options("127.0.0.1", keys.ca.certificate_pem),
        Factory.forProtocol(lambda: client),
    )
    _, _, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(None),
        lambda: client_factory.buildProtocol(None),
        clock=jumpoint.clock,
    )
    pump.flush()
    return Exchange(client, key_pem, pump)


def public_der(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


# -- the token buys one certificate ------------------------------------------------


def test_a_token_buys_a_certificate_for_the_key_made_on_the_console(jumpoint: Jumpoint) -> None:
    token = jumpoint.add("alice")
    before = time.time()
    done = exchange(jumpoint, token)
    after = time.time()
    answer = done.outcome()
    assert isinstance(answer, Certificate)
    assert answer.user == "alice" and answer.groups == ("ops", "dba")
    certificate = x509.load_pem_x509_certificate(answer.certificate)
    key = serialization.load_pem_private_key(done.key_pem, password=None)
    assert public_der(certificate.public_key()) == public_der(key.public_key())
    subject = certificate.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "ops"
    certificate.verify_directly_issued_by(jumpoint.keys.ca.certificate)
    not_after = certificate.not_valid_after_utc.timestamp()
    assert before + 30 * 86400 - 1 <= not_after <= after + 30 * 86400 + 1  # the token's 30 days
    # the certificate is known to the Jumpoint: the console may now connect with it
    user, why = jumpoint.database.user_for_certificate(answer.serial)
    assert user is not None and user.name == "alice", why
    (row,) = jumpoint.audit("user_enrolled")
    assert row["user"] == "alice" and row["serial"] == answer.serial
    assert row["groups"] == ["ops", "dba"] and row["not_after"] == answer.not_after
    assert row["client"] == "jump test" and row["peer"]
    assert len(jumpoint.core.handshakes) == 0  # the exchange left the pre-auth table


def test_the_database_keeps_only_the_hash_of_the_token(jumpoint: Jumpoint) -> None:
    token = jumpoint.add("alice")
    stored = jumpoint.database.connection.execute(
        "SELECT token_hash FROM enrollment_tokens"
    ).fetchall()
    assert stored == [(tokens.token_hash(token),)]
    dump = "\n".join(jumpoint.database.connection.iterdump())
    assert token not in dump


def test_a_second_use_of_the_token_is_refused_and_audited(jumpoint: Jumpoint) -> None:
    token = jumpoint.add("alice")
    assert isinstance(exchange(jumpoint, token).outcome(), Certificate)
    second = exchange(jumpoint, token).outcome()
    assert isinstance(second, EnrollmentRefused)
    assert second.rule == tokens.RULE_USED and "used already" in second.message
    assert second.exit_code == 8
    (row,) = jumpoint.audit("enrollment_refused")
    assert row["user"] == "alice" and row["rule"] == tokens.RULE_USED
    assert len(jumpoint.audit("user_enrolled")) == 1
    rows = jumpoint.database.connection.execute("SELECT COUNT(*) FROM certificates").fetchone()
    assert rows == (1,)


def test_an_expired_token_is_refused_with_both_times(jumpoint: Jumpoint) -> None:
    token = jumpoint.add("alice", valid_for=600)
    jumpoint.clock.advance(601)
    refused = exchange(jumpoint, token).outcome()
    assert isinstance(refused, EnrollmentRefused) and refused.rule == tokens.RULE_EXPIRED
    assert "expired at" in refused.message and "the Jumpoint's clock says" in refused.message
    (row,) = jumpoint.audit("enrollment_refused")
    assert row["rule"] == tokens.RULE_EXPIRED and row["user"] == "alice"


def test_an_unknown_token_is_refused(jumpoint: Jumpoint) -> None:
    jumpoint.add("alice")
    refused = exchange(jumpoint, tokens.new_token()).outcome()
    assert isinstance(refused, EnrollmentRefused) and refused.rule == tokens.RULE_UNKNOWN
    (row,) = jumpoint.audit("enrollment_refused")
    assert row["user"] is None and row["rule"] == tokens.RULE_UNKNOWN


def test_revoking_the_user_revokes_the_unused_token(jumpoint: Jumpoint) -> None:
    token = jumpoint.add("alice")
    jumpoint.database.revoke_user("alice")
    refused = exchange(jumpoint, token).outcome()
    assert isinstance(refused, EnrollmentRefused) and refused.rule == tokens.RULE_REVOKED
    # added again, the old token stays dead and the new one works
    fresh = jumpoint.add("alice")
    again = exchange(jumpoint, token).outcome()
    assert isinstance(again, EnrollmentRefused) and again.rule == tokens.RULE_REVOKED
    assert isinstance(exchange(jumpoint, fresh).outcome(), Certificate)


def test_a_signing_request_for_an_rsa_key_is_refused(jumpoint: Jumpoint) -> None:
    token = jumpoint.add("alice")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from cryptography.hazmat.primitives import hashes

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .sign(rsa_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    refused = exchange(jumpoint, token, csr=csr).outcome()
    assert isinstance(refused, EnrollmentRefused) and refused.rule == tokens.RULE_REQUEST
    # the token was not spent by a refused request
    assert isinstance(exchange(jumpoint, token).outcome(), Certificate)


@pytest.mark.parametrize(
    "request_line",
    [
        b"not json\n",
        b'{"token": "short", "csr": "x"}\n',
        b"[1, 2]\n",
        b"x" * (MAX_LINE + 10),
    ],
    ids=["not-json", "bad-token", "not-an-object", "no-newline-within-the-limit"],
)
def test_a_malformed_request_is_refused_with_its_rule(
    jumpoint: Jumpoint, request_line: bytes
) -> None:
    refused = exchange(jumpoint, request=request_line).outcome()
    assert isinstance(refused, EnrollmentRefused), refused
    assert refused.rule == "enrollment.request"
    (row,) = jumpoint.audit("enrollment_refused")
    assert row["rule"] == "enrollment.request"


def test_without_the_ca_key_enrollment_is_refused_as_disabled(tmp_path: Path, keys: Keys) -> None:
    clock = Clock()
    clock.advance(START)
    database = StateDatabase(tmp_path / "state.db")
    core = JumpointCore(
        config=parse_config(CONFIG, tmp_path / "jumpoint.yaml"),
        database=database,
        clock=clock,
        connect_target=lambda *_: None,  # type: ignore[arg-type,return-value]
        ca=None,
        ca_unavailable="it cannot read its CA key (No such file or directory)",
    )
    jumpoint = Jumpoint(core, clock, database, keys)
    token = jumpoint.add("alice")
    refused = exchange(jumpoint, token).outcome()
    assert isinstance(refused, EnrollmentRefused) and refused.rule == tokens.RULE_DISABLED
    assert "cannot read its CA key" in refused.message


def test_a_jumpoint_without_enrollment_refuses_the_protocol(jumpoint: Jumpoint) -> None:
    token = jumpoint.add("alice")
    refused = exchange(jumpoint, token, server_enrollment=False).outcome()
    assert isinstance(refused, ProtocolViolation)
    assert "does not offer online enrollment" in refused.message
    assert jumpoint.audit("user_enrolled") == []


# -- nothing else gets in without a certificate -------------------------------------


def test_the_channel_protocol_still_requires_a_certificate(
    tmp_path: Path, jumpoint: Jumpoint
) -> None:
    """A console with no certificate asking for jumpoint/1 fails the handshake."""
    keys = jumpoint.keys
    server_factory = wrap_server(
        server_options(
            keys.ca.certificate_pem,
            keys.server.certificate_pem,
            keys.server.key_pem,
            enrollment=True,
        ),
        JumpointFactory(jumpoint.core),
    )
    from twisted.internet import ssl

    from shared.protocol.frames import ALPN_PROTOCOL

    no_certificate = ssl.optionsForClientTLS(
        "127.0.0.1",
        trustRoot=ssl.Certificate.loadPEM(keys.ca.certificate_pem),
        acceptableProtocols=[ALPN_PROTOCOL, ENROLL_ALPN],  # both: the channel is chosen
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_3},
    )
    profile = Profile("unit", tmp_path, "unit", "127.0.0.1", 7443, "127.0.0.1", "alice")
    console = ConsoleChannel(jumpoint.clock, profile)
    client_factory = wrap_client(no_certificate, Factory.forProtocol(lambda: console))
    _, _, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(None),
        lambda: client_factory.buildProtocol(None),
        clock=jumpoint.clock,
    )
    pump.flush()
    results: list[Any] = []
    console.welcome.addBoth(results.append)
    assert results and isinstance(results[0], Failure)
    assert isinstance(results[0].value, CertificateRejected)
    assert "sent no certificate" in results[0].value.message
    assert not jumpoint.core.channels


def connect_console(
    tmp_path: Path, jumpoint: Jumpoint, certificate_pem: bytes, key_pem: bytes
) -> tuple[ConsoleChannel, IOPump]:
    keys = jumpoint.keys
    server_factory = wrap_server(
        server_options(keys.ca.certificate_pem, keys.server.certificate_pem, keys.server.key_pem),
        JumpointFactory(jumpoint.core),
    )
    profile = Profile("unit", tmp_path, "unit", "127.0.0.1", 7443, "127.0.0.1", "alice")
    console = ConsoleChannel(jumpoint.clock, profile)
    client_factory = wrap_client(
        client_options("127.0.0.1", keys.ca.certificate_pem, certificate_pem, key_pem),
        Factory.forProtocol(lambda: console),
    )
    _, _, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(None),
        lambda: client_factory.buildProtocol(None),
        clock=jumpoint.clock,
    )
    pump.flush()
    return console, pump


def test_the_certificate_from_the_exchange_opens_a_channel(
    tmp_path: Path, jumpoint: Jumpoint
) -> None:
    token = jumpoint.add("alice")
    done = exchange(jumpoint, token)
    answer = done.outcome()
    assert isinstance(answer, Certificate)
    console, _ = connect_console(tmp_path, jumpoint, answer.certificate, done.key_pem)
    welcomed: list[Any] = []
    console.welcome.addBoth(welcomed.append)
    assert welcomed and welcomed[0]["user"] == "alice"


def test_an_open_channel_is_closed_when_its_certificate_expires(
    tmp_path: Path, jumpoint: Jumpoint
) -> None:
    """The certificate is re-checked on open channels: at its expiry the channel closes."""
    client = pki.issue_client(
        jumpoint.keys.ca, "alice", "ops", lifetime=datetime.timedelta(seconds=60)
    )
    not_after = client.certificate.not_valid_after_utc.timestamp()
    jumpoint.database.add_user("alice", "ops", client.serial, "2099-01-01")
    console, pump = connect_console(tmp_path, jumpoint, client.certificate_pem, client.key_pem)
    welcomed: list[Any] = []
    console.welcome.addBoth(welcomed.append)
    assert welcomed and welcomed[0]["user"] == "alice"
    while jumpoint.clock.seconds() + 2 < not_after:
        jumpoint.clock.advance(min(2.0, not_after - jumpoint.clock.seconds() - 2))
        pump.flush()
    assert jumpoint.core.channels, "closed before its certificate expired"
    jumpoint.clock.advance(3)
    pump.flush()
    lost: list[Any] = []
    console.lost.addBoth(lost.append)
    assert lost and isinstance(lost[0], SessionLost)
    assert "certificate expired at" in lost[0].message
    assert not jumpoint.core.channels
    (row,) = jumpoint.audit("certificate_expired")
    assert row["user"] == "alice" and row["serial"] == client.serial
    when = datetime.datetime.fromisoformat(row["not_after"].replace("Z", "+00:00"))
    assert abs(when.timestamp() - not_after) < 1
