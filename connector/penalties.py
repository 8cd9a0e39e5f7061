"""The penalty report's output: a table per month and employee, and the CSV for accounting."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from rules.penalties import CSV_COLUMNS, Breach, month_of, per_employee

# Up to this many employees the table has a column each; more would not fit a terminal.
PIVOT_UP_TO = 8


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
    """Penalty breaches per month and employee: a column per employee while they fit, one
    line per month and employee otherwise."""
    if not deadlines:
        console.print("penalty report: no deadline is marked `penalty: true`")
        return
    counts = per_employee(rows, timezone)
    months = sorted({m for m, _ in counts})
    employees = sorted({e for _, e in counts}, key=lambda e: (len(e), e))
    table = Table(title="Penalties per employee, charged at the breach")
    table.add_column("month")
    if len(employees) <= PIVOT_UP_TO:
        for employee in employees:
            table.add_column(f"user {employee}", justify="right")
        table.add_column("all", justify="right")
        for month in months:
            figures = [counts.get((month, e), 0) for e in employees]
            table.add_row(month, *(str(n) for n in figures), str(sum(figures)))
        totals = [sum(counts.get((m, e), 0) for m in months) for e in employees]
        table.add_row("total", *(str(n) for n in totals), str(sum(totals)), style="bold")
    else:
        table.add_column("employee")
        table.add_column("breaches", justify="right")
        for (month, employee), count in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
            table.add_row(month, employee, str(count))
    console.print(table)
    named = ", ".join(sorted(deadlines))
    console.print(f"penalties: {len(rows)} breaches of {named} by {len(employees)} employees")
