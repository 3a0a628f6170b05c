"""The Jumpoint's credential store: the logins it injects, read from files or the environment.

jumpoint.yaml names where each secret is (C{credentials:}, checked before the
daemon starts); the secret itself is read only when a login needs it, so a
rotated file takes effect at the next login.  A L{Credential} never shows its
password in C{repr}, logs or errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jumpoint.config import CredentialRef, JumpointConfig
from shared.errors import JumpError
from shared.items import Item


class CredentialUnavailable(JumpError):
    """No credential is configured for an item, or its secret cannot be read."""

    code = "credential_unavailable"


@dataclass(frozen=True)
class Credential:
    """A login the Jumpoint injects.

    SQL login, Windows/NTLM with a domain, a bearer C{token} (the secret is
    the token) or a C{client_certificate} (the secret is the PEM key; the
    certificate is C{reference.certificate_file}).
    """

    kind: str
    username: str
    domain: str | None
    reference: CredentialRef

    def password(self) -> str:
        """The secret, read now (file: first line without its line break; a key: the whole file)."""
        ref = self.reference
        if ref.password_env is not None:
            value = os.environ.get(ref.password_env)
            if value is None:
                raise CredentialUnavailable(
                    f"the credential for {self.username!r} is not available on the Jumpoint"
                )
            return value
        assert ref.password_file is not None
        try:
            text = ref.password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise CredentialUnavailable(
                f"the credential for {self.username!r} is not available on the Jumpoint"
            ) from None
        if self.kind == "client_certificate":
            return text
        return text.splitlines()[0] if text else ""

    def __repr__(self) -> str:
        return f"Credential(kind={self.kind!r}, username={self.username!r}, password=<hidden>)"


class CredentialStore:
    """Finds the credential of an item: by item name first, then by host and username."""

    def __init__(self, config: JumpointConfig) -> None:
        self.references = config.credentials

    def for_item(self, item: Item) -> Credential:
        wanted = item.username
        for ref in self.references:
            if ref.item == item.name:
                return self._credential(ref, item)
        for ref in self.references:
            if ref.item is None and ref.host == item.host and ref.username == wanted:
                return self._credential(ref, item)
        raise CredentialUnavailable(
            f"the Jumpoint has no credential for item {item.name!r}",
            hint="ask your administrator to add it to credentials: in jumpoint.yaml",
        )

    @staticmethod
    def _credential(ref: CredentialRef, item: Item) -> Credential:
        username = ref.username or item.username or ""
        return Credential(ref.kind, username, ref.domain, ref)


def credential_for(store: CredentialStore | None, item: Item) -> Credential:
    """The credential the Jumpoint injects into the connections of C{item}.

    Raises L{CredentialUnavailable} when there is none (also when the daemon has
    no credential store): the bridge then refuses the login without dialling.
    """
    if store is None:
        raise CredentialUnavailable(f"the Jumpoint has no credential for item {item.name!r}")
    return store.for_item(item)
