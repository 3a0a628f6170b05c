"""Which SQL Server routing targets an mssql item allows (C{allowed_routes}, L{Item.allows_route})."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.items import Item, item_from_data


def mssql(**fields: object) -> Item:
    return item_from_data(
        {"name": "sql", "type": "mssql", "host": "SQL.corp", "username": "app", **fields},
        "console",
    )


@pytest.mark.parametrize(
    ("allowed", "host", "port", "expected"),
    [
        ([], "sql.corp", 1433, True),  # the item's own host and port, any case
        ([], "sql.corp.", 1433, True),
        ([], "sql.corp", 1434, False),
        ([], "replica.corp", 1433, False),
        (["replica.corp:1433"], "REPLICA.corp", 1433, True),
        (["replica.corp:1433"], "replica.corp", 1434, False),
        (["replica.corp:1433"], "replica.corp.evil", 1433, False),
        (["*.corp:1433"], "a.b.corp", 1433, True),
        (["*.corp:1433"], "corp", 1433, False),
        (["*.corp:1433"], "evilcorp", 1433, False),
        (["10.0.0.5:1433"], "10.0.0.5", 1433, True),
        (["[2001:db8::5]:1433"], "2001:db8:0::5", 1433, True),
        (["[2001:db8::5]:1433"], "[2001:DB8::5]", 1433, True),
        (["10.0.0.5:1433"], "10.0.0.6", 1433, False),
    ],
)
def test_allows_route(allowed: list[str], host: str, port: int, expected: bool) -> None:
    assert mssql(allowed_routes=allowed).allows_route(host, port) is expected


def test_the_entries_are_kept_in_canonical_form_and_round_trip() -> None:
    item = mssql(allowed_routes=["Replica.Corp.:1433", "[2001:DB8::5]:1444", "*.Corp:1433"])
    assert item.allowed_routes == ("replica.corp:1433", "[2001:db8::5]:1444", "*.corp:1433")
    spec = item.to_spec()
    assert spec["allowed_routes"] == list(item.allowed_routes)
    assert item_from_data(spec, "console") == item
    assert "allowed_routes" not in mssql().to_spec()


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("replica.corp", "is not HOST:PORT"),
        ("replica.corp:0", "is not HOST:PORT"),
        ("replica.corp:65536", "is not HOST:PORT"),
        ("replica.corp:x", "is not HOST:PORT"),
        ("2001:db8::5:1433", "in brackets"),
        ("bad host:1433", "is not a host name"),
        ("*.:1433", "is not a host name"),
        ("a.*.corp:1433", "is not a host name"),
        (":1433", "is not a host name"),
    ],
)
def test_a_bad_entry_is_a_config_error(entry: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        mssql(allowed_routes=[entry])
    assert fragment in info.value.message and "allowed_routes" in info.value.message


def test_only_mssql_items_take_allowed_routes() -> None:
    with pytest.raises(ConfigError, match="allowed_routes"):
        item_from_data(
            {
                "name": "web",
                "type": "tcp",
                "host": "h",
                "tunnels": [{"remote_port": 80}],
                "allowed_routes": ["h:81"],
            },
            "console",
        )
