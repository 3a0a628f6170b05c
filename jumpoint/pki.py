"""The Jumpoint's certificate authority (the code is L{shared.pki}; the console uses it too)."""

from shared.pki import (
    KeyPair,
    create_ca,
    issue_client,
    issue_server,
    load_pair,
    write_private,
)

__all__ = ["KeyPair", "create_ca", "issue_client", "issue_server", "load_pair", "write_private"]
