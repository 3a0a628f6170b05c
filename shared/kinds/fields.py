"""Checkers several kinds use for their fields: local ports, PEM certificates, login timeouts."""

from __future__ import annotations

import yaml

from shared import schema
from shared.errors import ConfigError
from shared.kinds.base import AUTO
from shared.schema import Where

LOGIN_TIMEOUT_DEFAULT = 30.0
"""Seconds a local connection of an mssql or k8s item has to finish its login (or first request)."""
LOGIN_TIMEOUT_MAX = 3600.0


def local_port(node: yaml.Node, where: Where) -> int | None:
    """A console port: a number, or C{auto} (L{None}) for any free one."""
    if isinstance(node, yaml.ScalarNode) and node.value == AUTO:
        return None
    try:
        return schema.integer(1, 65535)(node, where)
    except ConfigError:
        raise where.error(node, "must be 'auto' or a port number (1-65535)") from None


def pem_certificates(node: yaml.Node, where: Where) -> str:
    """PEM text of 1 to 16 X.509 certificates."""
    from cryptography import x509

    value = schema.string(1, 65536)(node, where)
    try:
        certificates = x509.load_pem_x509_certificates(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise where.error(node, "is not PEM text of X.509 certificates") from None
    if len(certificates) > 16:
        raise where.error(node, "holds more than 16 certificates")
    return value


def login_timeout(node: yaml.Node, where: Where) -> float:
    """C{login_timeout} of an item or a session policy: a duration, 1 s to 1 h."""
    seconds = schema.duration(LOGIN_TIMEOUT_MAX)(node, where)
    if not 1 <= seconds <= LOGIN_TIMEOUT_MAX:  # also NaN, which parses as a number
        raise where.error(node, f"must be 1 to {LOGIN_TIMEOUT_MAX:g} seconds")
    return seconds
