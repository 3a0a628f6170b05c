"""Resume tokens: the secret a console shows to take its session back after a lost channel.

32 random bytes, base64url without padding, given to the console once in the
C{open_session} result; the Jumpoint keeps only their SHA-256 (in the
session's row) and compares hashes in constant time.  A token is never
logged or audited.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 64
"""Characters of a token a console may send (43 for 32 bytes)."""


def new_resume_token() -> tuple[str, str]:
    """A new token and the hash to store."""
    token = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored_hash: str | None) -> bool:
    """Whether C{token} is the one whose hash is C{stored_hash} (constant time)."""
    if stored_hash is None:
        return False
    return hmac.compare_digest(token_hash(token), stored_hash)
