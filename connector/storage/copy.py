"""Moving the connector's state to another database: every table, row for row.

What the connector knows and has done lives in its tables: polling cursors, the idempotency
keys of every decided and written action (outbox, audit), running deadlines, the deal
snapshots that tell a change from a first sight, plans. A new, empty database pointed at the
same CRMs would redo work (a second task on a deal that already has one); copying the state
first does not. Typical use: SQLite (embedded) to PostgreSQL (production).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Table, func, insert, select, text

from connector.storage.models import Base
from connector.storage.store import Store

BATCH_ROWS = 1000


class StorageNotEmpty(Exception):
    """The target already holds rows: copying into it could mix two connectors' state."""


@dataclass
class CopyResult:
    """Rows copied per table."""

    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def copy_state(source: Store, target: Store, *, progress: Callable[[str, int], None] | None = None) -> CopyResult:
    """Copy every table of ``source`` into ``target`` (migrated, and empty), keeping ids, then
    move PostgreSQL's id sequences past the copied ids. Refuses a target with rows in it."""
    tables = list(Base.metadata.sorted_tables)
    with target.engine.connect() as conn:
        filled = [t.name for t in tables if conn.execute(select(func.count()).select_from(t)).scalar()]
    if filled:
        raise StorageNotEmpty(f"the target database already has rows in {', '.join(filled)}; copy into an empty one")
    result = CopyResult()
    with source.engine.connect() as reading, target.engine.begin() as writing:
        for table in tables:
            copied = 0
            rows = reading.execute(select(table)).mappings()
            while batch := rows.fetchmany(BATCH_ROWS):
                writing.execute(insert(table), [dict(r) for r in batch])
                copied += len(batch)
            result.rows[table.name] = copied
            if progress is not None:
                progress(table.name, copied)
        if writing.dialect.name == "postgresql":
            for table in tables:
                _advance_sequence(writing, table)
    return result


def _advance_sequence(conn, table: Table) -> None:  # type: ignore[no-untyped-def]
    """After rows were inserted with their ids, the next generated id must come after them."""
    column = table.c.get("id")
    if column is None or not column.autoincrement:
        return
    conn.execute(
        text(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
            f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
        )
    )
