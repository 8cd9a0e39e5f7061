"""What a rule is, what it sees, and what it decides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from domain import Command, Deal, Event, User
from domain.duplicates import Duplicate
from rules.territories import Territory

if TYPE_CHECKING:
    from rules.calendar import WorkCalendar
    from rules.calendars import CalendarSet
    from rules.deadlines import DeadlineDef
    from rules.org import Org


@dataclass(frozen=True)
class Note:
    """An audit line a rule wants written (no CRM write)."""

    message: str
    kind = "note"

    def describe(self) -> str:
        """One line for the audit."""
        return self.message


@dataclass(frozen=True)
class StartDeadline:
    """Arm the named deadline for the deal (kept in the database, not in the CRM).

    ``rearm``: restart it from now even when one is already running (the deal changed in
    a way the deadline's definition names).
    """

    name: str
    due_at: datetime
    remind_at: datetime | None = None
    responsible_id: str | None = None
    rearm: bool = False
    kind = "start_deadline"

    def describe(self) -> str:
        remind = f", reminder {self.remind_at.isoformat()}" if self.remind_at else ""
        verb = "re-armed" if self.rearm else "started"
        return f"deadline {self.name} {verb}: due {self.due_at.isoformat()}{remind}"


@dataclass(frozen=True)
class CancelDeadline:
    """Stop the named deadline: its done-condition holds or a rule says so."""

    name: str
    reason: str = ""
    kind = "cancel_deadline"

    def describe(self) -> str:
        return f"deadline {self.name} stopped: {self.reason}"


@dataclass(frozen=True)
class RecordBreach:
    """A breached deadline, kept for the penalty report."""

    deadline: str
    due_at: datetime | None
    responsible_id: str | None
    kind = "record_breach"

    def describe(self) -> str:
        due = self.due_at.isoformat() if self.due_at else "?"
        return f"deadline {self.deadline} breached (due {due}), responsible {self.responsible_id}"


@dataclass(frozen=True)
class CountAssignment:
    """Remember that ``rule`` gave a deal to ``user_id`` (round-robin balances on it)."""

    rule: str
    user_id: str
    kind = "count_assignment"

    def describe(self) -> str:
        return f"round-robin count +1 for user {self.user_id}"


@dataclass(frozen=True)
class ExpectStage:
    """The connector moves the deal to ``stage`` itself: its echo from the CRM is no change
    (a stage guard's return must not look like a new move and fire the guards again)."""

    stage: str
    kind = "expect_stage"

    def describe(self) -> str:
        return f"the connector moves the deal to {self.stage}: its echo is not a new move"


LocalAction = Note | StartDeadline | CancelDeadline | RecordBreach | CountAssignment | ExpectStage
Action = Command | LocalAction


@dataclass(frozen=True)
class RuleContext:
    """Everything a rule may look at. ``now`` is passed in: rules never read the clock."""

    deal: Deal
    event: Event
    now: datetime
    triggers: frozenset[str]
    changes: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    users: Mapping[str, User] = field(default_factory=dict)
    territories: Sequence[Territory] = ()
    calendar: WorkCalendar | None = None
    # Open deals per responsible user (from the connector's snapshots), for least-loaded
    # assignment; and how many deals each rule has assigned to each user, for round-robin.
    workload: Mapping[str, int] = field(default_factory=dict)
    assigned: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    deadlines: Mapping[str, DeadlineDef] = field(default_factory=dict)
    # Every configured calendar by name (``calendar`` is the one this rule counts on) and
    # the org chart that targets such as team_lead_of(responsible) are resolved against.
    calendars: CalendarSet | None = None
    org: Org | None = None
    # Other records sharing the deal's phone, e-mail or INN, by key, as the CRM found them
    # for the ``find_duplicates`` steps; None when nobody searched (the CRM cannot, a dry-run).
    duplicates: Mapping[str, Sequence[Duplicate]] | None = None

    @classmethod
    def for_event(
        cls,
        *,
        deal: Deal,
        event: Event,
        now: datetime,
        triggers: frozenset[str],
        changes: Mapping[str, tuple[Any, Any]],
        users: Mapping[str, User],
        territories: Sequence[Territory],
        calendar: WorkCalendar | None,
        workload: Mapping[str, int],
        assigned: Mapping[str, Mapping[str, int]],
        deadlines: Mapping[str, DeadlineDef],
        calendars: CalendarSet | None,
        org: Org | None,
        duplicates: Mapping[str, Sequence[Duplicate]] | None,
    ) -> RuleContext:
        """``RuleContext(...)`` with every field given, as the processing core makes one per
        event, set in one step: the frozen dataclass's own ``__init__`` sets its fields one
        ``object.__setattr__`` at a time, about 6 % of a dry-run's time (bench/dry_run.py)."""
        made = object.__new__(cls)
        made.__dict__.update(
            deal=deal,
            event=event,
            now=now,
            triggers=triggers,
            changes=changes,
            users=users,
            territories=territories,
            calendar=calendar,
            workload=workload,
            assigned=assigned,
            deadlines=deadlines,
            calendars=calendars,
            org=org,
            duplicates=duplicates,
        )
        return made

    def next_holiday(self, days: int = 60) -> dict[str, Any]:
        """The next public holiday within ``days`` ({"date", "name"}; empty values if none)."""
        global _LAST_HOLIDAY
        calendar, now = self.calendar, self.now
        if calendar is None:
            return {"date": None, "name": ""}
        # Every event's templates ask, in time order: the answer holds for the whole local
        # day, so it is kept with that day's bounds (one entry; no zone conversion per ask).
        last = _LAST_HOLIDAY
        if last is not None and last[0] is calendar and last[1] == days and now.tzinfo and last[2] <= now < last[3]:
            return dict(last[4])
        today = now.astimezone(calendar.tz).date()
        found = calendar.holidays_between(today + timedelta(days=1), today + timedelta(days=days))
        answer = {"date": found[0][0], "name": found[0][1]} if found else {"date": None, "name": ""}
        start = datetime.combine(today, time(), tzinfo=calendar.tz)
        end = datetime.combine(today + timedelta(days=1), time(), tzinfo=calendar.tz)
        if now.tzinfo is not None:  # a naive moment is not compared with the zone's bounds
            _LAST_HOLIDAY = (calendar, days, start, end, answer)
        return dict(answer)

    def template_vars(self, results: Mapping[str, Any]) -> dict[str, Any]:
        """The names templates see: the context's own and the step results so far.

        The steps of an event's rules ask one after another with the same context: its own
        names are made once for it (a one-entry memo holding the context, so no other can
        take its place unnoticed; one tuple, read and replaced whole, so threads cannot mix
        one context's names with another's).
        """
        last = _LAST_TEMPLATE_VARS
        own = last[1] if last is not None and last[0] is self else self._own_template_vars()
        return {**own, **results}

    def _own_template_vars(self) -> dict[str, Any]:
        global _LAST_TEMPLATE_VARS
        deal = self.deal
        own = {
            "deal": {
                "id": deal.id,
                "title": deal.title,
                "stage": deal.stage,
                "pipeline": deal.pipeline,
                "responsible_id": deal.responsible_id,
                "amount": deal.amount,
                "currency": deal.currency,
                "created_at": deal.created_at,
                "updated_at": deal.updated_at,
                "address": deal.location.text if deal.location else "",
                "city": deal.location.city if deal.location else "",
                "district": deal.location.district if deal.location else "",
                "fields": deal.fields,
            },
            "event": {
                "kind": str(self.event.kind),
                "source": self.event.source,
                "at": self.event.occurred_at,
                "data": self.event.data,
            },
            "changes": {k: {"before": b, "after": a} for k, (b, a) in self.changes.items()},
            "now": self.now,
            "holiday": self.next_holiday(),
        }
        _LAST_TEMPLATE_VARS = (self, own)
        return own


_LAST_TEMPLATE_VARS: tuple[RuleContext, dict[str, Any]] | None = None
# (calendar, days, local day's start, next day's start, answer): RuleContext.next_holiday's.
_LAST_HOLIDAY: tuple[WorkCalendar, int, datetime, datetime, dict[str, Any]] | None = None

Condition = Callable[[RuleContext], bool]


@dataclass(frozen=True)
class Planned:
    """An action with its stable slot name inside the rule (part of its idempotency key)."""

    slot: str
    action: Action


@dataclass(frozen=True)
class StepWrite:
    """A command a step may ask for: in the rule's own CRM, or in the one its ``param`` names."""

    command: type[Command]
    crm: str | None = None
    param: str | None = None


class ActionSpec(ABC):
    """One configured step of a rule's ``do`` list."""

    name: str = ""

    @abstractmethod
    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        """The actions this step takes; it may leave values in ``results`` for later steps."""

    @abstractmethod
    def writes(self) -> list[StepWrite]:
        """Every command ``plan`` may return, so the config can be checked against what each
        CRM carries out before anything runs."""

    def fixed_slots(self, slot: str) -> tuple[str, ...] | None:
        """Every slot ``plan`` can ever use, when they are known without the context (a step
        that plans at most these, and nothing but keyed decisions); None: not known.

        A rule fired once per deal whose steps' every slot is decided already would only be
        planned to be dropped: the processing core skips planning it."""
        return None


@dataclass(frozen=True)
class Rule:
    """A configured regulation: when ``triggers`` fire and ``condition`` holds, do ``actions``."""

    name: str
    crm: str
    triggers: frozenset[str]
    condition: Condition
    actions: Sequence[ActionSpec]
    once_per: str = "deal"
    enabled: bool = True
    schedule: str | None = None  # cron, in the calendar's zone, for rules triggered by `schedule`
    calendar: str | None = None  # a calendar by name; None: the responsible's team's, else the default


@dataclass(frozen=True)
class Decision:
    """One action a rule decided on, with the key that makes carrying it out idempotent."""

    rule: str
    key: str
    action: Action
    triggers: frozenset[str]

    @classmethod
    def of(cls, rule: str, key: str, action: Action, triggers: frozenset[str]) -> Decision:
        """``Decision(...)`` set in one step (one per planned action of every event: the
        frozen dataclass's ``__init__`` sets each field by ``object.__setattr__``)."""
        made = object.__new__(cls)
        made.__dict__.update(rule=rule, key=key, action=action, triggers=triggers)
        return made
