"""Dry-run: replay deal history through the rules at the moments it happened, writing nothing.

The replay keeps, in memory, what the worker keeps in the database: the last snapshot of
each deal, its running deadlines, the decisions already taken (so ``once_per`` holds) and
round-robin counts. Deadlines fire at their own moments between events, so reminders and
breaches show up as they would have. Nothing reaches a CRM or the database.
"""

from __future__ import annotations

import gc
import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from adapters.contracts import CrmAdapter, DealSource
from adapters.registry import build_adapter
from connector.config import Config
from connector.dryrun.scheduled import RecurringReplay
from connector.processing import Processor
from domain import Deal, Event, EventKind, EventSource
from domain.commands import CloseDeal, UpdateDeal
from domain.keys import deadline_timer_key, replay_key, schedule_key, schedule_slot, timer_event_key
from domain.statuses import TIMER_RUNNING, DeadlinePhase, TimerStatus
from rules.calendar import WorkCalendar
from rules.deadlines import OpenDeadline
from rules.model import CancelDeadline, CountAssignment, Decision, RecordBreach, Rule, StartDeadline
from rules.penalties import Breach

# A deal's own writes come back as a change of the deal (the CRM's webhook), which the
# rules see as the worker would; this many in a row at most, so rules that keep rewriting
# each other's values cannot loop.
FOLLOW_UPS = 5
RULE_ERROR = "rule_error"
_ATTRIBUTES = ("title", "stage", "stage_semantic", "pipeline", "responsible_id", "amount")


@dataclass(frozen=True)
class HistoryItem:
    """One moment of a deal's history: the event, the deal as it was then, and the event's
    own data (a 1C document's figures)."""

    at: datetime
    kind: EventKind
    deal: Deal
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """One thing the rules would have done (or a rule that failed: action ``rule_error``)."""

    at: datetime
    crm: str
    deal_id: str
    rule: str
    trigger: str
    action: str
    detail: str
    key: str = ""  # the decision's key, as the worker would store it

    @classmethod
    def of(
        cls, at: datetime, crm: str, deal_id: str, rule: str, trigger: str, action: str, detail: str, key: str
    ) -> Outcome:
        """``Outcome(...)`` set in one step (one per would-be action: the frozen dataclass's
        ``__init__`` sets each field by ``object.__setattr__``)."""
        made = object.__new__(cls)
        made.__dict__.update(
            at=at, crm=crm, deal_id=deal_id, rule=rule, trigger=trigger, action=action, detail=detail, key=key
        )
        return made


@dataclass
class _Timer:
    name: str
    due_at: datetime
    fire_at: datetime
    status: str
    responsible_id: str | None
    rule: str


@dataclass
class ReplayResult:
    """The replay's outcomes and its counts for the summary."""

    outcomes: list[Outcome] = field(default_factory=list)
    events: int = 0
    deadline_events: int = 0
    schedule_events: int = 0
    recurring_tasks: int = 0  # tasks recurring work would create (connector.dryrun.scheduled)
    follow_ups: int = 0  # changes of deals by the rules' own writes, seen again by the rules
    by_rule: Counter[tuple[str, str]] = field(default_factory=Counter)
    breaches: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, error) -> events
    not_simulated: list[str] = field(default_factory=list)
    tz: tzinfo | None = None  # the calendar's zone: moments are shown in it
    breach_records: list[Breach] = field(default_factory=list)


