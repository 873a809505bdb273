"""Copy-on-write databases: every environment of a (domain, data seed) reads one shared seeded database, and copies
a table into a private overlay only when a tool first writes it.

The seeded database is a shared-cache in-memory SQLite database (one per process, domain and seed). An environment
that only reads holds no copy at all; one that writes holds a private in-memory database, with the shared one
attached as `base`, into which each table it writes is copied (schema, indexes and rows) before the first write.
SQLite resolves an unqualified table name to `main` before attached databases, so tools and snapshots, which never
qualify names, see the private copy of a written table and the shared rows of every other one. An authorizer on
the overlay refuses any write to `base`, so no write can reach the shared rows. Forking copies only the overlay.
Memory per environment is therefore the tables it wrote, not the whole database (the cost that bounds how many
episodes a rollout controller can hold in flight).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections.abc import Iterable

from toolgym.domains.database import connect

_SHARED_NAMES = itertools.count()
_WRITES = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE, sqlite3.SQLITE_DROP_TABLE,
           sqlite3.SQLITE_DROP_INDEX, sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_CREATE_INDEX,
           sqlite3.SQLITE_ALTER_TABLE}


class SharedDatabase:
    """A shared-cache in-memory database that overlays attach read-only; it lives while `conn` is open."""

    def __init__(self) -> None:
        self.uri = f"file:toolgym-{os.getpid()}-{next(_SHARED_NAMES)}?mode=memory&cache=shared"
        self.conn = connect(self.uri)

    def ddl(self, table: str) -> list[str]:
        """The statements that recreate `table` and its indexes."""
        rows = self.conn.execute("SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
                                 "ORDER BY type = 'index'", (table,)).fetchall()
        return [r[0] for r in rows]


def _refuse_base_writes(action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
    return sqlite3.SQLITE_DENY if db == "base" and action in _WRITES else sqlite3.SQLITE_OK


def _enforce_references(conn: sqlite3.Connection, table: str) -> None:
    """TEMP triggers that refuse a row of the private `table` whose reference names no parent row, wherever the
    parent table lives (private or shared): the foreign keys SQLite cannot enforce across schemas, same error."""
    for ref in conn.execute(f'PRAGMA main.foreign_key_list("{table}")').fetchall():
        parent, column, key = ref["table"], ref["from"], ref["to"] or "id"
        check = (f'WHEN NEW."{column}" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "{parent}" WHERE "{key}" = '
                 f'NEW."{column}") BEGIN SELECT RAISE(ABORT, \'FOREIGN KEY constraint failed\'); END')
        for event in ("INSERT", f'UPDATE OF "{column}"'):
            name = f"fk_{table}_{column}_{event.split()[0].lower()}"
            conn.execute(f'CREATE TEMP TRIGGER "{name}" BEFORE {event} ON main."{table}" {check}')


class OverlayDatabase:
    """One environment's copy-on-write view of a SharedDatabase (see the module docstring)."""

    def __init__(self, shared: SharedDatabase):
        self.shared = shared
        self._conn: sqlite3.Connection | None = None
        self.private: set[str] = set()

    @property
    def reader(self) -> sqlite3.Connection:
        """The connection to read the current state through (never to write through)."""
        return self._conn if self._conn is not None else self.shared.conn

    def writer(self, tables: Iterable[str]) -> sqlite3.Connection:
        """The overlay connection, with private copies of `tables` made first: writes to them stay here."""
        conn = self._open()
        for table in sorted(set(tables) - self.private):
            for statement in self.shared.ddl(table):
                conn.execute(statement)
            conn.execute(f'INSERT INTO main."{table}" SELECT * FROM base."{table}"')
            _enforce_references(conn, table)
            self.private.add(table)
        return conn

    def _open(self, conn: sqlite3.Connection | None = None) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = conn or connect()
            # SQLite enforces no foreign key whose parent is in another schema: _enforce_references does instead
            self._conn.execute("PRAGMA foreign_keys = OFF")
            self._conn.execute("ATTACH DATABASE ? AS base", (self.shared.uri,))
            self._conn.set_authorizer(_refuse_base_writes)
        return self._conn

    def fork(self) -> OverlayDatabase:
        """An independent overlay with this one's private tables copied."""
        other = OverlayDatabase(self.shared)
        if self._conn is not None:
            copy = connect()
            self._conn.backup(copy)
            other._open(copy)
            other.private = set(self.private)
            for table in sorted(other.private):  # TEMP triggers live outside `main`, which is all a backup copies
                _enforce_references(copy, table)
        return other

    def materialize(self) -> sqlite3.Connection:
        """A private connection holding the whole current state (shared rows and private tables merged), for
        callers that write through a connection themselves."""
        full = connect()
        self.shared.conn.backup(full)
        if self.private:
            full.execute("PRAGMA foreign_keys = OFF")
            for table in sorted(self.private):
                cur = self.reader.execute(f'SELECT * FROM main."{table}"')
                marks = ", ".join("?" for _ in cur.description)
                full.execute(f'DELETE FROM "{table}"')
                full.executemany(f'INSERT INTO "{table}" VALUES ({marks})', cur)
            full.execute("PRAGMA foreign_keys = ON")
        return full

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.private = set()
