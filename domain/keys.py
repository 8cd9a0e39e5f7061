"""Every deduplication and idempotency key, built in one place.

An inbox row is unique by (CRM, dedup key): a delivery, poll, timer or schedule run that
comes twice adds nothing. An outbox row is unique by its idempotency key: a decision taken
twice writes once. Audit lines carry keys too, so a redelivered event is not audited twice.
The formats are stored in the database, so changing one is a migration.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

# --- inbox: what makes two deliveries, polls, timers or runs the same -----------------------


def webhook_key(tag: str, delivery_id: str) -> str:
    """A delivery the CRM gave an id of its own (kept across its retries)."""
    return f"{tag}:{delivery_id.strip()[:100]}"


def hashed_webhook_key(tag: str, parts: Iterable[str]) -> str:
    """A delivery without an id: the facts that identify it (event, object, stamps), hashed."""
    return f"{tag}:" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def poll_key(deal_id: str, modified: datetime, content: Mapping[str, Any]) -> str:
    """A polled change: the deal, its modification time and a hash of its content (CRMs stamp
    changes to the second, and two changes within one second must not collapse into one)."""
    fingerprint = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    return f"poll:{deal_id}:{modified.isoformat()}:{fingerprint[:12]}"


def deadline_timer_key(crm: str, deal_id: str, deadline: str) -> str:
    """A deal's running deadline: one timer per CRM, deal and deadline name."""
    return f"{crm}|{deal_id}|{deadline}"


def timer_event_key(timer_key: str, phase: str, due_at: datetime) -> str:
    """One phase (reminder, breach) of one timer for one due moment."""
    return f"timer:{timer_key}:{phase}:{due_at.isoformat()}"


def schedule_slot(now: datetime) -> str:
    """The minute a scheduled run belongs to: a run repeated within it is the same run."""
    return now.replace(second=0, microsecond=0).isoformat()


def schedule_run_key(rule: str, slot: str) -> str:
    """One run of a scheduled rule; each deal's event key starts with it."""
    return f"schedule:{rule}:{slot}"


def schedule_key(rule: str, slot: str, deal_id: str) -> str:
    """One deal's event of one scheduled run."""
    return f"{schedule_run_key(rule, slot)}:{deal_id}"


def document_key(source: str, entity: str, ref: str, version: str) -> str:
    """One version of a document from a document source (an invoice, a payment, an order)."""
    return f"document:{source}:{entity}:{ref}:{version}"


def document_key_pattern(source: str, ref: str) -> str:
    """A SQL ``LIKE`` pattern matching every version's key of one document of ``source``."""
    return f"document:{source}:%:{ref}:%"


def replay_key(deal_id: str, at: datetime, kind: str, deadline: str = "") -> str:
    """An event of a dry-run's history (nothing is stored; decisions still key on it)."""
    return f"replay:{deal_id}:{at.isoformat()}:{kind}:{deadline}"


def report_run_key(report: str, day: object) -> str:
    """One day's run of a report."""
    return f"report:{report}:{day}"


# --- outbox and audit: what makes two decisions the same ----------------------------------


def rule_decision_prefix(rule: str, crm: str, deal_id: str, version: str) -> str:
    """A rule's firing on a deal; ``version`` says what makes a new firing (``once_per``)."""
    return f"{rule}|{crm}|{deal_id}|{version}"


def rule_decision_key(prefix: str, slot: str) -> str:
    """One action of a firing, by its slot in the rule's steps."""
    return f"{prefix}|{slot}"


def deadline_decision_key(crm: str, deal_id: str, deadline: str, action: str, event_key: str) -> str:
    """A deadline met, cancelled or re-armed by one event."""
    return f"deadline|{crm}|{deal_id}|{deadline}|{action}|{event_key}"


def report_rule(report: str) -> str:
    """The rule name a report's tasks are recorded under."""
    return f"report:{report}"


def report_task_key(report: str, crm: str, day: object, user: str) -> str:
    """One user's task of one day's report."""
    return f"report|{report}|{crm}|{day}|{user}"


def decided_audit_key(idempotency_key: str) -> str:
    """The audit line of a write being decided."""
    return f"{idempotency_key}|decided"


def done_audit_key(idempotency_key: str) -> str:
    """The audit line of a write carried out."""
    return f"{idempotency_key}|done"


def unlinked_audit_key(source: str, ref: str, version: str) -> str:
    """The audit line of a document version no deal could be found for."""
    return f"unlinked:{source}:{ref}:{version}"


# --- cursors: where each poll stopped, and what a document source remembers ------------------

DEALS_STREAM = "deals"
DOCUMENT_MEMORY_PREFIX = "doc:"


def document_stream(entity: str) -> str:
    """The polling position in one document set."""
    return f"documents:{entity}"


def document_memory(entity: str, ref: str) -> str:
    """What was filed for one document (its fingerprint, status and deal)."""
    return f"{DOCUMENT_MEMORY_PREFIX}{entity}:{ref}"
