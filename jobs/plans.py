"""Load an admin's plan file (CSV or YAML) into the database, refusing it whole on any problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from connector.config.schema import Config
from connector.storage.store import Store
from rules.periods import Period, WorkingDays
from rules.plans import PlanBook, PlanProblem, lowered, mismatches, parse_plan_file


@dataclass(frozen=True)
class PlanLoad:
    """What a load did, or every problem that kept it from doing anything."""

    problems: list[PlanProblem]
    read: int = 0
    added: int = 0
    changed: int = 0
    warnings: list[PlanProblem] = field(default_factory=list)


def plan_format(path: Path) -> str:
    return "csv" if path.suffix.lower() == ".csv" else "yaml"


def load_plans(store: Store, path: Path, config: Config, now: datetime, *, allow_lower: bool = False) -> PlanLoad:
    """Validate the file against the config's indicators and teams and against the plans in
    force (only upward corrections), then store it; nothing is stored if anything is wrong."""
    text = path.read_text(encoding="utf-8-sig")
    teams = config.teams_for(config.planning_crm or "")
    entries, problems = parse_plan_file(text, fmt=plan_format(path), indicators=config.indicators, teams=teams)
    if not problems and not allow_lower:
        problems = lowered(store.plans.all(), entries)
    if problems:
        return PlanLoad(problems, read=len(entries))
    added, changed = store.plans.save(entries, str(path), now)
    # Against every plan in force: the file's own rows carry their line, stored ones line 0.
    in_force = {e.key: e for e in store.plans.all()} | {e.key: e for e in entries}
    warnings = [w for w in mismatches(in_force.values()) if w.line]
    return PlanLoad([], read=len(entries), added=added, changed=changed, warnings=warnings)


def plan_table(store: Store, config: Config, calendar: WorkingDays, period: Period) -> list[tuple[str, str, str]]:
    """Every person's and team's plan for ``period`` by the cascade: (who, indicator, plan)."""
    teams = config.teams_for(config.planning_crm or "")
    book = PlanBook(store.plans.all(), calendar, teams)
    out: list[tuple[str, str, str]] = []
    for name in config.indicators:
        for team, members in teams.members.items():
            for person in members:
                out.append((f"user {person} ({team})", name, _shown(book.person(person, name, period))))
            out.append((f"team {team}", name, _shown(book.team(team, name, period))))
        out.append(("total", name, _shown(book.everyone(name, period))))
    return [row for row in out if row[2]]


def _shown(value: Decimal | None) -> str:
    return "" if value is None else format(value.quantize(Decimal("0.01")).normalize(), "f")
