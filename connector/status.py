"""The connector's state at a glance, from its database: what `connector status`, the
status page and monitoring read. Everything here is a count or a time; nothing secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from connector.config import Config
from connector.storage.audit import POLL_FAILED, RULE_ERROR, UNLINKED
from connector.storage.models import AuditRow, BreachRow, InboxRow, OutboxRow, TimerRow
from connector.storage.store import Store
from domain.keys import document_key_pattern
from domain.statuses import TIMER_RUNNING, EventSource, InboxStatus, OutboxStatus

# An inbox row waiting longer than this, or a poll older than this many poll periods, needs a look.
BACKLOG_AGE = timedelta(minutes=15)
STALE_POLLS = 3
# How long after one polling period a start's first poll may still be pending.
FIRST_POLL_GRACE = timedelta(minutes=1)


@dataclass
class CrmStatus:
    """One configured CRM's figures."""

    name: str
    type: str
    last_webhook: datetime | None = None
    last_poll: datetime | None = None
    cursor: str | None = None
    inbox_new: int = 0
    inbox_failed: int = 0
    inbox_parked: int = 0
    paused: str | None = None  # why the worker stopped reading this CRM, while it is paused
    oldest_new: datetime | None = None
    outbox: dict[str, int] = field(default_factory=dict)  # pending, retrying, sending, dead, done
    unlinked: int = 0
    last_error: str | None = None  # the last poll's failure, when no poll succeeded since
    last_error_at: datetime | None = None
    first_poll_due: datetime | None = None  # set while the first poll after a start is pending


@dataclass
class Status:
    """The whole connector's figures and what needs attention."""

    at: datetime
    crms: list[CrmStatus]
    open_deadlines: int
    breaches_today: int
    dead_letters: list[dict[str, Any]]
    unlinked: list[dict[str, Any]]
    attention: list[str]
    parked: list[dict[str, Any]] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.attention


def _count(session: Session, query: Any) -> int:
    return int(session.scalar(query) or 0)