class Replay:
    """Replays history items in time order through the worker's processing core
    (``connector.processing``); ``run`` returns every would-be action.

    It keeps in memory what the worker keeps in the database (snapshots, deadlines, the
    decisions taken, round-robin counts) and what the CRM keeps: each decided write to a
    deal (an assignment, a field, a stage, a close) is applied to the deal as its CRM would
    (``DealSource.deal_after``) and comes back as a change, so later events and rules see
    it. Deadlines and scheduled rules fire at their own moments between events.
    """

    def __init__(
        self, config: Config, calendar: WorkCalendar, *, adapters: Mapping[str, CrmAdapter] | None = None
    ) -> None:
        self.config = config
        self.calendar = calendar
        built = adapters if adapters is not None else {n: build_adapter(n, s) for n, s in config.crms.items()}
        self._sources: dict[str, DealSource] = {n: a for n, a in built.items() if isinstance(a, DealSource)}
        self.processor = Processor(
            config, calendar, bookkeeping={n: a.bookkeeping_fields for n, a in self._sources.items()}
        )
        self._snapshots: dict[tuple[str, str], dict[str, Any]] = {}
        self._snapped: dict[tuple[str, str], Deal] = {}  # the deal each snapshot was taken of
        self._deals: dict[tuple[str, str], Deal] = {}  # each deal as its CRM keeps it now
        self._recorded: dict[tuple[str, str], Deal] = {}  # each deal as history last showed it
        self._written: dict[tuple[str, str], dict[str, Any]] = {}  # what our writes set and still stands
        self._timers: dict[tuple[str, str], dict[str, _Timer]] = {}
        self._running: dict[tuple[str, str], tuple[OpenDeadline, ...]] = {}  # from _timers, dropped on change
        self._due: list[tuple[datetime, int, tuple[str, str], str]] = []  # heap of (fire_at, seq, deal, name)
        self._seq = 0
        self._decided: set[str] = set()
        self._assigned: dict[str, dict[str, int]] = {}
        self._trigger_text: dict[frozenset[str], str] = {}
        # Open deals per responsible user, kept only for CRMs whose rules assign by workload.
        self._groups = {crm: self.processor.workload_group(crm) for crm in self._sources}
        self._open: dict[str, Counter[str]] = {crm: Counter() for crm, group in self._groups.items() if group}
        self._counted: dict[tuple[str, str], str | None] = {}
        self._schedules: list[tuple[datetime, int, Rule, CronTrigger]] = []
        self._recurring = RecurringReplay(config, calendar)
        self.result = ReplayResult(tz=calendar.tz)

    def run(
        self,
        items: Iterable[HistoryItem],
        *,
        until: datetime | None = None,
        progress: Callable[[int], None] | None = None,
        since: datetime | None = None,
    ) -> ReplayResult:
        """Replay ``items`` (sorted by time) and the deadlines and schedules they lead to, up to
        ``until``; schedules and recurring work run from ``since`` (else the first item)."""
        last: datetime | None = None
        if since is not None:
            self._start_schedules(since)
        with _fewer_collections():
            for item in items:
                if last is None and since is None:
                    self._start_schedules(item.at)
                self._fire_due(item.at)
                self._event(item.deal, item.kind, item.at, dict(item.data), recorded=True)
                self.result.events += 1
                last = item.at
                if progress is not None:
                    progress(1)
            end = until or last
            if end is not None:
                self._fire_due(end)
        plain = [r.name for r in self.config.reports if not r.indicators]
        planned = [r.name for r in self.config.reports if r.indicators]
        if plain:
            self.result.not_simulated.append(
                f"reports ({', '.join(plain)}): their figures come from the connector's own records of past days"
            )
        if planned:
            self.result.not_simulated.append(
                f"plan-vs-fact reports ({', '.join(planned)}): their figures are read from the CRM when they "
                "run, against the plans loaded into the database"
            )
        return self.result

    # --- the processing core's memory ------------------------------------------------------

    def snapshot(self, crm: str, deal_id: str) -> dict[str, Any] | None:
        return self._snapshots.get((crm, deal_id))

    def running_deadlines(self, crm: str, deal_id: str) -> list[OpenDeadline]:
        # Asked on every event of the deal; its timers change far less often (kept until then).
        known = self._running.get((crm, deal_id))
        if known is not None:
            return list(known)
        timers = self._timers.get((crm, deal_id))
        running = (
            tuple(OpenDeadline(t.name, t.due_at, t.status) for t in timers.values() if t.status in TIMER_RUNNING)
            if timers
            else ()
        )
        self._running[(crm, deal_id)] = running
        return list(running)

    def deadline(self, crm: str, deal_id: str, name: str) -> tuple[str, datetime] | None:
        timer = self._timers.get((crm, deal_id), {}).get(name)
        return (timer.status, timer.due_at) if timer is not None else None

    def assignments(self) -> Mapping[str, Mapping[str, int]]:
        return self._assigned

    def decided(self, keys: Sequence[str]) -> bool:
        return self._decided.issuperset(keys)

    # --- deadlines and schedules between events --------------------------------------------

    def _start_schedules(self, start: datetime) -> None:
        self._recurring.start(start)
        calendars = self.config.calendars
        for rule in self.config.rules:
            if rule.schedule and rule.enabled and rule.crm in self._sources:
                zone = calendars.get(rule.calendar).tz if calendars is not None else self.calendar.tz
                trigger = CronTrigger.from_crontab(rule.schedule, timezone=zone)
                first = trigger.get_next_fire_time(None, start)
                if first is not None:
                    self._seq += 1
                    heapq.heappush(self._schedules, (first, self._seq, rule, trigger))

    def _fire_due(self, now: datetime) -> None:
        """Recurring work, scheduled runs and deadlines due by ``now``, merged in time order
        (at one moment: recurring work, which belongs to no deal, then scheduled runs, then
        deadlines)."""
        recurring, due, schedules = self._recurring, self._due, self._schedules
        while True:
            work_at = recurring.next_at()
            timer_at = due[0][0] if due else None
            run_at = schedules[0][0] if schedules else None
            if work_at is not None and work_at <= now and _first(work_at, run_at, timer_at):
                self._fire_recurring()
            elif run_at is not None and run_at <= now and (timer_at is None or run_at < timer_at):
                self._run_schedule()
            elif timer_at is not None and timer_at <= now:
                self._fire_timer()
            else:
                return

    def _fire_recurring(self) -> None:
        for done in self._recurring.fire_next():
            self.result.recurring_tasks += done.kind != "note"
            self.result.by_rule[(done.rule, done.kind)] += 1
            self.result.outcomes.append(Outcome(done.at, done.crm, "", done.rule, "schedule", done.kind, done.detail))

    def _fire_timer(self) -> None:
        fire_at, _, key, name = heapq.heappop(self._due)
        timer = self._timers[key].get(name)
        if timer is None or timer.fire_at != fire_at or timer.status not in TIMER_RUNNING:
            return  # superseded: met, cancelled or re-armed since
        reminder = timer.status == TimerStatus.OPEN and timer.fire_at < timer.due_at
        phase = DeadlinePhase.REMINDER if reminder else DeadlinePhase.BREACHED
        if reminder:
            timer.status, timer.fire_at = TimerStatus.REMINDED, timer.due_at
            self._schedule(key, timer)
        else:
            timer.status = TimerStatus.BREACHED
        self._running.pop(key, None)
        data = {
            "deadline": name,
            "phase": str(phase),
            "due_at": timer.due_at.isoformat(),
            "responsible_id": timer.responsible_id,
            "rule": timer.rule,
        }
        self.result.deadline_events += 1
        # Keyed as the deadline scan keys it, so decisions once per event match the live ones.
        event_key = timer_event_key(deadline_timer_key(key[0], key[1], name), str(phase), timer.due_at)
        self._event(self._deals[key], EventKind.TIMER_DUE, fire_at, data, dedup_key=event_key)

    def _run_schedule(self) -> None:
        """One run of a scheduled rule: an event for every deal of its CRM known by then."""
        at, _, rule, trigger = heapq.heappop(self._schedules)
        slot = schedule_slot(at)
        for (crm, deal_id), deal in list(self._deals.items()):
            if crm != rule.crm:
                continue
            self.result.schedule_events += 1
            data = {"schedule": rule.name, "slot": slot}
            self._event(deal, EventKind.SCHEDULE, at, data, dedup_key=schedule_key(rule.name, slot, deal_id))
        following = trigger.get_next_fire_time(at, at)
        if following is not None:
            self._seq += 1
            heapq.heappush(self._schedules, (following, self._seq, rule, trigger))

    def _schedule(self, key: tuple[str, str], timer: _Timer) -> None:
        self._seq += 1
        heapq.heappush(self._due, (timer.fire_at, self._seq, key, timer.name))

    # --- one event -------------------------------------------------------------------------

    def _event(
        self,
        deal: Deal,
        kind: EventKind,
        at: datetime,
        data: dict[str, Any],
        *,
        recorded: bool = False,
        dedup_key: str | None = None,
    ) -> None:
        key = (deal.crm, deal.id)
        if recorded:
            deal = self._with_our_writes(key, deal)
        for round_ in range(FOLLOW_UPS + 1):
            written = self._process(deal, kind, at, data, dedup_key)
            if written is None or round_ == FOLLOW_UPS:
                return
            # The CRM tells of the change our writes made: the rules see it as an update.
            deal, kind, data = written, EventKind.DEAL_UPDATED, {}
            dedup_key = replay_key(deal.id, at, kind, f"write{round_}")
            self.result.follow_ups += 1

    def _process(
        self, deal: Deal, kind: EventKind, at: datetime, data: dict[str, Any], dedup_key: str | None
    ) -> Deal | None:
        """Run the core for one event; the deal as its writes left it, when they changed it."""
        key = (deal.crm, deal.id)
        before = self._snapshots.get(key)
        # An event on the deal as last seen (a deadline, a scheduled run) reuses its snapshot.
        current = before if before is not None and self._snapped.get(key) is deal else deal.snapshot()
        event = Event.of(
            crm=deal.crm,
            kind=kind,
            deal_id=deal.id,
            occurred_at=at,
            dedup_key=dedup_key or replay_key(deal.id, at, kind, data.get("deadline", "")),
            source=EventSource.REPLAY,
            data=data,
        )
        open_deals = self._open.get(deal.crm)
        if open_deals is not None:
            self._count_open(key, deal, open_deals)
        processed = self.processor.process(event, deal, self, now=at, workload=open_deals, current=current)
        after = deal
        for decision in processed.decisions:
            after = self._apply(decision, deal, after, at)
        for error in processed.errors:
            self.result.errors[(error.rule, error.error)] += 1
            self.result.by_rule[(error.rule, RULE_ERROR)] += 1
            self.result.outcomes.append(
                Outcome(
                    at, deal.crm, deal.id, error.rule, self._trigger(frozenset({str(kind)})), RULE_ERROR, error.error
                )
            )
        self._snapshots[key] = processed.snapshot
        self._snapped[key] = self._deals[key] = deal
        if after is deal:
            return None
        self._deals[key] = after
        if open_deals is not None:
            self._count_open(key, after, open_deals)
        written = self._written.setdefault(key, {})
        for name in _ATTRIBUTES:
            if getattr(after, name) != getattr(deal, name):
                written[name] = getattr(after, name)
        for name, value in after.fields.items():
            if deal.fields.get(name) != value:
                written["fields." + name] = value
        return after

    def _with_our_writes(self, key: tuple[str, str], deal: Deal) -> Deal:
        """A recorded state of the deal, with what our writes set and nobody changed since.

        History recorded before the connector ran does not hold our writes: a value we
        wrote stands until the history shows a change of that value of its own.
        """
        recorded_before = self._recorded.get(key)
        self._recorded[key] = deal
        written = self._written.get(key)
        if not written or recorded_before is None:
            return deal
        changed: dict[str, Any] = {}
        fields: dict[str, Any] = {}
        for name, value in list(written.items()):
            if name.startswith("fields."):
                field_name = name[7:]
                if deal.fields.get(field_name) != recorded_before.fields.get(field_name):
                    del written[name]  # changed in the CRM since: that change wins
                elif deal.fields.get(field_name) != value:
                    fields[field_name] = value
            elif getattr(deal, name) != getattr(recorded_before, name):
                del written[name]
            elif getattr(deal, name) != value:
                changed[name] = value
        if not changed and not fields:
            return deal
        return _amended(deal, {**deal.fields, **fields} if fields else deal.fields, changed)

    def _count_open(self, key: tuple[str, str], deal: Deal, counts: Counter[str]) -> None:
        """Keep the open deals per responsible user in step with the deal's latest state."""
        owner = deal.responsible_id if deal.stage_semantic == "open" else None
        earlier = self._counted.get(key)
        if earlier == owner:
            return
        if earlier is not None:
            counts[earlier] -= 1
        if owner is not None:
            counts[owner] += 1
        self._counted[key] = owner

    def _trigger(self, triggers: frozenset[str]) -> str:
        text = self._trigger_text.get(triggers)
        if text is None:  # a handful of distinct trigger sets, each sorted and joined once
            text = self._trigger_text[triggers] = ",".join(sorted(triggers))
        return text

    def _apply(self, decision: Decision, deal: Deal, after: Deal, at: datetime) -> Deal:
        """Carry out one decision in memory; the deal as its CRM would keep it after."""
        if decision.key in self._decided:
            return after
        self._decided.add(decision.key)
        action = decision.action
        key = (deal.crm, deal.id)
        detail = None
        if isinstance(action, StartDeadline):
            timers = self._timers.setdefault(key, {})
            running = timers.get(action.name)
            if running is not None and running.status in TIMER_RUNNING and not action.rearm:
                detail = f"deadline {action.name} already running: due {running.due_at.isoformat()}"
            else:
                # In UTC, as the database gives them back to the worker (keys and texts show them).
                due = action.due_at.astimezone(UTC)
                fire = min(action.remind_at, due).astimezone(UTC) if action.remind_at else due
                timer = _Timer(action.name, due, fire, TimerStatus.OPEN, action.responsible_id, decision.rule)
                timers[action.name] = timer
                self._running.pop(key, None)
                self._schedule(key, timer)
        elif isinstance(action, CancelDeadline):
            stopping = self._timers.get(key, {}).get(action.name)
            if stopping is not None and stopping.status in TIMER_RUNNING:
                stopping.status = TimerStatus.DONE if action.reason == "done" else TimerStatus.CANCELLED
                self._running.pop(key, None)
        elif isinstance(action, RecordBreach):
            self.result.breaches[action.deadline] += 1
            self.result.breach_records.append(
                Breach(deal.crm, deal.id, action.deadline, action.responsible_id, action.due_at or at, decision.rule)
            )
        elif isinstance(action, CountAssignment):
            counts = self._assigned.setdefault(action.rule, {})
            counts[action.user_id] = counts.get(action.user_id, 0) + 1
        elif isinstance(action, (UpdateDeal, CloseDeal)):
            source = self._sources.get(deal.crm)
            if source is not None and action.deal_id == deal.id:
                after = source.deal_after(after, action)
        self.result.by_rule[(decision.rule, action.kind)] += 1
        trigger = self._trigger(decision.triggers)
        self.result.outcomes.append(
            Outcome.of(
                at, deal.crm, deal.id, decision.rule, trigger, action.kind, detail or action.describe(), decision.key
            )
        )
        return after


