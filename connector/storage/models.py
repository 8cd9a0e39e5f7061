"""The tables. Every queue row carries a lease (``claimed_until``) so a crashed process
never holds a row forever."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from domain.statuses import InboxStatus, OutboxStatus, TimerStatus

# SQLite needs INTEGER PRIMARY KEY for autoincrement; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC and always returns aware datetimes, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class InboxRow(Base):
    """One webhook delivery or polled change, stored before it is acknowledged."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("crm", "dedup_key"),
        Index("ix_inbox_status_next_try_at", "status", "next_try_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    crm: Mapped[str] = mapped_column(String(64))
    dedup_key: Mapped[str] = mapped_column(String(160))
    kind: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(16))
    deal_id: Mapped[str | None] = mapped_column(String(64), index=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime())
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=InboxStatus.NEW)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime] = mapped_column(UtcDateTime())
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str] = mapped_column(String(32))


class OutboxRow(Base):
    """One intended CRM write. ``idempotency_key`` makes a second decision a no-op."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status_next_try_at", "status", "next_try_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(400), unique=True)
    crm: Mapped[str] = mapped_column(String(64))
    deal_id: Mapped[str | None] = mapped_column(String(64), index=True)
    rule: Mapped[str] = mapped_column(String(128))
    command: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime] = mapped_column(UtcDateTime())
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    remote_id: Mapped[str | None] = mapped_column(String(64))
    inbox_id: Mapped[int | None] = mapped_column(BigInteger)
    correlation_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class TimerRow(Base):
    """A durable deadline; a job scans what is due, so a restart loses none."""

    __tablename__ = "timers"
    __table_args__ = (Index("ix_timers_status_fire_at", "status", "fire_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(400), unique=True)
    crm: Mapped[str] = mapped_column(String(64))
    deal_id: Mapped[str] = mapped_column(String(64), index=True)
    rule: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128))
    due_at: Mapped[datetime] = mapped_column(UtcDateTime())
    fire_at: Mapped[datetime] = mapped_column(UtcDateTime())  # next moment the scan must act
    status: Mapped[str] = mapped_column(String(16), default=TimerStatus.OPEN)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class BreachRow(Base):
    """A deadline that was missed: one row per deal, deadline and due moment (penalty report)."""

    __tablename__ = "breaches"
    __table_args__ = (UniqueConstraint("crm", "deal_id", "deadline", "due_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    crm: Mapped[str] = mapped_column(String(64))
    deal_id: Mapped[str] = mapped_column(String(64))
    deadline: Mapped[str] = mapped_column(String(128))
    responsible_id: Mapped[str | None] = mapped_column(String(64))
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    breached_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    rule: Mapped[str | None] = mapped_column(String(128))


class AssignmentCountRow(Base):
    """How many deals a rule has given each user: what round-robin assignment balances."""

    __tablename__ = "assignment_counts"

    rule: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class CursorRow(Base):
    """Where each poller stopped."""

    __tablename__ = "cursors"

    crm: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DealSnapshotRow(Base):
    """The deal as last processed: tells what changed when the CRM does not say."""

    __tablename__ = "deal_snapshots"

    crm: Mapped[str] = mapped_column(String(64), primary_key=True)
    deal_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    deal_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AuditRow(Base):
    """Every action taken, with the rule and trigger behind it."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_crm_deal_id", "crm", "deal_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    crm: Mapped[str] = mapped_column(String(64))
    deal_id: Mapped[str | None] = mapped_column(String(64))
    rule: Mapped[str | None] = mapped_column(String(128))
    trigger: Mapped[str | None] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    correlation_id: Mapped[str | None] = mapped_column(String(32))
    key: Mapped[str | None] = mapped_column(String(420), unique=True)


class PlanRow(Base):
    """One plan an admin loaded: a person's or team's target for an indicator in a period."""

    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("subject_kind", "subject", "indicator", "period"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subject_kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(128))
    indicator: Mapped[str] = mapped_column(String(128))
    period: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(40))
    source: Mapped[str | None] = mapped_column(String(500))
    loaded_at: Mapped[datetime] = mapped_column(UtcDateTime())
