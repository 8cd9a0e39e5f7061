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
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.contracts import CrmAdapter, DealSource
from connector.config import Config
from connector.metrics import PROCESSING
from connector.observability import correlation
from connector.storage.models import (
    AssignmentCountRow,
    AuditRow,
    BreachRow,
    DealSnapshotRow,
    InboxRow,
    OutboxRow,
    TimerRow,
)
from connector.storage.store import Store
from domain import Command, Deal, Event, EventKind, User
from domain.clock import utcnow
from domain.errors import AdapterError, FatalError
from domain.keys import deadline_decision_key, deadline_timer_key, decided_audit_key
from domain.statuses import TIMER_RUNNING, EventSource, InboxStatus, OutboxStatus, TimerStatus
from rules.actions import AssignSpec
from rules.changes import diff, triggers_for
from rules.deadlines import OpenDeadline
from rules.deadlines import review as review_deadlines
from rules.engine import evaluate
from rules.model import (
    CancelDeadline,
    CountAssignment,
    Decision,
    LocalAction,
    RecordBreach,
    RuleContext,
    StartDeadline,
)

log = logging.getLogger(__name__)

USERS_TTL = 300.0


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
        self._wanted_users = sorted(
            {t.captain for t in config.territories} | {t.backup for t in config.territories if t.backup}
        )

    def tick(self) -> int:
        """Process one batch of due inbox rows; returns how many were finished."""
        cfg = self.config.worker
        now = self.clock()
        rows = self.store.claim(
            InboxRow, [InboxStatus.NEW], now, timedelta(seconds=cfg["lease"]), cfg["batch"], self.owner
        )
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
        skip = self._already_seen(crm, rows)
        to_read = sorted(
            {r.deal_id for r in rows if r.deal_id and r.kind != EventKind.DEAL_DELETED and r.id not in skip}
        )
        try:
            # One read per distinct deal per batch, however many deliveries it got.
            deals = adapter.get_deals(to_read) if to_read else {}
            users = self._users_for(crm, adapter)
            workload = self._workload_for(crm, adapter)
        except AdapterError as exc:
            self._fail(rows, str(exc), final=isinstance(exc, FatalError))
            return 0
        finished = 0
        for row in rows:
            try:
                self._process_row(row, adapter, deals.get(row.deal_id or ""), users, workload, skipped=row.id in skip)
                finished += 1
            except IntegrityError as exc:
                # Another worker processed an event of the same deal at the same moment (both
                # wrote its first snapshot): nothing of ours was kept, so try again shortly.
                log.info("worker raced crm=%s inbox=%s: retrying", crm, row.id)
                self._fail([row], f"concurrent update: {type(exc).__name__}", final=False)
            except Exception as exc:  # a broken template must not stop the other rows
                log.exception("worker failed crm=%s inbox=%s correlation=%s", crm, row.id, row.correlation_id)
                self._fail([row], f"{type(exc).__name__}: {exc}", final=True)
        return finished

    def _already_seen(self, crm: str, rows: list[InboxRow]) -> set[int]:
        """Polled changes already processed (a webhook got there first) need no read."""
        polled = [r for r in rows if r.source == EventSource.POLL and r.deal_id]
        if not polled:
            return set()
        with self.store.sessions() as session:
            snaps = {
                s.deal_id: s.deal_updated_at
                for s in session.scalars(
                    select(DealSnapshotRow).where(
                        DealSnapshotRow.crm == crm, DealSnapshotRow.deal_id.in_([r.deal_id for r in polled])
                    )
                )
            }
        seen: set[int] = set()
        for r in polled:
            last = snaps.get(r.deal_id or "")
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
        group = sorted(
            {
                u
                for rule in self.config.rules
                if rule.crm == crm
                for step in rule.actions
                if isinstance(step, AssignSpec) and step.strategy == "least_loaded"
                for u in step.group
            }
        )
        return adapter.open_deal_counts(group) if group else {}

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
            live = session.get(InboxRow, row.id, with_for_update=True)
            if live is None or live.status != InboxStatus.NEW:
                return
            if skipped:
                self._finish(live, now, "already processed")
                return
            if row.kind == str(EventKind.DEAL_DELETED):
                snap = session.get(DealSnapshotRow, (row.crm, row.deal_id))
                if snap is not None:
                    session.delete(snap)
                self._finish(live, now, "deal deleted")
                return
            if deal is None:
                self._finish(live, now, "deal not found in the CRM")
                return
            self._apply_rules(session, live, source, deal, users, workload, now)
            self._finish(live, now, None)
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
        snap = session.get(DealSnapshotRow, (row.crm, deal.id))
        current = deal.snapshot()
        before = snap.data if snap else None
        changes = diff(before, current, source.bookkeeping_fields)
        payload = row.payload or {}
        previous = payload.get("previous")
        if previous and before is None and source.webhooks_carry_previous:
            # The CRM told us what changed: use it when we have no snapshot.
            changes = {k: (v, current.get(k, deal.fields.get(k))) for k, v in previous.items()}
        kind = EventKind(row.kind)
        data = payload.get("data") or {}
        event = Event(
            crm=row.crm,
            kind=kind,
            deal_id=deal.id,
            occurred_at=row.occurred_at,
            dedup_key=row.dedup_key,
            source=EventSource(row.source),
            previous=previous,
            data=data,
        )
        timers = {
            t.name: t
            for t in session.scalars(
                select(TimerRow).where(
                    TimerRow.crm == row.crm, TimerRow.deal_id == deal.id, TimerRow.status.in_(TIMER_RUNNING)
                )
            )
        }
        ctx = RuleContext(
            deal=deal,
            event=event,
            now=now,
            triggers=triggers_for(kind, deal, before, changes, data),
            changes=changes,
            users=users,
            territories=self.config.territories,
            calendar=self.calendar,
            workload=workload,
            deadlines=self.config.deadlines,
            assigned=self._assigned(session),
        )
        running = [OpenDeadline(t.name, t.due_at, t.status) for t in timers.values()]
        reviewed = review_deadlines(self.config.deadlines, running, ctx)
        for action in reviewed:
            self._record(
                session,
                row,
                Decision(
                    "deadline",
                    deadline_decision_key(row.crm, deal.id, action.name, action.kind, row.dedup_key),
                    action,
                    ctx.triggers,
                ),
                now,
            )
        stopped = {a.name for a in reviewed if isinstance(a, CancelDeadline)}
        if kind == EventKind.TIMER_DUE and not self._timer_still_due(session, row, data, stopped):
            Store.audit(
                session,
                at=now,
                crm=row.crm,
                deal_id=deal.id,
                rule=None,
                trigger=row.kind,
                action="note",
                message=f"deadline {data.get('deadline')} {data.get('phase')} not acted on: "
                "met, cancelled or re-armed since",
                correlation_id=row.correlation_id,
            )
        else:
            for decision in evaluate(self.config.rules, ctx):
                self._record(session, row, decision, now)
        if snap is None:
            session.add(
                DealSnapshotRow(
                    crm=row.crm, deal_id=deal.id, data=current, deal_updated_at=deal.updated_at, seen_at=now
                )
            )
        else:
            snap.data, snap.deal_updated_at, snap.seen_at = current, deal.updated_at, now

    @staticmethod
    def _timer_still_due(session: Session, row: InboxRow, data: Mapping[str, Any], stopped: set[str]) -> bool:
        """A reminder or breach fires only for the deadline as it was when it fell due."""
        name = str(data.get("deadline", ""))
        timer = session.scalar(
            select(TimerRow).where(TimerRow.key == deadline_timer_key(row.crm, row.deal_id or "", name))
        )
        if timer is None or name in stopped or timer.status in (TimerStatus.DONE, TimerStatus.CANCELLED):
            return False
        return timer.due_at == datetime.fromisoformat(str(data.get("due_at")))

    @staticmethod
    def _assigned(session: Session) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        for r in session.scalars(select(AssignmentCountRow)):
            counts[r.rule][r.user_id] = r.count
        return counts

    def _record(self, session: Session, row: InboxRow, decision: Decision, now: datetime) -> None:
        action = decision.action
        trigger = ",".join(sorted(decision.triggers))
        if not isinstance(action, Command):
            self._record_local(session, row, decision, action, trigger, now)
            return
        exists = session.scalar(select(OutboxRow.id).where(OutboxRow.idempotency_key == decision.key))
        if exists is not None:
            return  # decided before: the same write is never queued twice
        session.add(
            OutboxRow(
                # A command for another system (a counterparty for 1C) goes to that system's adapter.
                idempotency_key=decision.key,
                crm=getattr(action, "target", "") or row.crm,
                deal_id=action.deal_id,
                rule=decision.rule,
                command=action.kind,
                payload=action.to_payload(),
                status=OutboxStatus.PENDING,
                attempts=0,
                next_try_at=now,
                inbox_id=row.id,
                correlation_id=row.correlation_id,
                created_at=now,
                updated_at=now,
            )
        )
        Store.audit(
            session,
            at=now,
            crm=row.crm,
            deal_id=row.deal_id,
            rule=decision.rule,
            trigger=trigger,
            action=f"decided:{action.kind}",
            message=action.describe(),
            detail=action.to_payload(),
            correlation_id=row.correlation_id,
            key=decided_audit_key(decision.key),
        )

    def _record_local(
        self, session: Session, row: InboxRow, decision: Decision, action: LocalAction, trigger: str, now: datetime
    ) -> None:
        """Effects kept in the connector's own database, once per decision key."""
        if session.scalar(select(AuditRow.id).where(AuditRow.key == decision.key)) is not None:
            return  # decided and applied before (a redelivered event)
        deal_id = row.deal_id or ""
        message = action.describe()
        if isinstance(action, StartDeadline):
            key = deadline_timer_key(row.crm, deal_id, action.name)
            timer = session.scalar(select(TimerRow).where(TimerRow.key == key))
            if timer is not None and timer.status in TIMER_RUNNING and not action.rearm:
                message = f"deadline {action.name} already running: due {timer.due_at.isoformat()}"
            else:
                if timer is None:
                    timer = TimerRow(
                        key=key, crm=row.crm, deal_id=deal_id, name=action.name, rule=decision.rule, created_at=now
                    )
                    session.add(timer)
                elif not action.rearm:
                    timer.rule = decision.rule  # a rule restarts it; a re-arm keeps the rule that started it
                timer.due_at, timer.status, timer.updated_at = action.due_at, TimerStatus.OPEN, now
                timer.fire_at = min(action.remind_at, action.due_at) if action.remind_at else action.due_at
                timer.payload = {
                    "responsible_id": action.responsible_id,
                    "remind_at": action.remind_at.isoformat() if action.remind_at else None,
                }
        elif isinstance(action, CancelDeadline):
            session.execute(
                update(TimerRow)
                .where(
                    TimerRow.key == deadline_timer_key(row.crm, deal_id, action.name),
                    TimerRow.status.in_(TIMER_RUNNING),
                )
                .values(status=TimerStatus.DONE if action.reason == "done" else TimerStatus.CANCELLED, updated_at=now)
            )
        elif isinstance(action, RecordBreach):
            exists = session.scalar(
                select(BreachRow.id).where(
                    BreachRow.crm == row.crm,
                    BreachRow.deal_id == deal_id,
                    BreachRow.deadline == action.deadline,
                    BreachRow.due_at == action.due_at,
                )
            )
            if exists is None:
                session.add(
                    BreachRow(
                        crm=row.crm,
                        deal_id=deal_id,
                        deadline=action.deadline,
                        responsible_id=action.responsible_id,
                        due_at=action.due_at,
                        breached_at=now,
                        rule=decision.rule,
                    )
                )
        elif isinstance(action, CountAssignment):
            counter = session.get(AssignmentCountRow, (action.rule, action.user_id))
            if counter is None:
                session.add(AssignmentCountRow(rule=action.rule, user_id=action.user_id, count=1))
            else:
                counter.count += 1
        Store.audit(
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

    @staticmethod
    def _finish(row: InboxRow, now: datetime, note: str | None) -> None:
        row.status, row.processed_at, row.claimed_until, row.last_error = InboxStatus.DONE, now, None, note

    def _fail(self, rows: list[InboxRow], error: str, *, final: bool) -> None:
        now = self.clock()
        with self.store.sessions() as session, session.begin():
            for r in rows:
                live = session.get(InboxRow, r.id)
                if live is None or live.status != InboxStatus.NEW:
                    continue
                live.attempts += 1
                live.last_error = error[:2000]
                live.claimed_until = None
                if final or live.attempts >= self.config.worker["max_attempts"]:
                    live.status = InboxStatus.FAILED
                else:
                    live.next_try_at = now + timedelta(seconds=min(600, 2**live.attempts))
        log.warning("inbox rows not processed crm=%s count=%d final=%s error=%s", rows[0].crm, len(rows), final, error)
