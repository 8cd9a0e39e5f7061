"""The audit: every action taken, with the rule and trigger behind it."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.storage.models import AuditRow

if TYPE_CHECKING:
    from datetime import datetime

    from connector.storage.store import Store

# Audit actions the runtime writes besides the rules' own (commands by kind, local effects).
DEAD_LETTER = "dead_letter"
REPLAYED = "replayed"
DISCARDED = "discarded"
UNLINKED = "unlinked"
NOTE = "note"
PARKED = "parked"  # an inbox row set aside: the CRM denies us the deal
RULE_ERROR = "rule_error"  # a rule that could not be evaluated for an event
POLL_FAILED = "poll_failed"  # a poll of a CRM ended in an error (status shows the last one)


def decided(command_kind: str) -> str:
    """The audit action of a write being decided."""
    return f"decided:{command_kind}"


class Audit:
    """Audit lines: written inside the caller's transaction, read per deal."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def record(
        session: Session,
        *,
        at: datetime,
        crm: str,
        action: str,
        message: str,
        deal_id: str | None = None,
        rule: str | None = None,
        trigger: str | None = None,
        detail: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        key: str | None = None,
    ) -> None:
        """Add an audit line inside the caller's transaction; a ``key`` seen before is skipped."""
        if key is not None and Audit.has(session, key):
            return
        session.add(
            AuditRow(
                at=at,
                crm=crm,
                deal_id=deal_id,
                rule=rule,
                trigger=trigger,
                action=action,
                message=message,
                detail=detail,
                correlation_id=correlation_id,
                key=key,
            )
        )

    @staticmethod
    def has(session: Session, key: str) -> bool:
        """Whether a line with this key was written (a decision applied before)."""
        return session.scalar(select(AuditRow.id).where(AuditRow.key == key)) is not None

    @staticmethod
    def keys_among(session: Session, keys: Collection[str]) -> set[str]:
        """Which of ``keys`` have a line (one query)."""
        if not keys:
            return set()
        return set(session.scalars(select(AuditRow.key).where(AuditRow.key.in_(keys))))

    def for_deal(self, crm: str | None, deal_id: str) -> list[AuditRow]:
        """Every line about a deal, oldest first."""
        with self.store.reading() as session:
            query = select(AuditRow).where(AuditRow.deal_id == deal_id).order_by(AuditRow.at, AuditRow.id)
            if crm:
                query = query.where(AuditRow.crm == crm)
            return list(session.scalars(query))


def record_poll_failure(store: Store, crm: str, exc: BaseException, at: datetime) -> None:
    """Audit a failed poll in one line (what, and the network cause under it); a database that
    cannot take it is left alone: the poll's own error is the one to raise."""
    from adapters.causes import root_cause
    from connector.redaction import redact
    from domain.errors import AdapterError

    said = str(exc) if isinstance(exc, AdapterError) else f"{type(exc).__name__}: {exc}"
    message = redact(f"{said}{root_cause(exc)}")[:500]
    try:
        with store.sessions() as session, session.begin():
            Audit.record(session, at=at, crm=crm, action=POLL_FAILED, message=message)
    except Exception:  # noqa: BLE001, S110 - the database may be what failed
        pass