def gather(store: Store, config: Config, now: datetime, *, listed: int = 10) -> Status:
    """Read the figures; ``listed`` caps the dead letters and unlinked documents shown."""
    tz = config.calendar["timezone"]
    crms: list[CrmStatus] = []
    attention: list[str] = []
    started = store.cursors.last_start()
    with store.reading() as s:
        paused = store.cursors.paused(s)
        for name, settings in config.crms.items():
            c = CrmStatus(name=name, type=settings.type)
            if name in paused:
                since, why = paused[name]
                c.paused = f"since {since.astimezone(ZoneInfo(tz)).isoformat(timespec='seconds')}: {why}"
            c.last_webhook = s.scalar(
                select(func.max(InboxRow.received_at)).where(
                    InboxRow.crm == name, InboxRow.source == EventSource.WEBHOOK
                )
            )
            latest = store.cursors.latest_bookmark(s, name)
            if latest is not None:
                c.last_poll, c.cursor = latest[0], latest[1].position.isoformat()
            c.inbox_new = _count(
                s, select(func.count(InboxRow.id)).where(InboxRow.crm == name, InboxRow.status == InboxStatus.NEW)
            )
            c.inbox_failed = _count(
                s, select(func.count(InboxRow.id)).where(InboxRow.crm == name, InboxRow.status == InboxStatus.FAILED)
            )
            c.inbox_parked = _count(
                s, select(func.count(InboxRow.id)).where(InboxRow.crm == name, InboxRow.status == InboxStatus.PARKED)
            )
            c.oldest_new = s.scalar(
                select(func.min(InboxRow.received_at)).where(InboxRow.crm == name, InboxRow.status == InboxStatus.NEW)
            )
            retried = func.sum(case((OutboxRow.attempts > 0, 1), else_=0))
            for status, count, attempted in s.execute(
                select(OutboxRow.status, func.count(OutboxRow.id), retried)
                .where(OutboxRow.crm == name)
                .group_by(OutboxRow.status)
            ):
                if status == OutboxStatus.PENDING and attempted:
                    c.outbox["retrying"] = int(attempted)
                c.outbox[status] = int(count) - (int(attempted) if status == OutboxStatus.PENDING else 0)
            c.unlinked = len(_still_unlinked(s, name))
            crms.append(c)
            if c.outbox.get(OutboxStatus.DEAD):
                attention.append(f"{name}: {c.outbox[OutboxStatus.DEAD]} dead letter(s) — see `connector replay`")
            if c.paused:
                attention.append(f"{name}: processing {c.paused}")
            if c.inbox_failed:
                attention.append(f"{name}: {c.inbox_failed} inbox row(s) failed — see `connector replay --inbox`")
            overdue = _count(
                s,
                select(func.count(InboxRow.id)).where(
                    InboxRow.crm == name,
                    InboxRow.status == InboxStatus.NEW,
                    InboxRow.attempts >= config.worker["max_attempts"],
                ),
            )
            if overdue:
                attention.append(f"{name}: {overdue} inbox row(s) retried {config.worker['max_attempts']}+ times")
            for rule, count in s.execute(
                select(AuditRow.rule, func.count(AuditRow.id))
                .where(AuditRow.crm == name, AuditRow.action == RULE_ERROR, AuditRow.at >= now - timedelta(days=1))
                .group_by(AuditRow.rule)
            ):
                attention.append(f"{name}: rule {rule}: {count} rule error(s) in the last day — see `connector why`")
            if c.inbox_parked:
                attention.append(f"{name}: {c.inbox_parked} inbox row(s) parked — see `connector replay --inbox`")
            if c.oldest_new is not None and now - c.oldest_new > BACKLOG_AGE:
                attention.append(f"{name}: inbox backlog since {c.oldest_new.isoformat(timespec='seconds')}")
            failed = s.execute(
                select(AuditRow.at, AuditRow.message)
                .where(AuditRow.crm == name, AuditRow.action == POLL_FAILED)
                .order_by(AuditRow.at.desc())
                .limit(1)
            ).first()
            if failed is not None and (c.last_poll is None or failed[0] > c.last_poll):
                c.last_error_at, c.last_error = failed[0], failed[1]
            every = settings.poll_every
            # Right after a start the first poll is still under way: not a problem yet.
            warming_up = (
                every is not None
                and started is not None
                and now - started < timedelta(seconds=every) + FIRST_POLL_GRACE
                and (c.last_poll is None or c.last_poll < started)
                and (c.last_error_at is None or c.last_error_at < started)
            )
            if warming_up:
                c.first_poll_due = started
            elif every and (c.last_poll is None or now - c.last_poll > timedelta(seconds=every * STALE_POLLS)):
                problem = f"{name}: no poll for {STALE_POLLS} periods" if c.last_poll else f"{name}: never polled"
                if c.last_error_at is not None:
                    tried = c.last_error_at.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")
                    problem += f"; last try {tried} failed: {c.last_error}"
                attention.append(problem)
            if c.unlinked:
                attention.append(f"{name}: {c.unlinked} unlinked document(s)")
        open_deadlines = _count(s, select(func.count(TimerRow.id)).where(TimerRow.status.in_(TIMER_RUNNING)))

        midnight = now.astimezone(ZoneInfo(tz)).replace(hour=0, minute=0, second=0, microsecond=0)
        breaches_today = _count(s, select(func.count(BreachRow.id)).where(BreachRow.breached_at >= midnight))
        dead = [
            {
                "id": r.id,
                "crm": r.crm,
                "deal": r.deal_id,
                "rule": r.rule,
                "command": r.command,
                "attempts": r.attempts,
                "error": (r.last_error or "")[:200],
                "at": r.updated_at,
            }
            for r in s.scalars(
                select(OutboxRow)
                .where(OutboxRow.status == OutboxStatus.DEAD)
                .order_by(OutboxRow.updated_at.desc())
                .limit(listed)
            )
        ]
        unlinked = [
            {"crm": r.crm, "at": r.at, "what": r.message} for name in config.crms for r in _still_unlinked(s, name)
        ][:listed]
        parked = [
            {"id": r.id, "crm": r.crm, "deal": r.deal_id, "kind": r.kind, "reason": (r.last_error or "")[:200]}
            for r in s.scalars(
                select(InboxRow).where(InboxRow.status == InboxStatus.PARKED).order_by(InboxRow.id.desc()).limit(listed)
            )
        ]
    return Status(
        at=now,
        crms=crms,
        open_deadlines=open_deadlines,
        breaches_today=breaches_today,
        dead_letters=dead,
        unlinked=unlinked,
        attention=attention,
        parked=parked,
    )


