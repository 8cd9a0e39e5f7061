"""Plan-vs-fact reports (seed 003): per person, per team and for everyone, and who gets what.

Pure: the facts are read from the CRM and the plans from the database by the runtime
(``jobs.report``); this module turns them into rows, splits them by recipient and finds the
people who missed a day's plan.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from domain.facts import Fact
from rules.indicators import Indicator, figure
from rules.org import parse_ref
from rules.periods import Period
from rules.plans import PlanBook, Teams

PERSON, TEAM, GROUP, ALL = "person", "team", "group", "all"


@dataclass(frozen=True)
class Cell:
    plan: Decimal | None
    fact: Decimal | None

    @property
    def percent(self) -> Decimal | None:
        if self.plan is None or self.fact is None or not self.plan:
            return None
        return (self.fact * 100 / self.plan).quantize(Decimal("1"))

    @property
    def missed(self) -> bool:
        return self.plan is not None and self.plan > 0 and (self.fact or 0) < self.plan


@dataclass(frozen=True)
class Row:
    scope: str  # person, team, group or all
    name: str  # user id, team name, the group's value, or "" for everyone
    team: str | None
    cells: Mapping[str, Cell]
    by: str | None = None  # a group row's field

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "name": self.name,
            "team": self.team,
            "cells": {k: {"plan": c.plan, "fact": c.fact, "percent": c.percent} for k, c in self.cells.items()},
        }


def plan_vs_fact(
    period: Period,
    wanted: Sequence[str],
    indicators: Mapping[str, Indicator],
    facts: Sequence[Fact],
    book: PlanBook,
    teams: Teams,
    tz: Any,
    *,
    targets: Mapping[str, Decimal] | None = None,
    person_field: str | None = None,
    group_by: str | None = None,
) -> list[Row]:
    """A row per person (in team order), per team, and one for everyone. ``targets`` are the
    plans per person where none is loaded (a team's and everyone's are their people's sum);
    ``person_field`` names the record field holding the user a fact counts for (an agent
    named on a deal whose responsible is someone else), else the fact's own user.
    ``group_by`` adds a row per value of that record field among everyone's facts (a fact
    without the field takes its deal's), before the row for everyone; groups have no plan."""
    by_user: dict[str, list[Fact]] = {}
    for fact in facts:
        user = fact.get(person_field) if person_field else fact.user
        by_user.setdefault(str(user or ""), []).append(fact)
    people = teams.everyone() or sorted(u for u in by_user if u)
    standing = targets or {}

    def cells(of: list[Fact], plan: Any, heads: int = 1) -> dict[str, Cell]:
        def planned(name: str) -> Decimal | None:
            value: Decimal | None = plan(name)
            if value is None and name in standing:
                return Decimal(standing[name]) * heads
            return value

        return {name: Cell(planned(name), figure(indicators[name], of, period, tz, indicators)) for name in wanted}

    rows = []
    for team, members in teams.members.items():
        for person in members:
            rows.append(
                Row(PERSON, person, team, cells(by_user.get(person, []), lambda i, p=person: book.person(p, i, period)))
            )
        mine = [f for p in members for f in by_user.get(p, [])]
        rows.append(Row(TEAM, team, team, cells(mine, lambda i, t=team: book.team(t, i, period), len(members))))
    if not teams.members:
        for person in people:
            rows.append(
                Row(PERSON, person, None, cells(by_user.get(person, []), lambda i, p=person: book.person(p, i, period)))
            )
    everyone = [f for p in people for f in by_user.get(p, [])]
    if group_by:
        for value, mine in grouped(everyone, group_by).items():
            rows.append(Row(GROUP, value, None, cells(mine, lambda i: None), by=group_by))
    rows.append(Row(ALL, "", None, cells(everyone, lambda i: book.everyone(i, period), len(people))))
    return rows


def grouped(facts: Sequence[Fact], field: str) -> dict[str, list[Fact]]:
    """``facts`` by the value of ``field``, in the order of the values; a fact without it (a
    stage entry, an activity) takes its deal's, and one whose deal has none falls under "—"."""
    of_deal: dict[str, str] = {}
    for fact in facts:
        value = fact.get(field)
        if fact.deal_id and value not in (None, ""):
            of_deal.setdefault(str(fact.deal_id), str(value))
    out: dict[str, list[Fact]] = {}
    for fact in facts:
        value = fact.get(field)
        key = str(value) if value not in (None, "") else of_deal.get(str(fact.deal_id or ""), "—")
        out.setdefault(key, []).append(fact)
    return dict(sorted(out.items()))


def split_by_recipient(to: str, rows: Sequence[Row], teams: Teams) -> dict[str, list[Row]]:
    """Who gets which rows: ``head``, ``role(NAME)`` (each of its people), a person of
    ``org.people`` or a user id all of them; ``team_lead`` their team's; ``person`` /
    ``responsible`` their own."""
    if to in ("person", "responsible"):
        return {r.name: [r] for r in rows if r.scope == PERSON}
    if to == "team_lead":
        out: dict[str, list[Row]] = {}
        for team, lead in teams.leads.items():
            out.setdefault(lead, []).extend(r for r in rows if r.team == team)
        return out
    if to == "head":
        return {teams.head: list(rows)} if teams.head else {}
    role = parse_ref(to)
    if role is not None and role.kind == "role":
        return {user: list(rows) for user in teams.roles.get(role.arg, ())}
    return {teams.people.get(to, to): list(rows)}


def missed_by(rows: Sequence[Row], teams: Teams, to: str = "team_lead") -> dict[str, list[Row]]:
    """Team lead (or, ``to`` person, the person) → the rows of their people who missed a plan
    (seed 003: the day's plan must be met, and what is planned for a day must cover it)."""
    out: dict[str, list[Row]] = {}
    for row in rows:
        if row.scope != PERSON or not any(c.missed for c in row.cells.values()):
            continue
        lead = row.name if to == "person" else teams.leads.get(row.team or "") or teams.head
        if lead:
            out.setdefault(lead, []).append(row)
    return out


def _num(value: Decimal | None) -> str:
    if value is None:
        return "—"
    return format(value.quantize(Decimal("0.01")).normalize(), "f")


def label(row: Row) -> str:
    if row.scope == PERSON:
        return f"user {row.name}" + (f" ({row.team})" if row.team else "")
    if row.scope == TEAM:
        return f"team {row.name}"
    if row.scope == GROUP:
        return f"{row.by} {row.name}"
    return "total"


def table(rows: Sequence[Row], indicators: Mapping[str, Indicator]) -> str:
    """Rows as plain text lines: ``user 11 (north): Calls 40/38 (95%); …``."""
    lines = []
    for row in rows:
        parts = []
        for name, cell in row.cells.items():
            pct = f" ({cell.percent}%)" if cell.percent is not None else ""
            parts.append(f"{indicators[name].title} {_num(cell.plan)}/{_num(cell.fact)}{pct}")
        lines.append(f"{label(row)}: " + "; ".join(parts))
    return "\n".join(lines)


FILE_COLUMNS = ("period", "scope", "name", "team", "indicator", "plan", "fact", "percent")


def file_rows(
    rows: Sequence[Row], period: Period
) -> list[tuple[str, str, str, str, str, Decimal | None, Decimal | None, Decimal | None]]:
    """One line per row and indicator, as a report file holds them (``FILE_COLUMNS``)."""
    return [
        (period.key, row.scope, row.name, row.team or "", name, cell.plan, cell.fact, cell.percent)
        for row in rows
        for name, cell in row.cells.items()
    ]


def to_csv(rows: Sequence[Row], period: Period) -> str:
    """The report as CSV: ``FILE_COLUMNS``, empty where there is no plan or fact."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FILE_COLUMNS)
    for line in file_rows(rows, period):
        *text, plan, fact, percent = line
        writer.writerow([*text, "" if plan is None else _num(plan), "" if fact is None else _num(fact),
                         "" if percent is None else str(percent)])  # fmt: skip
    return out.getvalue()
