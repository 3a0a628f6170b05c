"""The C{state:} section of jumpoint.yaml: which backend holds the state, and where.

C{backend: sqlite} (the default) keeps the file of C{path} (or the older
top-level C{state_database}, still accepted).  C{backend: postgresql} names
the DSN by reference only: C{dsn_file} (a 0600 file whose first line is the
DSN) or C{dsn_env} (an environment variable); a password or DSN written in
jumpoint.yaml itself is a configuration error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jumpoint.secret_ref import SecretRef, SecretUnavailable
from jumpoint.store.connection import BACKENDS, POSTGRESQL, SQLITE
from jumpoint.store.postgres import redacted
from shared import schema
from shared.errors import ConfigError
from shared.schema import Field, Where

_FORBIDDEN = ("dsn", "password", "url", "uri", "connection_string", "conninfo")

_FIELDS = {
    "backend": Field(schema.choice(*BACKENDS), default=SQLITE),
    "path": Field(schema.string(), default=None),
    "dsn_file": Field(schema.string(), default=None),
    "dsn_env": Field(schema.string(1, 128, r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"), default=None),
}


@dataclass(frozen=True)
class StateSettings:
    """Where the state lives (see the module docstring)."""

    backend: str = SQLITE
    dsn: SecretRef | None = None
    """PostgreSQL: where its DSN is read from (never the DSN itself)."""

    @property
    def shared(self) -> bool:
        return self.backend == POSTGRESQL

    def read_dsn(self, config_path: Path) -> str:
        """The DSN, read now; a L{ConfigError} (without the DSN) when it cannot be."""
        assert self.dsn is not None
        try:
            return self.dsn.read().decode("utf-8").strip()
        except (SecretUnavailable, UnicodeDecodeError) as error:
            raise ConfigError(
                f"{config_path}: state: cannot read the PostgreSQL DSN: {redacted(str(error))}"
            ) from None


def state_section(node: yaml.Node, where: Where) -> dict[str, Any]:
    """The checked mapping of C{state:}; a password or DSN in it is an error at its line."""
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return {name: spec.default for name, spec in _FIELDS.items()}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if str(key_node.value).lower() in _FORBIDDEN:
                raise where.child(str(key_node.value)).error(
                    key_node,
                    "the database password never goes in jumpoint.yaml: put the DSN in a file"
                    " readable by the Jumpoint only (dsn_file, mode 0600) or in an environment"
                    " variable (dsn_env)",
                )
    values = schema.mapping(node, where, _FIELDS)
    if values["backend"] == SQLITE and (values["dsn_file"] or values["dsn_env"]):
        raise where.child("backend").error(node, "dsn_file and dsn_env are for backend: postgresql")
    if values["backend"] == POSTGRESQL:
        if values["path"] is not None:
            raise where.child("path").error(node, "path is for backend: sqlite")
        if (values["dsn_file"] is None) == (values["dsn_env"] is None):
            raise where.error(node, "backend postgresql: give exactly one of dsn_file and dsn_env")
    return values
