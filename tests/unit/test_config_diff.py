"""What a reload changes and what it leaves for a restart (L{jumpoint.config_diff})."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from jumpoint.config import JumpointConfig, parse_config
from jumpoint.config_diff import RESTART_ONLY, Changes, diff, effective

PATH = Path("/etc/jumpoint/jumpoint.yaml")

BASE = """
jumpoint: {name: %(name)s, listen: "127.0.0.1:%(port)d", addresses: ["127.0.0.1"]}
limits: {keepalive_interval: %(keepalive)s, connect_timeout: %(connect)s}
groups:
  default: {jump_groups: ["*"]}
%(groups)s
session_policies:
  p: {idle_timeout: %(idle)s}
items:
%(items)s
"""


def config(**values: object) -> JumpointConfig:
    defaults: dict[str, object] = {
        "name": "unit",
        "port": 7443,
        "keepalive": "15s",
        "connect": "10s",
        "groups": "",
        "idle": "10m",
        "items": "  - {name: web, type: tcp, host: 10.0.0.1, tunnels: [{local_port: auto, remote_port: 80}]}",
    }
    defaults.update(values)
    return parse_config(BASE % defaults, PATH)


def item(name: str, port: int = 22) -> str:
    return f"  - {{name: {name}, type: tcp, host: 10.0.0.2, tunnels: [{{local_port: auto, remote_port: {port}}}]}}"


def test_the_same_file_changes_nothing() -> None:
    changes = diff(config(), config())
    assert changes.empty and changes.summary() == "no change" and changes.restart_needed == ()


def test_items_groups_and_policies_added_removed_and_changed_are_summed_up() -> None:
    old = config(items=item("web") + "\n" + item("db"))
    new = config(
        items=item("web", 8080) + "\n" + item("cache"),
        groups="  ops: {jump_groups: ['ops*']}",
        idle="5m",
        keepalive="20s",
    )
    changes = diff(old, new)
    assert changes.items == Changes(added=("cache",), removed=("db",), changed=("web",))
    assert changes.groups.added == ("ops",)
    assert changes.session_policies.changed == ("p",)
    assert changes.changed == ("limits.keepalive_interval",)
    assert changes.summary() == (
        "items +cache -db ~web; groups +ops; session_policies ~p; limits.keepalive_interval"
    )
    assert changes.to_json()["items"] == {"added": ["cache"], "removed": ["db"], "changed": ["web"]}


def test_restart_only_keys_are_reported_and_keep_their_running_values() -> None:
    old = config()
    new = config(name="other", port=9999, connect="30s", idle="1m")
    changes = diff(old, new)
    assert changes.restart_needed == ("jumpoint.name", "jumpoint.listen", "limits.connect_timeout")
    live = effective(old, new)
    assert (live.name, live.listen_port, live.limits.connect_timeout) == ("unit", 7443, 10.0)
    assert live.policies.session["p"].idle_timeout == 60.0  # the rest is the new file's
    assert "jumpoint.listen" not in changes.summary()


def test_every_restart_only_field_exists_on_the_configuration() -> None:
    fields = set(JumpointConfig.__dataclass_fields__)
    assert all(set(names) <= fields for _, names in RESTART_ONLY)


NAMES = st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 2), max_size=6)


@given(old=NAMES, new=NAMES)
def test_changes_partition_the_names(old: dict[str, int], new: dict[str, int]) -> None:
    changes = Changes.of(old, new)
    assert set(changes.added) == set(new) - set(old)
    assert set(changes.removed) == set(old) - set(new)
    assert set(changes.changed) == {n for n in set(old) & set(new) if old[n] != new[n]}
    assert bool(changes) == (old != new)
