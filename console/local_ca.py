"""The console's local CA: certificates for the TLS listeners it offers on loopback.

SQL Server clients that encrypt (TDS 7.x with encryption, TDS 8.0 strict)
talk TLS to the console's listener.  Each profile has its own local CA
(C{local-ca.pem}, key 0600, created at first use); every listener gets a
fresh certificate with its IP address as subject alternative name, so
clients that validate certificates work once they trust the local CA
(C{jump ca} prints its path or PEM).
"""

from __future__ import annotations

from console.profiles import Profile
from shared.files import write_private
from shared.pki import KeyPair, create_ca, issue_server

CA_FILE = "local-ca.pem"
KEY_FILE = "local-ca.key"


def local_ca(profile: Profile) -> KeyPair:
    """The profile's local CA, created (and stored) when it does not exist yet."""
    certificate = profile.directory / CA_FILE
    key = profile.directory / KEY_FILE
    if certificate.is_file() and key.is_file():
        return KeyPair(certificate.read_bytes(), key.read_bytes())
    pair = create_ca(f"jump console {profile.name}")
    write_private(key, pair.key_pem)
    certificate.write_bytes(pair.certificate_pem)
    return pair


def listener_certificate(profile: Profile, address: str) -> KeyPair:
    """A certificate for one listener (IP SAN C{address}, also C{localhost})."""
    return issue_server(local_ca(profile), f"jump {address}", [address, "localhost"])
