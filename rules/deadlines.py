"""Deadlines that enforce themselves: their definitions and the pure decisions about them.

A deadline is defined once in the config (``deadlines:``) and started by a rule's
``start_deadline`` step. The connector keeps it as a durable timer; a scan turns a due
reminder or breach into an event (``deadline.reminder`` / ``deadline.breached``) that
rules act on like any other. Here live the parts that need no database: when it is due,
when to remind, and whether a deal's change finishes or re-arms it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from rules.model import CancelDeadline, Condition, RuleContext, StartDeadline

START_FROM = ("now", "created", "event")


@dataclass(frozen=True)
class DeadlineDef:
    """One configured deadline.

    ``due``: how long after the start ("3 working days", "24h"); ``remind_before``: how
    long before the due moment the reminder fires; ``done_when``: once this holds the
    deadline is met and stops; ``rearm_on``: deal fields whose change restarts it (the
    agreed visit date moved, say); ``start_from``: count from now, the deal's creation or
    the event's moment; ``penalty``: a breach of it is withheld from the pay of whoever
    is responsible at the breach (the penalty report counts only these).
    """

    name: str
    due: str
    remind_before: str | None = None
    done_when: Condition | None = None
    rearm_on: frozenset[str] = frozenset()
    start_from: str = "now"
    description: str = ""
    penalty: bool = False


@dataclass(frozen=True)
class OpenDeadline:
    """What the worker knows of a running deadline of the deal under review."""

    name: str
    due_at: datetime
    status: str  # open | reminded


def start(definition: DeadlineDef, ctx: RuleContext, *, rearm: bool = False) -> StartDeadline:
    """The StartDeadline for ``definition`` in this context (due and reminder moments)."""
    if ctx.calendar is None:
        raise ValueError("a deadline needs the calendar")
    origin = ctx.now
    if definition.start_from == "created" and ctx.deal.created_at is not None:
        origin = ctx.deal.created_at
    elif definition.start_from == "event":
        origin = ctx.event.occurred_at
    if rearm:
        origin = ctx.now  # a re-armed deadline counts from the change that re-armed it
    due_at = (
        ctx.calendar.end_of_month(origin)
        if definition.due == "end_of_month"
        else ctx.calendar.add(origin, definition.due)
    )
    remind_at = ctx.calendar.subtract(due_at, definition.remind_before) if definition.remind_before else None
    return StartDeadline(
        definition.name, due_at=due_at, remind_at=remind_at, responsible_id=ctx.deal.responsible_id, rearm=rearm
    )


def review(
    definitions: Mapping[str, DeadlineDef], running: Iterable[OpenDeadline], ctx: RuleContext
) -> list[StartDeadline | CancelDeadline]:
    """Decide, for the deal's running deadlines, which are met and which re-arm."""
    out: list[StartDeadline | CancelDeadline] = []
    for timer in running:
        definition = definitions.get(timer.name)
        if definition is None:
            out.append(CancelDeadline(timer.name, reason="no longer configured"))
            continue
        if definition.done_when is not None and definition.done_when(ctx):
            out.append(CancelDeadline(timer.name, reason="done"))
        elif definition.rearm_on & set(ctx.changes):
            out.append(start(definition, ctx, rearm=True))
    return out
