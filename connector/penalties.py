"""The penalty report's output: a table per month and employee, and the CSV for accounting."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from rules.penalties import CSV_COLUMNS, Breach, month_of, per_employee


def write_csv(rows: Iterable[Breach], path: Path, timezone: str) -> int:
    """One line per breach, grouped by month and employee, for accounting; returns the count."""
    ordered = sorted(rows, key=lambda b: (month_of(b, timezone), b.responsible_id or "", b.due_at, b.deal_id))
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for b in ordered:
            local = b.due_at.astimezone(ZoneInfo(timezone))
            writer.writerow(
                (month_of(b, timezone), b.responsible_id or "", b.deadline, b.crm, b.deal_id, local.isoformat(), b.rule)
            )
    return len(ordered)


def print_report(rows: list[Breach], deadlines: frozenset[str], console: Console, timezone: str) -> None:
    """Per month and employee: the number of penalty breaches and the deals."""
    if not deadlines:
        console.print("penalty report: no deadline is marked `penalty: true`")
        return
    table = Table(title="Penalties: breaches per employee responsible at the breach")
    for column in ("month", "employee", "breaches"):
        table.add_column(column, justify="right" if column == "breaches" else "left")
    counts = per_employee(rows, timezone)
    for (month, employee), count in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        table.add_row(month, employee, str(count))
    console.print(table)
    named = ", ".join(sorted(deadlines))
    console.print(f"penalties: {len(rows)} breaches of {named} by {len({e for _, e in counts})} employees")
