"""Certificates refused because of the clock say so, with the dates and this machine's clock.

Real TLS 1.3 in memory (L{twisted.test.iosim}) between the console's
L{ConsoleChannel} and the Jumpoint's TLS settings; certificates whose validity
starts in the future or ended in the past are made here with C{cryptography}.
A wrong server name and a foreign CA keep failing with their old messages.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient

from console.channel import ConsoleChannel
from console.profiles import Profile
from shared import pki
from shared.errors import CertificateRejected, ExitCode
from shared.protocol.tls import client_options, rfc3339, server_options, wrap_client, wrap_server

DAY = datetime.timedelta(days=1)
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(name: str, not_before: datetime.datetime, not_after: datetime.datetime) -> pki.KeyPair:
    """A CA valid from C{not_before} to C{not_after} (L{pki.create_ca} is always valid now)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Jumpoint CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return pki.KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_leaf(
    ca: pki.KeyPair,
    common_name: str,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    server: bool,
) -> pki.KeyPair:
    """A server (SAN 127.0.0.1) or client certificate signed by C{ca}, with the given validity."""
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    certificate = builder.sign(ca_key, hashes.SHA256())
    return pki.KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass
class Keys:
    ca: pki.KeyPair
    server: pki.KeyPair
    alice: pki.KeyPair


@pytest.fixture(scope="module")
def keys() -> Keys:
    ca = pki.create_ca("unit")
    return Keys(
        ca, pki.issue_server(ca, "unit", ["127.0.0.1"]), pki.issue_client(ca, "alice", "default")
    )


def handshake(
    tmp_path: Path,
    ca: pki.KeyPair,
    server: pki.KeyPair,
    client: pki.KeyPair,
    server_name: str = "127.0.0.1",
    write_client_pem: bool = True,
) -> CertificateRejected:
    """Connect a console to a Jumpoint's TLS listener; return why the console was refused."""
    if write_client_pem:
        (tmp_path / "client.pem").write_bytes(client.certificate_pem)
    clock = Clock()
    server_factory = wrap_server(
        server_options(ca.certificate_pem, server.certificate_pem, server.key_pem),
        Factory.forProtocol(Protocol),
    )
    profile = Profile("unit", tmp_path, "unit", "127.0.0.1", 7443, server_name, "alice")
    console = ConsoleChannel(clock, profile)
    client_factory = wrap_client(
        client_options(server_name, ca.certificate_pem, client.certificate_pem, client.key_pem),
        Factory.forProtocol(lambda: console),
    )
    _, _, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(None),
        lambda: client_factory.buildProtocol(None),
        clock=clock,
    )
    pump.flush()
    results: list[Any] = []
    console.welcome.addBoth(results.append)
    assert results, "the handshake neither failed nor succeeded"
    failure = results[0]
    assert isinstance(failure, Failure), f"the console was not refused: {failure!r}"
    error = failure.value
    assert isinstance(error, CertificateRejected), error
    assert error.exit_code == ExitCode.CERTIFICATE
    assert error.to_json()["code"] == "certificate_rejected"
    assert error.to_json()["message"] == error.message  # the JSON `error` event says the same
    return error


def clock_in(message: str) -> datetime.datetime:
    """The instant after "this machine's clock says" in C{message}."""
    match = re.search(rf"this machine's clock says ({STAMP})", message)
    assert match, message
    return datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC
    )


def assert_clock_is_now(message: str, before: datetime.datetime) -> None:
    said = clock_in(message)
    assert before.replace(microsecond=0) <= said <= _now(), message


def test_an_expired_jumpoint_certificate_says_expired_with_both_times(
    tmp_path: Path, keys: Keys
) -> None:
    # Regression (issue 9, point 15): this was "not issued by the CA in this profile".
    before = _now()
    until = (before - DAY).replace(microsecond=0)
    server = make_leaf(keys.ca, "unit", before - 30 * DAY, until, server=True)
    error = handshake(tmp_path, keys.ca, server, keys.alice)
    assert error.message.startswith(
        "this console rejected the Jumpoint's certificate: the Jumpoint's certificate has"
        f" expired: valid until {rfc3339(until)}, this machine's clock says "
    ), error.message
    assert re.fullmatch(rf".*valid until {STAMP}, this machine's clock says {STAMP}", error.message)
    assert_clock_is_now(error.message, before)
    assert "not issued by the CA" not in error.message
    assert error.hint is not None and "check this machine's clock" in error.hint


