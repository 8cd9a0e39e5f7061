"""Plans per person and team per period, and how a period's plan is split down (seed 003).

An admin writes plans for whatever periods the regulation sets (a year for the department,
a month per team, a week per manager, a day's norm); a period without its own plan gets its
share of the nearest enclosing one: what is left of it after the finer plans written inside
it, spread evenly over its working days that no finer plan covers. A team without a plan of
its own is the sum of its members'. Corrections may only raise a plan.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from rules.org import Org
from rules.periods import KINDS, Period, WorkingDays, parse_period, period_of

PERSON = "person"
TEAM = "team"
COLUMNS = ("period", "person", "team", "indicator", "plan")


@dataclass(frozen=True)
class PlanEntry:
    """One written plan: ``subject`` is a user id (``kind`` person) or a team name."""

    kind: str
    subject: str
    indicator: str
    period: Period
    value: Decimal
    line: int = 0

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.subject, self.indicator, self.period.key)


@dataclass(frozen=True)
class PlanProblem:
    line: int
    message: str

    def render(self, source: str) -> str:
        return f"{source}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Teams:
    """The org chart as plans see it in one CRM: each team's members and lead and the head
    over them as that CRM's user ids, and each person's id by their ``org.people`` name."""

    members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    leads: Mapping[str, str] = field(default_factory=dict)
    head: str | None = None
    people: Mapping[str, str] = field(default_factory=dict)
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def team_of(self, person: str) -> str | None:
        for team, people in self.members.items():
            if person in people:
                return team
        return None

    def everyone(self) -> list[str]:
        """Every member's user id, in number order."""
        return sorted({p for ids in self.members.values() for p in ids}, key=_natural)


def teams_from_org(org: Org, crm: str) -> Teams:
    """The teams with members of ``org`` (departments above them only give the head), in
    ``crm``'s user ids; the head is the one over the first team (``Org.head_over``)."""
    people = {key: uid for key, person in org.people.items() if (uid := person.id_in(crm))}
    members: dict[str, tuple[str, ...]] = {}
    leads: dict[str, str] = {}
    head: str | None = None
    for key, team in org.teams.items():
        if not team.members:
            continue
        members[key] = tuple(people[m] for m in team.members if m in people)
        if team.lead in people:
            leads[key] = people[team.lead]
        over = org.head_over(team)
        if head is None and over in people:
            head = people[over]
    roles = {name: tuple(people[k] for k in keys if k in people) for name, keys in org.roles.items()}
    return Teams(members, leads, head, people, roles)


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (1 << 62, text)


# --- reading a plan file ---------------------------------------------------------------------


def parse_plan_file(
    text: str, *, fmt: str, indicators: Iterable[str], teams: Teams
) -> tuple[list[PlanEntry], list[PlanProblem]]:
    """The plans a CSV (``fmt`` ``csv``) or YAML file holds, and every problem by line."""
    problems: list[PlanProblem] = []
    rows = _csv_rows(text, problems) if fmt == "csv" else _yaml_rows(text, problems)
    known = set(indicators)
    entries: list[PlanEntry] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    for line, row in rows:
        entry = _entry(line, row, known, teams, problems)
        if entry is None:
            continue
        if entry.key in seen:
            problems.append(PlanProblem(line, f"the same plan is already on line {seen[entry.key]}"))
            continue
        seen[entry.key] = line
        entries.append(entry)
    return entries, problems


