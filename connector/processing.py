"""The processing core: one event, the deal as it is now and what was kept about it, in;
the decisions of the deadlines and the rules, out. The worker and the dry-run both call it.

The worker backs ``DealMemory`` with the database and reads the deal from its CRM; the
dry-run backs it with dictionaries and a deal kept in memory. Both then carry out the
decisions their own way (the outbox and the timers table; an outcome list and in-memory
timers), so what is decided, and under which keys, is the same in both.

A rule whose condition or template fails is recorded against that rule and event
(``RuleError``); the event's other rules still run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from connector.config import Config
from domain import Deal, Event, EventKind, User
from domain.duplicates import Duplicate
from domain.keys import deadline_decision_key
from domain.statuses import TimerStatus
from rules.actions import AssignSpec
from rules.calendar import WorkCalendar
from rules.changes import diff, triggers_for
from rules.deadlines import OpenDeadline
from rules.deadlines import review as review_deadlines
from rules.engine import evaluate_matching, may_fire
from rules.model import CancelDeadline, Decision, ExpectStage, Rule, RuleContext

# The rule name a deadline's own decisions (met, cancelled, re-armed) are recorded under.
DEADLINE_RULE = "deadline"


@dataclass(frozen=True)
class RuleError:
    """A rule that could not be evaluated for one event (a template naming an unknown
    attribute, a condition that fails on this deal's values)."""

    rule: str
    error: str


@dataclass
class Processed:
    """What the core decided for one event."""

    decisions: list[Decision] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    snapshot: dict[str, Any] = field(default_factory=dict)  # the deal as processed: keep it
    note: str | None = None  # why the rules did not run (a deadline that is no longer due)


class DealMemory(Protocol):
    """What was kept about a deal: the database live, dictionaries in the dry-run."""

    def snapshot(self, crm: str, deal_id: str) -> dict[str, Any] | None:
        """The deal as last processed."""

    def running_deadlines(self, crm: str, deal_id: str) -> list[OpenDeadline]:
        """Its deadlines still running."""

    def deadline(self, crm: str, deal_id: str, name: str) -> tuple[str, datetime] | None:
        """The status and due moment of its deadline ``name``, if it ever started."""

    def assignments(self) -> Mapping[str, Mapping[str, int]]:
        """How many deals each rule gave each user (round robin)."""

    def decided(self, keys: Sequence[str]) -> bool:
        """Whether every one of these decision keys was decided before (its write queued,
        its local effect applied): the same test that drops a decision taken twice."""


class Processor:
    """Runs the configured deadlines and rules for one event at a time."""

    def __init__(
        self,
        config: Config,
        calendar: WorkCalendar | None,
        *,
        bookkeeping: Mapping[str, frozenset[str]] | None = None,
        carries_previous: Iterable[str] = (),
    ) -> None:
        self.config = config
        self.calendar = calendar
        # What each CRM stamps on every change: a change of its own to no rule.
        self.bookkeeping = dict(bookkeeping or {})
        # The CRMs whose webhooks tell the previous values (used when no snapshot is kept).
        self.carries_previous = frozenset(carries_previous)
        self._rule_index: dict[tuple[str, frozenset[str]], list[Rule]] = {}

    def workload_group(self, crm: str) -> list[str]:
        """The users whose open deals least-loaded assignment weighs, for one CRM's rules."""
        return sorted(
            {
                u
                for rule in self.config.rules
                if rule.crm == crm
                for step in rule.actions
                if isinstance(step, AssignSpec) and step.strategy == "least_loaded"
                for u in step.group
            }
        )

    def rules_for(self, crm: str, triggers: frozenset[str]) -> list[Rule]:
        """The configured rules, in order, that may fire for this CRM and these triggers
        (``may_fire``, evaluate()'s own first test): an event is asked with only a handful
        of trigger sets, so not every rule is tested on every event."""
        rules = self._rule_index.get((crm, triggers))
        if rules is None:
            rules = self._rule_index[(crm, triggers)] = [r for r in self.config.rules if may_fire(r, crm, triggers)]
        return rules

    def process(
        self,
        event: Event,
        deal: Deal,
        memory: DealMemory,
        *,
        now: datetime,
        users: Mapping[str, User] | None = None,
        workload: Mapping[str, int] | None = None,
        current: dict[str, Any] | None = None,
        duplicates: Mapping[str, Sequence[Duplicate]] | None = None,
    ) -> Processed:
        """Decide what ``event`` on ``deal`` calls for at ``now``. ``current`` is the deal's
        snapshot when the caller has it already."""
        crm = deal.crm
        before = memory.snapshot(crm, deal.id)
        if current is None:
            current = deal.snapshot()
        changes = diff(before, current, self.bookkeeping.get(crm, frozenset())) if before is not current else {}
        previous = event.previous
        if previous and before is None and crm in self.carries_previous:
            # The CRM told us what changed: use it when we have no snapshot.
            changes = {k: (v, current.get(k, deal.fields.get(k))) for k, v in previous.items()}
        ctx = RuleContext.for_event(
            deal=deal,
            event=event,
            now=now,
            triggers=triggers_for(event.kind, deal, before, changes, event.data),
            changes=changes,
            users=users or {},
            territories=self.config.territories,
            calendar=self.calendar,
            calendars=self.config.calendars,
            org=self.config.org,
            workload=workload or {},
            deadlines=self.config.deadlines,
            assigned=memory.assignments(),
            duplicates=duplicates,
        )
        out = Processed(snapshot=current)
        reviewed = review_deadlines(self.config.deadlines, memory.running_deadlines(crm, deal.id), ctx)
        for action in reviewed:
            key = deadline_decision_key(crm, deal.id, action.name, action.kind, event.dedup_key)
            out.decisions.append(Decision(DEADLINE_RULE, key, action, ctx.triggers))
        if event.kind == EventKind.TIMER_DUE:
            stopped = {a.name for a in reviewed if isinstance(a, CancelDeadline)}
            if not _still_due(memory, deal, event.data, stopped):
                out.note = (
                    f"deadline {event.data.get('deadline')} {event.data.get('phase')} not acted on: "
                    "met, cancelled or re-armed since"
                )
                return out
        rules = self.rules_for(crm, ctx.triggers)
        try:
            out.decisions.extend(evaluate_matching(rules, ctx, memory.decided))
        except Exception:
            # Rule by rule, to record the broken one(s) and still run every other rule (rare:
            # the common path evaluates them in one go).
            for rule in rules:
                try:
                    out.decisions.extend(evaluate_matching((rule,), ctx, memory.decided))
                except Exception as exc:
                    out.errors.append(RuleError(rule.name, f"{type(exc).__name__}: {exc}"))
        for decision in out.decisions:
            if isinstance(decision.action, ExpectStage):
                # The stage the connector sets is the one it remembers: the CRM's echo of that
                # move (or the next reading of the deal) is then no change.
                out.snapshot = {**out.snapshot, "stage": decision.action.stage}
        return out


def _still_due(memory: DealMemory, deal: Deal, data: Mapping[str, Any], stopped: set[str]) -> bool:
    """A reminder or breach fires only for the deadline as it was when it fell due."""
    name = str(data.get("deadline", ""))
    timer = memory.deadline(deal.crm, deal.id, name)
    if timer is None or name in stopped or timer[0] in (TimerStatus.DONE, TimerStatus.CANCELLED):
        return False
    return timer[1] == datetime.fromisoformat(str(data.get("due_at")))
