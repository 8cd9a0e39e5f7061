"""Dry-run: replay deal history through the rules at the moments it happened, writing nothing.

The replay keeps, in memory, what the worker keeps in the database: the last snapshot of
each deal, its running deadlines, the decisions already taken (so ``once_per`` holds) and
round-robin counts. Deadlines fire at their own moments between events, so reminders and
breaches show up as they would have. Nothing reaches a CRM or the database.
"""

from __future__ import annotations

import gc
import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.contracts import DealSource
from adapters.registry import adapter_class
from connector.config import Config
from domain import Deal, Event, EventKind, EventSource
from domain.keys import deadline_decision_key, replay_key
from domain.statuses import TIMER_RUNNING, DeadlinePhase, TimerStatus
from rules.calendar import WorkCalendar
from rules.changes import diff, triggers_for
from rules.deadlines import OpenDeadline
from rules.deadlines import review as review_deadlines
from rules.engine import evaluate, may_fire
from rules.model import CancelDeadline, CountAssignment, Decision, RecordBreach, Rule, RuleContext, StartDeadline


@dataclass(frozen=True)
class HistoryItem:
    """One moment of a deal's history: the event and the deal as it was then."""

    at: datetime
    kind: EventKind
    deal: Deal


@dataclass(frozen=True)
class Outcome:
    """One thing the rules would have done."""

    at: datetime
    crm: str
    deal_id: str
    rule: str
    trigger: str
    action: str
    detail: str


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
    by_rule: Counter[tuple[str, str]] = field(default_factory=Counter)
    breaches: Counter[str] = field(default_factory=Counter)