def _csv_rows(text: str, problems: list[PlanProblem]) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in ("period", "indicator", "plan") if c not in header]
    if missing:
        problems.append(PlanProblem(1, f"the header lacks {', '.join(missing)}; columns: {', '.join(COLUMNS)}"))
        return []
    rows = []
    for row in reader:
        values = {str(k).strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if any(values.values()):
            rows.append((reader.line_num, values))
    return rows


def _yaml_rows(text: str, problems: list[PlanProblem]) -> list[tuple[int, dict[str, Any]]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.append(PlanProblem(mark.line + 1 if mark else 1, f"not YAML: {getattr(exc, 'problem', exc)}"))
        return []
    if root is None:
        return []
    if isinstance(root, yaml.MappingNode):  # plans: [...]
        root = next((v for k, v in root.value if k.value == "plans"), None)
    if not isinstance(root, yaml.SequenceNode):
        problems.append(PlanProblem(1, "expected a list of plans (or a 'plans:' key holding one)"))
        return []
    rows = []
    for node in root.value:
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.MappingNode):
            problems.append(PlanProblem(line, "a plan is a mapping of period, person or team, indicator, plan"))
            continue
        rows.append((line, {str(k.value): v.value for k, v in node.value if isinstance(v, yaml.ScalarNode)}))
    return rows


def _entry(
    line: int, row: Mapping[str, Any], known: set[str], teams: Teams, problems: list[PlanProblem]
) -> PlanEntry | None:
    before = len(problems)
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        problems.append(PlanProblem(line, f"unknown column(s) {', '.join(unknown)}; columns: {', '.join(COLUMNS)}"))
    person, team = str(row.get("person") or ""), str(row.get("team") or "")
    person = teams.people.get(person, person)  # a person of org.people, or a user id
    if bool(person) == bool(team):
        problems.append(PlanProblem(line, "give either a person or a team"))
    elif team and team not in teams.members:
        names = ", ".join(teams.members) or "none (org.teams lists no team with members)"
        problems.append(PlanProblem(line, f"no team {team!r} under org.teams; known: {names}"))
    indicator = str(row.get("indicator") or "")
    if indicator not in known:
        hint = f"; known: {', '.join(sorted(known))}" if known else "; define it under indicators"
        problems.append(PlanProblem(line, f"unknown indicator {indicator!r}{hint}"))
    try:
        period = parse_period(str(row.get("period") or ""))
    except ValueError as exc:
        problems.append(PlanProblem(line, str(exc)))
    try:
        value = Decimal(str(row.get("plan") or "").replace(",", ".").replace(" ", ""))
        if not value.is_finite() or value < 0:
            raise InvalidOperation
    except InvalidOperation:
        problems.append(PlanProblem(line, f"plan {row.get('plan')!r} is not a number of zero or more"))
    if len(problems) > before:
        return None
    return PlanEntry(PERSON if person else TEAM, person or team, indicator, period, value, line)


def lowered(stored: Iterable[PlanEntry], loaded: Iterable[PlanEntry]) -> list[PlanProblem]:
    """Loaded plans that lower a stored one: seed 003 allows corrections only upward."""
    before = {e.key: e.value for e in stored}
    return [
        PlanProblem(
            e.line,
            f"{e.kind} {e.subject} {e.indicator} {e.period}: plan lowered from {_show(before[e.key])} to "
            f"{_show(e.value)}; plans may only be raised (--allow-lower to override)",
        )
        for e in loaded
        if e.key in before and e.value < before[e.key]
    ]


def mismatches(entries: Iterable[PlanEntry]) -> list[PlanProblem]:
    """Warnings, not errors: a year, quarter or month whose finer plans inside it add up to
    more than it, or, when they cover it whole, to something else (the cascade then gives the
    rest of its days nothing, or ignores the difference)."""
    by_subject: dict[tuple[str, str, str], list[PlanEntry]] = {}
    for entry in entries:
        by_subject.setdefault((entry.kind, entry.subject, entry.indicator), []).append(entry)
    out = []
    for (kind, subject, indicator), mine in by_subject.items():
        for outer in mine:
            for finer in ("quarter", "month"):
                if KINDS.index(finer) <= KINDS.index(outer.period.kind):
                    continue
                inner = [e for e in mine if e.period.kind == finer and e.period.inside(outer.period)]
                if not inner:
                    continue
                total = sum((e.value for e in inner), Decimal(0))
                whole = sum((e.period.last - e.period.first).days + 1 for e in inner) == (
                    (outer.period.last - outer.period.first).days + 1
                )
                if total > outer.value or (whole and total != outer.value):
                    than = "more than" if total > outer.value else "not"
                    out.append(
                        PlanProblem(
                            outer.line,
                            f"warning: {kind} {subject} {indicator}: the {finer} plans inside {outer.period} "
                            f"add up to {_show(total)}, {than} its {_show(outer.value)}",
                        )
                    )
                break  # the finest written level answers for the outer plan
    return out


def _show(value: Decimal) -> str:
    return format(value.normalize(), "f")


# --- the cascade -------------------------------------------------------------------------------

_PLACES = Decimal("0.0001")
_FINER = {kind: KINDS[i + 1 :] for i, kind in enumerate(KINDS)}


class PlanBook:
    """The plans in force, answering for any period by the cascade."""

    def __init__(self, entries: Iterable[PlanEntry], calendar: WorkingDays, teams: Teams | None = None) -> None:
        self.calendar = calendar
        self.teams = teams or Teams()
        self._by_subject: dict[tuple[str, str, str], list[PlanEntry]] = {}
        for entry in entries:
            self._by_subject.setdefault((entry.kind, entry.subject, entry.indicator), []).append(entry)

    def person(self, person: str, indicator: str, period: Period) -> Decimal | None:
        return self._plan(self._by_subject.get((PERSON, person, indicator), []), period)

    def team(self, team: str, indicator: str, period: Period) -> Decimal | None:
        own = self._plan(self._by_subject.get((TEAM, team, indicator), []), period)
        if own is not None:
            return own
        return _total(self.person(p, indicator, period) for p in self.teams.members.get(team, ()))

    def everyone(self, indicator: str, period: Period) -> Decimal | None:
        teams = list(self.teams.members)
        if teams:
            return _total(self.team(t, indicator, period) for t in teams)
        people = {s for (k, s, i) in self._by_subject if k == PERSON and i == indicator}
        return _total(self.person(p, indicator, period) for p in people)

    def _plan(self, entries: Sequence[PlanEntry], period: Period) -> Decimal | None:
        if not entries:
            return None
        for entry in entries:
            if entry.period == period:
                return entry.value
        total, found = Decimal(0), False
        for day in period.days():
            rate = self._day_rate(entries, day)
            if rate is not None:
                total += rate
                found = True
        # Daily shares of a quarter do not add up exactly in decimal; four places are plenty.
        return total.quantize(_PLACES) if found else None

    def _day_rate(self, entries: Sequence[PlanEntry], day: date) -> Decimal | None:
        for kind in reversed(KINDS):
            owner = next((e for e in entries if e.period.kind == kind and e.period.contains(day)), None)
            if owner is None:
                continue
            if kind == "day":
                return owner.value
            if not self.calendar.is_working_day(day):
                return Decimal(0)
            return self._spread(entries, owner)
        return None

    def _spread(self, entries: Sequence[PlanEntry], owner: PlanEntry) -> Decimal:
        """What ``owner`` gives each working day no finer plan covers."""
        finer = [e for e in entries if e.period.kind in _FINER[owner.period.kind] and _overlap(e.period, owner.period)]
        covered = {d for e in finer for d in e.period.days()}
        outermost = [
            e
            for e in finer
            if e.period.inside(owner.period)
            and not any(o is not e and _coarser(o.period, e.period) and e.period.inside(o.period) for o in finer)
        ]
        remaining = owner.value - sum((e.value for e in outermost), Decimal(0))
        free = [d for d in owner.period.days() if d not in covered and self.calendar.is_working_day(d)]
        if not free or remaining <= 0:
            return Decimal(0)
        return remaining / len(free)


def _coarser(a: Period, b: Period) -> bool:
    return KINDS.index(a.kind) < KINDS.index(b.kind)


def _overlap(a: Period, b: Period) -> bool:
    return a.first <= b.last and b.first <= a.last


def _total(values: Iterable[Decimal | None]) -> Decimal | None:
    known = [v for v in values if v is not None]
    return sum(known, Decimal(0)) if known else None


def periods_between(kind: str, first: date, last: date) -> list[Period]:
    """Every period of ``kind`` that overlaps ``first`` … ``last``."""
    out, period = [], period_of(kind, first)
    while period.first <= last:
        out.append(period)
        period = period.next()
    return out
