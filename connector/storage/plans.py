"""The plans an admin loaded (``connector plans load``): rows of the plans table."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import select

from connector.storage.models import PlanRow
from rules.periods import parse_period
from rules.plans import PlanEntry

if TYPE_CHECKING:
    from connector.storage.store import Store


class Plans:
    """Every plan in force; a load adds new plans and replaces the values of known ones."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def all(self) -> list[PlanEntry]:
        with self.store.reading() as session:
            return [
                PlanEntry(r.subject_kind, r.subject, r.indicator, parse_period(r.period), Decimal(r.value))
                for r in session.scalars(select(PlanRow).order_by(PlanRow.id))
            ]

    def save(self, entries: Iterable[PlanEntry], source: str, now: datetime) -> tuple[int, int]:
        """Store ``entries`` in one transaction; returns (added, changed)."""
        added = changed = 0
        with self.store.sessions() as session, session.begin():
            rows = {(r.subject_kind, r.subject, r.indicator, r.period): r for r in session.scalars(select(PlanRow))}
            for entry in entries:
                where = f"{source}:{entry.line}"[:500]
                row = rows.get(entry.key)
                if row is None:
                    kind, subject, indicator, period = entry.key
                    row = PlanRow(
                        subject_kind=kind, subject=subject, indicator=indicator, period=period,
                        value=str(entry.value), source=where, loaded_at=now,
                    )  # fmt: skip
                    session.add(row)
                    rows[entry.key] = row
                    added += 1
                elif Decimal(row.value) != entry.value:
                    row.value, row.source, row.loaded_at = str(entry.value), where, now
                    changed += 1
        return added, changed
