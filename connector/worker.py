"""The worker: turns inbox rows into outbox rows through the rules.

For each claimed delivery it reads the deal fresh from its CRM (webhooks carry little
and arrive out of order), works out what changed since the last snapshot, runs the pure
rules, and in one transaction stores the intended writes, the audit lines, the new
snapshot and the row's completion.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.contracts import CrmAdapter, DealSource, DuplicateSearch
from connector.config import Config
from connector.failures import explain
from connector.metrics import PROCESSING, RULE_ERRORS
from connector.observability import correlation
from connector.processing import Processor
from connector.storage.audit import NOTE, PARKED, RULE_ERROR, Audit
from connector.storage.inbox import Inbox
from connector.storage.models import InboxRow
from connector.storage.outbox import Outbox
from connector.storage.snapshots import Snapshots
from connector.storage.store import Store
from connector.storage.timers import Timers
from domain import Command, Deal, Event, EventKind, User
from domain.clock import utcnow
from domain.duplicates import Duplicate
from domain.errors import AdapterError, AuthError, FatalError, RetriableError
from domain.statuses import EventSource
from rules.deadlines import OpenDeadline
from rules.duplicates import lookups_of, search_plan
from rules.model import (
    CancelDeadline,
    CountAssignment,
    Decision,
    LocalAction,
    RecordBreach,
    StartDeadline,
)

log = logging.getLogger(__name__)

USERS_TTL = 300.0
# A CRM that refuses our credentials is tried again after 5 s, then 10, 20… up to 5 minutes.
PAUSE_FIRST_PROBE = 5.0
PAUSE_LONGEST_PROBE = 300.0


@dataclass(frozen=True)
class _Pause:
    reason: str
    probes: int
    probe_at: datetime


class _KeptInDatabase:
    """The processing core's memory of deals, read inside the worker's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def snapshot(self, crm: str, deal_id: str) -> dict[str, Any] | None:
        snap = Snapshots.get(self.session, crm, deal_id)
        return snap.data if snap else None

    def running_deadlines(self, crm: str, deal_id: str) -> list[OpenDeadline]:
        return [OpenDeadline(t.name, t.due_at, t.status) for t in Timers.running(self.session, crm, deal_id)]

    def deadline(self, crm: str, deal_id: str, name: str) -> tuple[str, datetime] | None:
        timer = Timers.current(self.session, crm, deal_id, name)
        return (timer.status, timer.due_at) if timer is not None else None

    def assignments(self) -> Mapping[str, Mapping[str, int]]:
        return Snapshots.assignments(self.session)

    def decided(self, keys: Sequence[str]) -> bool:
        # A local effect is decided once its audit line is written, a write once it is queued.
        rest = set(keys) - Audit.keys_among(self.session, keys)
        return not rest or len(Outbox.keys_among(self.session, rest)) == len(rest)


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, AdapterError) else f"{type(exc).__name__}: {exc}"


# The triggers an inbox row of a kind may fire (the exact ones need the deal's diff).
_TRIGGERS_OF_KIND = {
    str(EventKind.DEAL_CREATED): frozenset({"deal.created", "deal.updated", "deal.stage_changed"}),
    str(EventKind.DEAL_UPDATED): frozenset({"deal.created", "deal.updated", "deal.stage_changed"}),
    str(EventKind.TIMER_DUE): frozenset({"deadline.reminder", "deadline.breached"}),
}


