"""Periodic reports (seed 002's daily per-manager report): figures from what the connector knows.

A report is not about one deal, so it is not a rule: on its schedule the connector gathers
the deals it knows (their last snapshots) and the tasks it set, sums them per responsible
user, and renders a task per user (or one summary task). The figures here are pure
functions of those records and the moment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from rules.model import Condition
from rules.templates import Template

# Plan-vs-fact reports' task title and text when the config gives none (see rules.plan_reports).
PLAN_TITLE = "План/факт {{ period }}: {{ scope }}"
PLAN_TEXT = "{{ table }}"


@dataclass(frozen=True)
class MissedPlan:
    """What a day report does for each person who missed a plan: a task to their team lead
    (``to`` team_lead) or to the person (``to`` person)."""

    title: Template
    text: Template
    to: str = "team_lead"


@dataclass(frozen=True)
class ReportDef:
    """One configured report: ``to`` is ``responsible`` (each user their own) or a user id.

    With ``indicators`` it is a plan-vs-fact report over the last ``period`` (see
    ``rules.plan_reports``): ``to`` is then also ``person``, ``team_lead`` or ``head``, ``by``
    the day of the next month it is due on, ``file`` a CSV path template. ``current`` reports
    on the running period, on its last working day (a day's results that evening);
    ``targets`` are standing plans per person and period where none is loaded; ``person_field``
    names the record field holding the user a fact counts for (else its responsible);
    ``group_by`` a record field whose values get a row each (a territory written on the deal).
    ``calendar`` names the calendar (of ``calendars:``) its schedule, days and end of work count
    on, else the top-level one.
    """

    name: str
    crm: str
    schedule: str
    title: Template
    text: Template
    to: str | None = "responsible"
    condition: Condition | None = None
    due: str | None = None
    period: str = "day"
    indicators: tuple[str, ...] = ()
    by: int | None = None
    file: Template | None = None
    missed: MissedPlan | None = None
    channel: str | None = None  # plan-vs-fact: also post the whole table to this chat channel
    current: bool = False
    targets: Mapping[str, Decimal] = field(default_factory=dict)
    person_field: str | None = None
    group_by: str | None = None
    calendar: str | None = None
    # plan-vs-fact: the day just begun, counting the activities planned in it (not yet done)
    ahead: bool = False


@dataclass
class Figures:
    """A user's (or everyone's) day, as far as the connector saw it."""

    new: int = 0
    won: int = 0
    won_amount: Decimal = Decimal(0)
    lost: int = 0
    open: int = 0
    open_amount: Decimal = Decimal(0)
    tasks: int = 0
    calls: int = 0
    deals: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "new": self.new,
            "won": self.won,
            "won_amount": self.won_amount,
            "lost": self.lost,
            "open": self.open,
            "open_amount": self.open_amount,
            "tasks": self.tasks,
            "calls": self.calls,
        }


def _amount(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def _day(value: Any, tz: Any) -> date | None:
    if not value:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(tz).date() if moment.tzinfo else None


def day_figures(
    snapshots: Iterable[Mapping[str, Any]], tasks: Iterable[Mapping[str, Any]], day: date, tz: Any
) -> dict[str, Figures]:
    """Per responsible user: deals new, won and lost on ``day``, open now, and the tasks and
    calls the connector set for them that day. ``snapshots`` are Deal.snapshot() dicts with
    ``id``; ``tasks`` are CreateTask payloads with the day they were decided (``at``)."""
    figures: dict[str, Figures] = defaultdict(Figures)
    for snap in snapshots:
        user = str(snap.get("responsible_id") or "")
        f = figures[user]
        changed_today = _day(snap.get("updated_at"), tz) == day
        if _day(snap.get("created_at"), tz) == day:
            f.new += 1
        semantic = snap.get("stage_semantic")
        if semantic == "won" and changed_today:
            f.won += 1
            f.won_amount += _amount(snap.get("amount"))
        elif semantic == "lost" and changed_today:
            f.lost += 1
        elif semantic == "open":
            f.open += 1
            f.open_amount += _amount(snap.get("amount"))
    for task in tasks:
        if _day(task.get("at"), tz) != day:
            continue
        f = figures[str(task.get("responsible_id") or "")]
        f.tasks += 1
        if task.get("task_type") == "call":
            f.calls += 1
    figures.pop("", None)
    return dict(figures)
