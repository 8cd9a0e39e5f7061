"""What changed between two readings of a deal, and which triggers an event fires."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from domain import Deal, EventKind
from domain.statuses import DeadlinePhase

DEAL_KINDS = frozenset({EventKind.DEAL_CREATED, EventKind.DEAL_UPDATED})
# A deal first seen this soon after its creation counts as newly created.
CREATED_GRACE = timedelta(minutes=2)
_ATTRIBUTES = ("title", "stage", "stage_semantic", "pipeline", "responsible_id", "amount")


def diff(
    before: Mapping[str, Any] | None, after: Mapping[str, Any], ignore: frozenset[str] = frozenset()
) -> dict[str, tuple[Any, Any]]:
    """Changed normalised attributes and raw fields between two snapshots.

    ``ignore``: fields the CRM stamps on every change (its bookkeeping fields); they change
    whenever anything does, so a change of theirs is no change of its own.
    """
    if before is None:
        return {}
    changes: dict[str, tuple[Any, Any]] = {}
    for key in _ATTRIBUTES:
        if before.get(key) != after.get(key):
            changes[key] = (before.get(key), after.get(key))
    old_fields, new_fields = before.get("fields") or {}, after.get("fields") or {}
    if old_fields == new_fields:
        return changes  # one comparison in C instead of one per field (most events' case)
    for key in set(old_fields) | set(new_fields):
        if key in ignore:
            continue
        if old_fields.get(key) != new_fields.get(key):
            changes[key] = (old_fields.get(key), new_fields.get(key))
    return changes


def triggers_for(
    kind: EventKind,
    deal: Deal,
    snapshot: Mapping[str, Any] | None,
    changes: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
) -> frozenset[str]:
    """The triggers an event fires, given what the connector knew before."""
    if kind == EventKind.TIMER_DUE:
        return frozenset({f"deadline.{(data or {}).get('phase', DeadlinePhase.BREACHED)}"})
    if kind == EventKind.SCHEDULE:
        return frozenset({str(EventKind.SCHEDULE)})
    found = {str(kind)}
    if kind not in DEAL_KINDS:
        return frozenset(found)  # a document's event: its own trigger only
    if snapshot is None:
        # Never seen: a lost creation event still counts as creation if the deal is young.
        young = deal.created_at and deal.updated_at and deal.updated_at - deal.created_at <= CREATED_GRACE
        if kind == EventKind.DEAL_CREATED or young:
            found.add(str(EventKind.DEAL_CREATED))
        found.add("deal.stage_changed")  # the deal entered its stage as far as we know
    elif "stage" in changes or "stage_semantic" in changes:  # a CRM may close a deal without moving its stage
        found.add("deal.stage_changed")
    return frozenset(found)