def _first(at: datetime, *others: datetime | None) -> bool:
    """``at`` is no later than any of ``others`` that exist."""
    return all(other is None or at <= other for other in others)


def _amended(deal: Deal, fields: dict[str, Any], changed: Mapping[str, Any]) -> Deal:
    """A copy of ``deal`` with other ``fields`` and attributes. Measured: ``dataclasses.replace``
    (which re-runs ``__init__``) cost 4 % of a replay, once for each recorded state of a deal
    the rules wrote to."""
    copy = object.__new__(Deal)
    copy.__dict__.update(deal.__dict__)
    copy.__dict__.update(changed)
    copy.__dict__["fields"] = fields
    return copy


# Collection thresholds while a replay runs (Python's default is 700, 10, 10).
_REPLAY_GC_THRESHOLD = (100_000, 50, 1000)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often for the duration, then as before.

    A replay keeps what it makes (outcomes, snapshots, decided keys: millions of objects
    for a year) and makes almost no reference cycles, so the collector's default pace only
    walks the same live objects again and again: at the default thresholds a
    100,000-event replay takes about 1.4 times as long (bench/dry_run.py). It still runs
    (cycles are still freed), just rarely; a collector switched off or set to collect even
    less often is left as it is.
    """
    before = gc.get_threshold()
    if before[0] == 0:  # collection switched off by threshold: not ours to turn on
        yield
        return
    gc.set_threshold(*(max(old, new) for old, new in zip(before, _REPLAY_GC_THRESHOLD, strict=True)))
    try:
        yield
    finally:
        gc.set_threshold(*before)


def sorted_items(items: Iterable[HistoryItem]) -> Iterator[HistoryItem]:
    """History in time order (stable for equal moments)."""
    return iter(sorted(items, key=lambda i: i.at))