def test_a_jumpoint_certificate_not_yet_valid_says_so_and_to_check_the_clock(
    tmp_path: Path, keys: Keys
) -> None:
    before = _now()
    start = (before + DAY).replace(microsecond=0)
    server = make_leaf(keys.ca, "unit", start, start + 30 * DAY, server=True)
    error = handshake(tmp_path, keys.ca, server, keys.alice)
    assert error.message.startswith(
        "this console rejected the Jumpoint's certificate: the Jumpoint's certificate is not yet"
        f" valid: valid from {rfc3339(start)}, this machine's clock says "
    ), error.message
    assert error.message.endswith(" (check this machine's clock)")
    assert_clock_is_now(error.message, before)
    assert error.hint is not None and "check this machine's clock" in error.hint


def test_an_expired_ca_certificate_is_named_as_the_ca(tmp_path: Path) -> None:
    """The time error is the CA's (depth 1): the message does not blame the Jumpoint's own."""
    now = _now()
    until = (now - DAY).replace(microsecond=0)
    ca = make_ca("old", now - 60 * DAY, until)
    server = make_leaf(ca, "unit", now - 30 * DAY, now + 30 * DAY, server=True)
    client = make_leaf(ca, "alice", now - 30 * DAY, now + 30 * DAY, server=False)
    error = handshake(tmp_path, ca, server, client)
    assert (
        f"this console rejected the Jumpoint's certificate: the CA certificate has expired:"
        f" valid until {rfc3339(until)}, this machine's clock says "
    ) in error.message


def test_a_foreign_ca_keeps_its_message_even_when_also_expired(tmp_path: Path, keys: Keys) -> None:
    """An unknown issuer is reported first; only OpenSSL's time errors get the new text."""
    other = pki.create_ca("other")
    now = _now()
    for server in (
        pki.issue_server(other, "unit", ["127.0.0.1"]),
        make_leaf(other, "unit", now - 30 * DAY, now - DAY, server=True),
    ):
        error = handshake(tmp_path, keys.ca, server, keys.alice)
        assert error.message == (
            "this console rejected the Jumpoint's certificate: the Jumpoint's certificate was"
            " not issued by the CA in this profile"
        )
        assert error.hint is not None and "did not sign the certificate" in error.hint


def test_a_wrong_server_name_still_fails_with_its_message(tmp_path: Path, keys: Keys) -> None:
    """The name check of Twisted's connection creator is still in force."""
    error = handshake(
        tmp_path, keys.ca, keys.server, keys.alice, server_name="jumpoint.elsewhere.example"
    )
    assert error.message == (
        "this console rejected the Jumpoint's certificate: the Jumpoint's certificate is not"
        " valid for jumpoint.elsewhere.example"
    )
    wrong_address = handshake(tmp_path, keys.ca, keys.server, keys.alice, server_name="127.0.0.2")
    assert "is not valid for 127.0.0.2" in wrong_address.message


def test_an_expired_console_certificate_says_until_when_from_the_profile(
    tmp_path: Path, keys: Keys
) -> None:
    before = _now()
    until = (before - DAY).replace(microsecond=0)
    alice = make_leaf(keys.ca, "alice", before - 30 * DAY, until, server=False)
    error = handshake(tmp_path, keys.ca, keys.server, alice)
    assert error.message.startswith(
        "the Jumpoint rejected this console's certificate: this console's certificate has"
        f" expired: valid until {rfc3339(until)} (from the profile's client.pem),"
        " this machine's clock says "
    ), error.message
    assert_clock_is_now(error.message, before)
    assert error.hint is not None and "the Jumpoint's clock" in error.hint


def test_an_unreadable_client_pem_keeps_the_old_expiry_message(tmp_path: Path, keys: Keys) -> None:
    now = _now()
    alice = make_leaf(keys.ca, "alice", now - 30 * DAY, now - DAY, server=False)
    (tmp_path / "client.pem").write_bytes(b"not a certificate")
    error = handshake(tmp_path, keys.ca, keys.server, alice, write_client_pem=False)
    assert re.fullmatch(
        r"the Jumpoint rejected this console's certificate: this console's certificate has"
        r" expired \([^)]*alert certificate expired\)",
        error.message,
    ), error.message
    missing = tmp_path / "missing"
    missing.mkdir()
    error = handshake(missing, keys.ca, keys.server, alice, write_client_pem=False)
    assert "this console's certificate has expired (" in error.message
