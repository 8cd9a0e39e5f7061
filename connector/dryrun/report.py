"""The dry-run's summary table and CSV."""

from __future__ import annotations

import csv
from pathlib import Path

from rich.console import Console
from rich.table import Table

from connector.dryrun.replay import ReplayResult

CSV_COLUMNS = ("at", "crm", "deal_id", "rule", "trigger", "action", "detail")


def write_csv(result: ReplayResult, path: Path) -> None:
    """Every would-be action, one row each, in the order it would have happened."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for o in result.outcomes:
            at = o.at.astimezone(result.tz) if result.tz is not None else o.at
            writer.writerow((at.isoformat(), o.crm, o.deal_id, o.rule, o.trigger, o.action, o.detail))


def print_summary(result: ReplayResult, console: Console, seconds: float) -> None:
    """Counts per rule and action, and breaches per deadline."""
    deals = len({(o.crm, o.deal_id) for o in result.outcomes if o.deal_id})  # recurring work has none
    console.print(
        f"replayed {result.events} events and {result.deadline_events} deadline moments in "
        f"{seconds:.1f} s; {len(result.outcomes)} actions on {deals} deals (nothing written)"
        + (f"; {result.schedule_events} scheduled-rule events" if result.schedule_events else "")
        + (f"; {result.recurring_tasks} recurring tasks" if result.recurring_tasks else "")
        + (f"; {result.follow_ups} changes by the rules' own writes" if result.follow_ups else "")
    )
    table = Table(title="What the rules would have done")
    table.add_column("rule")
    table.add_column("action")
    table.add_column("count", justify="right")
    for (rule, action), count in sorted(result.by_rule.items()):
        table.add_row(rule, action, str(count))
    console.print(table)
    if result.breaches:
        console.print("breaches: " + ", ".join(f"{name} {count}" for name, count in sorted(result.breaches.items())))
    if result.errors:
        errors = Table(title="Rules that failed (the event's other rules still ran)")
        errors.add_column("rule")
        errors.add_column("error")
        errors.add_column("events", justify="right")
        for (rule, error), count in sorted(result.errors.items()):
            errors.add_row(rule, error, str(count))
        console.print(errors)
    if result.not_simulated:
        console.print("not simulated: " + "; ".join(result.not_simulated))
    else:
        console.print("everything the live connector would do was simulated")
