"""The penalty report, pure part: which breaches are penalties, and their months.

Seed 000 withholds the damage of a late connection from the service engineer responsible;
accounting needs, each month, who breached what. A breach is charged to whoever was the
deal's responsible when the deadline was breached (the escalating rule reads the deal
fresh at that moment). The same report comes from the database (``connector penalties``)
and from a dry-run's replayed breaches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from rules.deadlines import DeadlineDef

CSV_COLUMNS = ("month", "responsible_id", "deadline", "crm", "deal_id", "due_at", "rule")


@dataclass(frozen=True)
class Breach:
    """One missed deadline as the report sees it."""

    crm: str
    deal_id: str
    deadline: str
    responsible_id: str | None
    due_at: datetime
    rule: str


def penalty_deadlines(deadlines: Mapping[str, DeadlineDef]) -> frozenset[str]:
    """The names of the deadlines whose breaches are penalties."""
    return frozenset(name for name, definition in deadlines.items() if definition.penalty)


def month_bounds(month: str, timezone: str) -> tuple[datetime, datetime]:
    """``YYYY-MM`` → its first moment and the next month's, in the calendar's zone."""
    try:
        year, number = (int(part) for part in month.split("-"))
        start = datetime(year, number, 1, tzinfo=ZoneInfo(timezone))
    except ValueError:
        raise ValueError(f"--month {month!r}: write it as YYYY-MM, e.g. 2026-03") from None
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=ZoneInfo(timezone))
    return start, end


def penalties(breaches: Iterable[Breach], deadlines: frozenset[str]) -> list[Breach]:
    """The breaches that count as penalties, by month, employee and due moment."""
    return sorted(
        (b for b in breaches if b.deadline in deadlines),
        key=lambda b: (b.due_at, b.responsible_id or "", b.deal_id),
    )


def month_of(breach: Breach, timezone: str) -> str:
    return breach.due_at.astimezone(ZoneInfo(timezone)).strftime("%Y-%m")


def per_employee(rows: Iterable[Breach], timezone: str) -> Counter[tuple[str, str]]:
    """How many penalty breaches each (month, employee) has."""
    return Counter((month_of(b, timezone), b.responsible_id or "—") for b in rows)