def _still_unlinked(s: Session, crm: str, limit: int = 500) -> list[AuditRow]:
    """Documents reported unlinked that have not been linked since (newest report per document):
    a document linked later has an inbox event under its document key."""
    newest: dict[str, AuditRow] = {}
    for row in s.scalars(
        select(AuditRow)
        .where(AuditRow.crm == crm, AuditRow.action == UNLINKED)
        .order_by(AuditRow.at.desc())
        .limit(limit)
    ):
        ref = (row.detail or {}).get("ref") or row.key or str(row.id)
        newest.setdefault(str(ref), row)
    still = []
    for ref, row in newest.items():
        linked = s.scalar(
            select(InboxRow.id)
            .where(InboxRow.dedup_key.like(document_key_pattern(crm, ref)), InboxRow.received_at >= row.at)
            .limit(1)
        )
        if linked is None:
            still.append(row)
    return still


def render(status: Status, console: Any, tz: str) -> None:
    """Print the status as rich tables."""
    from zoneinfo import ZoneInfo

    from rich.table import Table

    zone = ZoneInfo(tz)

    def when(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "—"

    table = Table(title=f"crm-connector status at {when(status.at)}")
    for column in (
        "CRM",
        "type",
        "last webhook",
        "last poll",
        "cursor",
        "inbox new",
        "inbox failed",
        "parked",
        "outbox pending",
        "retrying",
        "sending",
        "dead",
        "done",
        "unlinked",
    ):
        table.add_column(column)
    for c in status.crms:
        o = c.outbox
        table.add_row(
            c.name,
            c.type,
            when(c.last_webhook),
            when(c.last_poll) + (" (first poll since the start pending)" if c.first_poll_due else ""),
            c.cursor or "—",
            str(c.inbox_new),
            str(c.inbox_failed),
            str(c.inbox_parked),
            str(o.get(OutboxStatus.PENDING, 0)),
            str(o.get("retrying", 0)),
            str(o.get(OutboxStatus.SENDING, 0)),
            str(o.get(OutboxStatus.DEAD, 0)),
            str(o.get(OutboxStatus.DONE, 0)),
            str(c.unlinked),
        )
    console.print(table)
    console.print(f"open deadlines: {status.open_deadlines}    breaches today: {status.breaches_today}")
    if status.dead_letters:
        dead = Table(title="Dead letters (newest first)")
        for column in ("id", "crm", "deal", "rule", "command", "attempts", "last error"):
            dead.add_column(column)
        for d in status.dead_letters:
            dead.add_row(
                str(d["id"]), d["crm"], d["deal"] or "", d["rule"], d["command"], str(d["attempts"]), d["error"]
            )
        console.print(dead)
    if status.parked:
        parked = Table(title="Parked inbox rows (newest first)")
        for column in ("id", "crm", "deal", "event", "reason"):
            parked.add_column(column)
        for r in status.parked:
            parked.add_row(str(r["id"]), r["crm"], r["deal"] or "", r["kind"], r["reason"])
        console.print(parked)
    if status.unlinked:
        unlinked = Table(title="Unlinked documents (newest first)")
        for column in ("crm", "at", "document"):
            unlinked.add_column(column)
        for u in status.unlinked:
            unlinked.add_row(u["crm"], when(u["at"]), u["what"])
        console.print(unlinked)
    if status.attention:
        console.print("[bold red]needs attention:[/]")
        for line in status.attention:
            console.print(f"  - {line}")
    else:
        console.print("[green]all well[/]")