class Replay:
    """Replays history items in time order; ``run`` returns every would-be action."""

    def __init__(self, config: Config, calendar: WorkCalendar) -> None:
        self.config = config
        self.calendar = calendar
        # What each CRM stamps on every change: a change of its own to no rule.
        self._bookkeeping: dict[str, frozenset[str]] = {}
        for name, settings in config.crms.items():
            cls = adapter_class(settings)
            if issubclass(cls, DealSource):
                self._bookkeeping[name] = cls.bookkeeping_fields
        self._snapshots: dict[tuple[str, str], dict[str, Any]] = {}
        self._deals: dict[tuple[str, str], Deal] = {}
        self._timers: dict[tuple[str, str], dict[str, _Timer]] = defaultdict(dict)
        self._due: list[tuple[datetime, int, tuple[str, str], str]] = []  # heap of (fire_at, seq, deal, name)
        self._seq = 0
        self._decided: set[str] = set()
        self._assigned: dict[str, dict[str, int]] = defaultdict(dict)
        self._trigger_text: dict[frozenset[str], str] = {}
        self._rule_index: dict[tuple[str, frozenset[str]], list[Rule]] = {}
        self.result = ReplayResult()

    def run(
        self,
        items: Iterable[HistoryItem],
        *,
        until: datetime | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ReplayResult:
        """Replay ``items`` (sorted by time) and the deadlines they start, up to ``until``."""
        last: datetime | None = None
        with _fewer_collections():
            for item in items:
                self._fire_timers(item.at)
                self._process(item.deal, item.kind, item.at, data={})
                self.result.events += 1
                last = item.at
                if progress is not None:
                    progress(1)
            end = until or last
            if end is not None:
                self._fire_timers(end)
        return self.result

    # --- deadlines between events --------------------------------------------------------

    def _fire_timers(self, now: datetime) -> None:
        while self._due and self._due[0][0] <= now:
            fire_at, _, key, name = heapq.heappop(self._due)
            timer = self._timers[key].get(name)
            if timer is None or timer.fire_at != fire_at or timer.status not in TIMER_RUNNING:
                continue  # superseded: met, cancelled or re-armed since
            reminder = timer.status == TimerStatus.OPEN and timer.fire_at < timer.due_at
            phase = DeadlinePhase.REMINDER if reminder else DeadlinePhase.BREACHED
            if reminder:
                timer.status, timer.fire_at = TimerStatus.REMINDED, timer.due_at
                self._schedule(key, timer)
            else:
                timer.status = TimerStatus.BREACHED
            data = {
                "deadline": name,
                "phase": phase,
                "due_at": timer.due_at.isoformat(),
                "responsible_id": timer.responsible_id,
                "rule": timer.rule,
            }
            self.result.deadline_events += 1
            self._process(self._deals[key], EventKind.TIMER_DUE, fire_at, data=data)

    def _schedule(self, key: tuple[str, str], timer: _Timer) -> None:
        self._seq += 1
        heapq.heappush(self._due, (timer.fire_at, self._seq, key, timer.name))

    # --- one event -----------------------------------------------------------------------

    def _process(self, deal: Deal, kind: EventKind, at: datetime, data: dict[str, Any]) -> None:
        key = (deal.crm, deal.id)
        before = self._snapshots.get(key)
        # A deadline event replays the deal as last seen: its snapshot is the one taken then
        # (deals are frozen and nothing here changes their fields).
        current = before if before is not None and self._deals.get(key) is deal else deal.snapshot()
        changes = (
            diff(before, current, self._bookkeeping.get(deal.crm, frozenset())) if kind != EventKind.TIMER_DUE else {}
        )
        event = Event(
            crm=deal.crm,
            kind=kind,
            deal_id=deal.id,
            occurred_at=at,
            dedup_key=replay_key(deal.id, at, kind, data.get("deadline", "")),
            source=EventSource.REPLAY,
            data=data,
        )
        ctx = RuleContext(
            deal=deal,
            event=event,
            now=at,
            triggers=triggers_for(kind, deal, before, changes, data),
            changes=changes,
            territories=self.config.territories,
            calendar=self.calendar,
            calendars=self.config.calendars,
            org=self.config.org,
            deadlines=self.config.deadlines,
            assigned=self._assigned,
        )
        timers = self._timers[key]
        running = [OpenDeadline(t.name, t.due_at, t.status) for t in timers.values() if t.status in TIMER_RUNNING]
        reviewed = review_deadlines(self.config.deadlines, running, ctx)
        for action in reviewed:
            self._apply(
                Decision(
                    "deadline",
                    deadline_decision_key(deal.crm, deal.id, action.name, action.kind, event.dedup_key),
                    action,
                    ctx.triggers,
                ),
                deal,
                at,
            )
        stopped = {a.name for a in reviewed if isinstance(a, CancelDeadline)}
        if kind != EventKind.TIMER_DUE or data.get("deadline") not in stopped:
            for decision in evaluate(self._rules_for(deal.crm, ctx.triggers), ctx):
                self._apply(decision, deal, at)
        self._snapshots[key] = current
        self._deals[key] = deal

    def _rules_for(self, crm: str, triggers: frozenset[str]) -> list[Rule]:
        """The configured rules, in order, that may fire for this CRM and these triggers
        (``may_fire``, evaluate()'s own first test): a replay asks with only a handful of
        trigger sets and need not test every rule on every event."""
        rules = self._rule_index.get((crm, triggers))
        if rules is None:
            rules = self._rule_index[(crm, triggers)] = [r for r in self.config.rules if may_fire(r, crm, triggers)]
        return rules

    def _apply(self, decision: Decision, deal: Deal, at: datetime) -> None:
        if decision.key in self._decided:
            return
        self._decided.add(decision.key)
        action = decision.action
        key = (deal.crm, deal.id)
        if isinstance(action, StartDeadline):
            running = self._timers[key].get(action.name)
            if running is not None and running.status in TIMER_RUNNING and not action.rearm:
                return
            fire = min(action.remind_at, action.due_at) if action.remind_at else action.due_at
            timer = _Timer(action.name, action.due_at, fire, TimerStatus.OPEN, action.responsible_id, decision.rule)
            self._timers[key][action.name] = timer
            self._schedule(key, timer)
        elif isinstance(action, CancelDeadline):
            stopping = self._timers[key].get(action.name)
            if stopping is not None and stopping.status in TIMER_RUNNING:
                stopping.status = TimerStatus.DONE if action.reason == "done" else TimerStatus.CANCELLED
        elif isinstance(action, RecordBreach):
            self.result.breaches[action.deadline] += 1
        elif isinstance(action, CountAssignment):
            counts = self._assigned[action.rule]
            counts[action.user_id] = counts.get(action.user_id, 0) + 1
        text = action.describe()
        self.result.by_rule[(decision.rule, action.kind)] += 1
        trigger = self._trigger_text.get(decision.triggers)
        if trigger is None:  # a handful of distinct trigger sets, each sorted and joined once
            trigger = self._trigger_text[decision.triggers] = ",".join(sorted(decision.triggers))
        self.result.outcomes.append(Outcome(at, deal.crm, deal.id, decision.rule, trigger, action.kind, text))


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
