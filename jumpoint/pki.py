"""The Jumpoint's certificate authority (the code lives in L{shared.pki}, which the console uses too)."""

from shared.pki import (
    KeyPair,
    create_ca,
    issue_client,
    issue_server,
    load_pair,
    write_private,
)

__all__ = ["KeyPair", "create_ca", "issue_client", "issue_server", "load_pair", "write_private"]