class Worker:
    """Processes the inbox; call ``tick`` on a schedule."""

    def __init__(
        self,
        config: Config,
        store: Store,
        adapters: Mapping[str, CrmAdapter],
        *,
        clock: Callable[[], datetime] = utcnow,
        calendar: Any = None,
        owner: str | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.adapters = adapters
        self.clock = clock
        self.calendar = calendar
        self.owner = owner or f"worker-{os.getpid()}"
        self._users: dict[str, tuple[float, dict[str, User]]] = {}
        self._duplicates: dict[str, dict[str, list[Duplicate]] | None] = {}  # of the batch being processed
        self._wanted_users = sorted(
            {t.captain for t in config.territories} | {t.backup for t in config.territories if t.backup}
        )
        self.probe_every = PAUSE_FIRST_PROBE
        sources = {name: a for name, a in adapters.items() if isinstance(a, DealSource)}
        self.processor = Processor(
            config,
            calendar,
            bookkeeping={name: a.bookkeeping_fields for name, a in sources.items()},
            carries_previous=[name for name, a in sources.items() if a.webhooks_carry_previous],
        )
        self._pauses: dict[str, _Pause] = {}
        self._resumed: set[str] = set()

    def tick(self) -> int:
        """Process one batch of due inbox rows; returns how many were finished."""
        cfg = self.config.worker
        now = self.clock()
        rows = self.store.inbox.claim(now, timedelta(seconds=cfg["lease"]), cfg["batch"], self.owner)
        if not rows:
            return 0
        by_crm: dict[str, list[InboxRow]] = defaultdict(list)
        for row in rows:
            by_crm[row.crm].append(row)
        done = 0
        for crm, crm_rows in by_crm.items():
            done += self._process_crm(crm, crm_rows)
        return done

    def _process_crm(self, crm: str, rows: list[InboxRow]) -> int:
        adapter = self.adapters.get(crm)
        if not isinstance(adapter, DealSource):
            problem = "is configured" if adapter is None else "that keeps deals is configured"
            self._fail(rows, f"no CRM named {crm!r} {problem}", final=True)
            return 0
        pause = self._pauses.get(crm)
        if pause is not None and self.clock() < pause.probe_at:
            self.store.inbox.hold(rows, pause.reason, pause.probe_at)
            return 0
        try:
            skip = self._already_seen(crm, rows)
            to_read = sorted(
                {r.deal_id for r in rows if r.deal_id and r.kind != EventKind.DEAL_DELETED and r.id not in skip}
            )
            # One read per distinct deal per batch, however many deliveries it got.
            deals, unreadable = self._read_deals(adapter, to_read)
            users = self._users_for(crm, adapter)
            workload = self._workload_for(crm, adapter)
            self._duplicates = self._duplicates_for(crm, adapter, deals, rows)
        except AuthError as exc:
            self._pause(crm, rows, exc)
            return 0
        except Exception as exc:  # the CRM or the database failed for the whole batch: try again later
            log.warning("worker batch not read crm=%s: %s", crm, exc, exc_info=not isinstance(exc, AdapterError))
            self._fail(rows, _reason(exc), final=False)
            return 0
        self._resume(crm)
        finished = 0
        for row in rows:
            problem = unreadable.get(row.deal_id or "")
            if problem is not None:
                self._set_aside(row, problem)
                continue
            try:
                self._process_row(row, adapter, deals.get(row.deal_id or ""), users, workload, skipped=row.id in skip)
                finished += 1
            except IntegrityError as exc:
                # Another worker processed an event of the same deal at the same moment (both
                # wrote its first snapshot): nothing of ours was kept, so try again shortly.
                log.info("worker raced crm=%s inbox=%s: retrying", crm, row.id)
                self._fail([row], f"concurrent update: {type(exc).__name__}", final=False)
            except Exception as exc:  # one row's trouble (a dropped connection, a bug) never ends it
                failure = explain(exc)
                if failure is None:
                    log.exception("worker failed crm=%s inbox=%s correlation=%s", crm, row.id, row.correlation_id)
                else:
                    log.warning(
                        "worker failed crm=%s inbox=%s correlation=%s: %s",
                        crm,
                        row.id,
                        row.correlation_id,
                        failure.line,
                    )
                self._fail([row], _reason(exc), final=False)
        return finished

    def _read_deals(self, adapter: DealSource, ids: list[str]) -> tuple[dict[str, Deal], dict[str, Exception]]:
        """The deals, and the error of each deal that could not be read on its own.

        A batched read that fails for a reason one deal may cause (the CRM refuses that deal,
        its data breaks the mapping) is read again deal by deal, so the others go ahead. A
        refusal of our credentials or a transient failure concerns them all and propagates.
        """
        if not ids:
            return {}, {}
        try:
            return adapter.get_deals(ids), {}
        except (AuthError, RetriableError):
            raise
        except Exception as exc:
            if len(ids) == 1:
                return {}, {ids[0]: exc}
        deals: dict[str, Deal] = {}
        unreadable: dict[str, Exception] = {}
        for deal_id in ids:
            try:
                deals.update(adapter.get_deals([deal_id]))
            except (AuthError, RetriableError):
                raise
            except Exception as exc:
                unreadable[deal_id] = exc
        return deals, unreadable

    def _set_aside(self, row: InboxRow, problem: Exception) -> None:
        """A deal the CRM will not give us is parked (an operator replays it once fixed);
        anything else about it is retried."""
        if not isinstance(problem, FatalError):
            log.warning("deal not read crm=%s deal=%s inbox=%s: %s", row.crm, row.deal_id, row.id, problem)
            self._fail([row], _reason(problem), final=False)
            return
        now = self.clock()
        reason = _reason(problem)
        self.store.inbox.park([row], reason, now)
        with self.store.sessions() as session, session.begin():
            Audit.record(
                session,
                at=now,
                crm=row.crm,
                deal_id=row.deal_id,
                rule=None,
                trigger=row.kind,
                action=PARKED,
                message=f"inbox row {row.id} parked: {reason}; once fixed: connector replay --inbox --id {row.id}",
                correlation_id=row.correlation_id,
            )
        log.warning("inbox row parked crm=%s deal=%s inbox=%s: %s", row.crm, row.deal_id, row.id, reason)

    def _pause(self, crm: str, rows: list[InboxRow], exc: AuthError) -> None:
        """The CRM refuses our credentials: stop reading it (rows stay new, no try counted) and
        probe again later, backing off; the first read that succeeds resumes it."""
        now = self.clock()
        earlier = self._pauses.get(crm)
        probes = earlier.probes + 1 if earlier else 0
        wait = min(PAUSE_LONGEST_PROBE, self.probe_every * 2**probes)
        reason = f"paused: {crm} refused our credentials ({exc}); next try {wait:.0f}s"
        self._pauses[crm] = _Pause(reason, probes, now + timedelta(seconds=wait))
        self.store.inbox.hold(rows, reason, now + timedelta(seconds=wait))
        self.store.cursors.pause(crm, reason, now)
        if earlier is None:
            log.error("worker %s", reason)

    def _resume(self, crm: str) -> None:
        if crm in self._pauses or crm not in self._resumed:
            # Also clears a pause an earlier process left behind.
            self.store.cursors.resume(crm)
            if self._pauses.pop(crm, None) is not None:
                log.warning("worker resumed crm=%s: the CRM answers again", crm)
            self._resumed.add(crm)

    def _already_seen(self, crm: str, rows: list[InboxRow]) -> set[int]:
        """Polled changes already processed (a webhook got there first) need no read."""
        polled = [r for r in rows if r.source == EventSource.POLL and r.deal_id]
        if not polled:
            return set()
        last_seen = self.store.snapshots.updated_at(crm, [r.deal_id for r in polled if r.deal_id])
        seen: set[int] = set()
        for r in polled:
            last = last_seen.get(r.deal_id or "")
            if last is not None and last > r.occurred_at:  # same second: maybe a newer change; read it
                seen.add(r.id)
        return seen

    def _users_for(self, crm: str, adapter: DealSource) -> dict[str, User]:
        if not self._wanted_users:
            return {}
        cached = self._users.get(crm)
        if cached and time.monotonic() - cached[0] < USERS_TTL:
            return cached[1]
        users = adapter.get_users(self._wanted_users)
        self._users[crm] = (time.monotonic(), users)
        return users

    def _workload_for(self, crm: str, adapter: DealSource) -> dict[str, int]:
        """Open deals per user of the least-loaded groups: read once per batch, when used."""
        group = self.processor.workload_group(crm)
        return adapter.open_deal_counts(group) if group else {}

    def _duplicates_for(
        self, crm: str, adapter: DealSource, deals: Mapping[str, Deal], rows: list[InboxRow]
    ) -> dict[str, dict[str, list[Duplicate]] | None]:
        """What the CRM finds for the ``find_duplicates`` steps of rules these rows may fire:
        searched before evaluation, as the rules never fetch."""
        steps = [(rule, lookups_of(rule.actions)) for rule in self.config.rules if rule.crm == crm and rule.enabled]
        steps = [(rule, found) for rule, found in steps if found]
        if not steps:
            return {}
        found: dict[str, dict[str, list[Duplicate]] | None] = {}
        for row in rows:
            deal = deals.get(row.deal_id or "")
            if deal is None or deal.id in found:
                continue
            possible = _TRIGGERS_OF_KIND.get(row.kind, frozenset({row.kind}))
            specs = [spec for rule, specs in steps if not rule.triggers.isdisjoint(possible) for spec in specs]
            if not specs:
                continue
            if not isinstance(adapter, DuplicateSearch):
                found[deal.id] = None
                continue
            plan = search_plan(specs, deal)
            found[deal.id] = {by: adapter.find_duplicates(deal, by, values) for by, values in plan.items()}
        return found

    def _process_row(
        self,
        row: InboxRow,
        source: DealSource,
        deal: Deal | None,
        users: Mapping[str, User],
        workload: Mapping[str, int],
        *,
        skipped: bool,
    ) -> None:
        with correlation(row.correlation_id):
            self._process_row_now(row, source, deal, users, workload, skipped=skipped)
        PROCESSING.labels(row.crm).observe(max(0.0, (self.clock() - row.received_at).total_seconds()))

    def _process_row_now(
        self,
        row: InboxRow,
        source: DealSource,
        deal: Deal | None,
        users: Mapping[str, User],
        workload: Mapping[str, int],
        *,
        skipped: bool,
    ) -> None:
        now = self.clock()
        with self.store.sessions() as session, session.begin():
            # Locked: a row whose lease lapsed may be claimed by another worker meanwhile.
            live = Inbox.lock_new(session, row.id)
            if live is None:
                return
            if skipped:
                Inbox.finish(live, now, "already processed")
                return
            if row.kind == str(EventKind.DEAL_DELETED):
                Snapshots.forget(session, row.crm, row.deal_id or "")
                Inbox.finish(live, now, "deal deleted")
                return
            if deal is None:
                Inbox.finish(live, now, "deal not found in the CRM")
                return
            self._apply_rules(session, live, source, deal, users, workload, now)
            Inbox.finish(live, now, None)
        log.info(
            "processed crm=%s deal=%s inbox=%s kind=%s correlation=%s",
            row.crm,
            row.deal_id,
            row.id,
            row.kind,
            row.correlation_id,
        )

    def _apply_rules(
        self,
        session: Session,
        row: InboxRow,
        source: DealSource,
        deal: Deal,
        users: Mapping[str, User],
        workload: Mapping[str, int],
        now: datetime,
    ) -> None:
        payload = row.payload or {}
        event = Event.of(
            crm=row.crm,
            kind=EventKind(row.kind),
            deal_id=deal.id,
            occurred_at=row.occurred_at,
            dedup_key=row.dedup_key,
            source=EventSource(row.source),
            previous=payload.get("previous"),
            data=payload.get("data") or {},
        )
        processed = self.processor.process(
            event,
            deal,
            _KeptInDatabase(session),
            now=now,
            users=users,
            workload=workload,
            duplicates=self._duplicates.get(deal.id, {}),
        )
        for decision in processed.decisions:
            self._record(session, row, decision, now)
        if processed.note is not None:
            Audit.record(
                session,
                at=now,
                crm=row.crm,
                deal_id=deal.id,
                rule=None,
                trigger=row.kind,
                action=NOTE,
                message=processed.note,
                correlation_id=row.correlation_id,
            )
        for error in processed.errors:
            RULE_ERRORS.labels(row.crm, error.rule).inc()
            log.warning(
                "rule failed crm=%s deal=%s rule=%s inbox=%s correlation=%s: %s",
                row.crm,
                deal.id,
                error.rule,
                row.id,
                row.correlation_id,
                error.error,
            )
            Audit.record(
                session,
                at=now,
                crm=row.crm,
                deal_id=deal.id,
                rule=error.rule,
                trigger=row.kind,
                action=RULE_ERROR,
                message=f"rule not applied: {error.error}"[:2000],
                correlation_id=row.correlation_id,
            )
        Snapshots.save(session, row.crm, deal, processed.snapshot, now)

    def _record(self, session: Session, row: InboxRow, decision: Decision, now: datetime) -> None:
        action = decision.action
        trigger = ",".join(sorted(decision.triggers))
        if not isinstance(action, Command):
            self._record_local(session, row, decision, action, trigger, now)
            return
        Outbox.stage(
            session,
            key=decision.key,
            # A counterparty goes to the system that keeps them, a message to its channel; every
            # other write to the deal's CRM.
            crm=action.destination() or row.crm,
            command=action,
            rule=decision.rule,
            now=now,
            trigger=trigger,
            audit_crm=row.crm,
            inbox_id=row.id,
            correlation_id=row.correlation_id,
        )

    def _record_local(
        self, session: Session, row: InboxRow, decision: Decision, action: LocalAction, trigger: str, now: datetime
    ) -> None:
        """Effects kept in the connector's own database, once per decision key."""
        if Audit.has(session, decision.key):
            return  # decided and applied before (a redelivered event)
        deal_id = row.deal_id or ""
        message = action.describe()
        if isinstance(action, StartDeadline):
            started = Timers.start(
                session,
                crm=row.crm,
                deal_id=deal_id,
                name=action.name,
                rule=decision.rule,
                due_at=action.due_at,
                remind_at=action.remind_at,
                responsible_id=action.responsible_id,
                rearm=action.rearm,
                now=now,
            )
            if started is None:
                running = Timers.current(session, row.crm, deal_id, action.name)
                due = running.due_at.isoformat() if running is not None else "?"
                message = f"deadline {action.name} already running: due {due}"
        elif isinstance(action, CancelDeadline):
            Timers.stop(session, crm=row.crm, deal_id=deal_id, name=action.name, met=action.reason == "done", now=now)
        elif isinstance(action, RecordBreach):
            Timers.record_breach(
                session,
                crm=row.crm,
                deal_id=deal_id,
                deadline=action.deadline,
                due_at=action.due_at,
                responsible_id=action.responsible_id,
                rule=decision.rule,
                now=now,
            )
        elif isinstance(action, CountAssignment):
            Snapshots.count_assignment(session, action.rule, action.user_id)
        Audit.record(
            session,
            at=now,
            crm=row.crm,
            deal_id=row.deal_id,
            rule=decision.rule,
            trigger=trigger,
            action=action.kind,
            message=message,
            correlation_id=row.correlation_id,
            key=decision.key,
        )

    def _fail(self, rows: list[InboxRow], error: str, *, final: bool) -> None:
        self.store.inbox.fail(rows, error, final=final, now=self.clock())
        log.warning("inbox rows not processed crm=%s count=%d final=%s error=%s", rows[0].crm, len(rows), final, error)
