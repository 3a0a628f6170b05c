"""What a reload changes: the difference of two configurations, and what needs a restart.

L{diff} compares the running configuration with a newly loaded one: the
items, groups and policies added, removed and changed, the other sections
changed, and the keys that cannot change while the daemon runs
(L{RESTART_ONLY}: the listener, the state, the certificates, the files the
daemon holds open, the network interface).  L{effective} is the new
configuration with those keys kept at their running values: what a reload
swaps in.  Plain data, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jumpoint.config import JumpointConfig

RESTART_ONLY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("jumpoint.name", ("name",)),
    ("jumpoint.listen", ("listen_host", "listen_port")),
    ("jumpoint.addresses", ("addresses",)),
    ("jumpoint.max_pending_handshakes", ("max_pending_handshakes",)),
    ("jumpoint.max_pending_handshakes_per_address", ("max_pending_handshakes_per_address",)),
    ("tls.ca_certificate", ("ca_certificate",)),
    ("tls.ca_key", ("ca_key",)),
    ("tls.server_certificate", ("server_certificate",)),
    ("tls.server_key", ("server_key",)),
    ("state_database", ("state_database",)),
    ("state", ("state",)),
    ("audit.file", ("audit_file",)),
    ("audit.spool_file", ("audit_spool_file",)),
    ("audit.spool_limit_bytes", ("audit_spool_limit_bytes",)),
    ("recordings.directory", ("recordings_directory",)),
    ("recordings.buffer_limit", ("recording_buffer_limit",)),
    ("network", ("network",)),
)
"""Keys of jumpoint.yaml a reload cannot apply (label, the L{JumpointConfig} fields)."""

RESTART_ONLY_LIMITS = ("connect_timeout", "revocation_poll_interval")
"""C{limits.*} keys a reload cannot apply (the connector and the poller are built at start)."""


@dataclass(frozen=True)
class Changes:
    """Names added, removed and changed in one section (items, groups, policies)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @classmethod
    def of(cls, old: Mapping[str, Any], new: Mapping[str, Any]) -> Changes:
        return cls(
            added=tuple(sorted(set(new) - set(old))),
            removed=tuple(sorted(set(old) - set(new))),
            changed=tuple(sorted(n for n in set(old) & set(new) if old[n] != new[n])),
        )

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self) -> str:
        parts = [
            f"{sign}{', '.join(names)}"
            for sign, names in (("+", self.added), ("-", self.removed), ("~", self.changed))
            if names
        ]
        return " ".join(parts)

    def to_json(self) -> dict[str, list[str]]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": list(self.changed),
        }


@dataclass(frozen=True)
class ConfigDiff:
    """Everything a reload changes, and what it leaves for a restart."""

    items: Changes
    groups: Changes
    jump_policies: Changes
    session_policies: Changes
    changed: tuple[str, ...]
    """Other keys applied live (C{allowed_targets}, C{credentials}, C{limits.*})."""
    restart_needed: tuple[str, ...]
    """Keys that changed in the file but keep their running value until a restart."""

    def sections(self) -> dict[str, Changes]:
        return {
            "items": self.items,
            "groups": self.groups,
            "jump_policies": self.jump_policies,
            "session_policies": self.session_policies,
        }

    @property
    def empty(self) -> bool:
        return not any(self.sections().values()) and not self.changed

    def summary(self) -> str:
        """One line, e.g. C{items +db2 -web; groups ~ops; limits.keepalive_timeout}."""
        parts = [f"{name} {c.describe()}" for name, c in self.sections().items() if c]
        parts.extend(self.changed)
        return "; ".join(parts) if parts else "no change"

    def to_json(self) -> dict[str, Any]:
        return {
            **{name: c.to_json() for name, c in self.sections().items()},
            "changed": list(self.changed),
            "restart_needed": list(self.restart_needed),
        }


def restart_needed(old: JumpointConfig, new: JumpointConfig) -> tuple[str, ...]:
    """The restart-only keys whose value differs between C{old} and C{new}."""
    labels = [
        label
        for label, fields in RESTART_ONLY
        if any(getattr(old, f) != getattr(new, f) for f in fields)
    ]
    labels.extend(
        f"limits.{name}"
        for name in RESTART_ONLY_LIMITS
        if getattr(old.limits, name) != getattr(new.limits, name)
    )
    return tuple(labels)


def effective(old: JumpointConfig, new: JumpointConfig) -> JumpointConfig:
    """C{new} with every restart-only key at its running value (C{old}'s)."""
    kept = {f: getattr(old, f) for _, fields in RESTART_ONLY for f in fields}
    limits = dataclasses.replace(
        new.limits, **{name: getattr(old.limits, name) for name in RESTART_ONLY_LIMITS}
    )
    return dataclasses.replace(new, limits=limits, **kept)


def diff(old: JumpointConfig, new: JumpointConfig) -> ConfigDiff:
    """What swapping C{old} for C{new} changes (C{new} as loaded, before L{effective})."""
    live = effective(old, new)
    changed = [
        f"limits.{f.name}"
        for f in dataclasses.fields(live.limits)
        if getattr(old.limits, f.name) != getattr(live.limits, f.name)
    ]
    if old.allowed_targets != live.allowed_targets:
        changed.append("allowed_targets")
    if old.credentials != live.credentials:
        changed.append("credentials")
    return ConfigDiff(
        items=Changes.of({i.name: i for i in old.items}, {i.name: i for i in live.items}),
        groups=Changes.of(old.groups, live.groups),
        jump_policies=Changes.of(old.policies.jump, live.policies.jump),
        session_policies=Changes.of(old.policies.session, live.policies.session),
        changed=tuple(changed),
        restart_needed=restart_needed(old, new),
    )
