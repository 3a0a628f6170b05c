"""Items created from the console, kept in the state database, and the catalog of all items.

L{ItemStore} reads and writes the C{items} table; every row holds the item's
checked specification as JSON and is re-checked when read.  Reads run where
they are called; a write is a job (L{ItemStore.creating}, ...) that the
audit log commits on the database thread in the same transaction as the
event that records it (C{item_created}, ...).  L{Catalog} puts
them together with the read-only items of jumpoint.yaml: one namespace, so a
console item can never shadow a configured one.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from jumpoint.state import StateDatabase
from jumpoint.store.connection import Connection
from shared.errors import UnknownItem, UsageError
from shared.items import Item, item_from_data


class ItemStore:
    """The C{items} table."""

    def __init__(self, database: StateDatabase) -> None:
        self.database = database

    def _item(self, spec: str, created_by: str) -> Item:
        item = item_from_data(json.loads(spec), "console", stored=True)
        return item.with_changes(created_by=created_by)

    def all(self) -> list[Item]:
        rows = self.database.connection.execute(
            "SELECT spec, created_by FROM items ORDER BY name"
        ).fetchall()
        return [self._item(spec, by) for spec, by in rows]

    def get(self, name: str) -> Item | None:
        row = self.database.connection.execute(
            "SELECT spec, created_by FROM items WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else self._item(row[0], row[1])

    def creating(self, item: Item, by: str, now: float) -> Callable[[Connection], Item]:
        """The write that adds C{item} (fails with L{UsageError} if the name is taken)."""

        def create(db: Connection) -> Item:
            if db.execute("SELECT 1 FROM items WHERE name = ?", (item.name,)).fetchone():
                raise UsageError(
                    f"an item named {item.name!r} already exists",
                    hint="choose another name, or change the existing item",
                )
            db.execute(
                "INSERT INTO items (name, type, jump_group, spec, created_by, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (item.name, item.type, item.jump_group, json.dumps(item.to_spec()), by, now, now),
            )
            return item.with_changes(source="console", created_by=by)

        return create

    def updating(self, item: Item, now: float) -> Callable[[Connection], Item]:
        """The write that replaces the item of C{item}'s name."""

        def update(db: Connection) -> Item:
            cursor = db.execute(
                "UPDATE items SET type = ?, jump_group = ?, spec = ?, updated_at = ?"
                " WHERE name = ?",
                (item.type, item.jump_group, json.dumps(item.to_spec()), now, item.name),
            )
            if cursor.rowcount != 1:
                raise UnknownItem(f"no item named {item.name!r}")
            return item

        return update

    def deleting(self, name: str) -> Callable[[Connection], None]:
        """The write that removes item C{name}."""

        def delete(db: Connection) -> None:
            if db.execute("DELETE FROM items WHERE name = ?", (name,)).rowcount != 1:
                raise UnknownItem(f"no item named {name!r}")

        return delete

    def create(self, item: Item, by: str, now: float) -> Item:
        """L{creating}, committed here (admin tools; the daemon commits it with its audit)."""
        with self.database.transaction() as db:
            return self.creating(item, by, now)(db)


class Catalog:
    """Every item: jumpoint.yaml's (read-only) first, then the console's."""

    def __init__(self, configured: tuple[Item, ...], store: ItemStore) -> None:
        self.configured = {item.name: item for item in configured}
        self.store = store

    def all(self) -> list[Item]:
        console = [i for i in self.store.all() if i.name not in self.configured]
        return [*self.configured.values(), *console]

    def get(self, name: str) -> Item | None:
        return self.configured.get(name) or self.store.get(name)
