"""The steps a rule can take (``do:``), each turning the context into actions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connector.domain import AddComment, CloseDeal, CreateTask, UpdateDeal
from rules.model import ActionSpec, Note, Planned, RuleContext
from rules.templates import Template
from rules.territories import choose_captain


class ActionError(ValueError):
    """A ``do`` step whose parameters cannot be understood."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


def deadline(ctx: RuleContext, due: str | None) -> datetime | None:
    """``due`` from now, counted on the working calendar when it names working units."""
    if not due:
        return None
    if ctx.calendar is None:
        raise ActionError("a deadline needs the calendar")
    return ctx.calendar.add(ctx.now, due)


def _user(value: str | Template, ctx: RuleContext, results: Mapping[str, Any]) -> str:
    if isinstance(value, Template):
        return value.render(ctx.template_vars(results))
    if value == "responsible":
        return ctx.deal.responsible_id or ""
    if value in results:
        return str(results[value])
    return value


@dataclass
class AssignCaptain(ActionSpec):
    """Set the deal's responsible (or ``field``) to the captain for its location."""

    field: str = "responsible_id"
    fallback: str | None = None
    name: str = "assign_captain"

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        choice = choose_captain(ctx.territories, ctx.deal.location, ctx.users, self.fallback)
        out = [Planned(f"{slot}:note", Note(f"captain: {choice.reason}"))]
        if choice.user_id is None:
            return out
        results["captain"] = choice.user_id
        current = ctx.deal.responsible_id if self.field == "responsible_id" else ctx.deal.get(self.field)
        if str(current or "") != choice.user_id:
            out.append(Planned(slot, UpdateDeal(ctx.deal.id, values={self.field: choice.user_id})))
        return out


@dataclass
class CreateTaskSpec(ActionSpec):
    title: Template
    responsible: str | Template
    description: Template | None = None
    due: str | None = None
    auditors: list[str | Template] = field(default_factory=list)
    priority: str = "normal"
    task_type: str = "task"
    name: str = "create_task"

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        variables = ctx.template_vars(results)
        responsible = _user(self.responsible, ctx, results)
        if not responsible:
            return [Planned(f"{slot}:note", Note("task not created: no responsible user"))]
        task = CreateTask(
            ctx.deal.id,
            title=self.title.render(variables),
            description=self.description.render(variables) if self.description else "",
            responsible_id=responsible,
            deadline=deadline(ctx, self.due),
            auditors=tuple(a for a in (_user(x, ctx, results) for x in self.auditors) if a),
            priority=self.priority,  # type: ignore[arg-type]
            task_type=self.task_type,
        )
        return [Planned(slot, task)]


@dataclass
class UpdateFieldsSpec(ActionSpec):
    values: dict[str, Template]
    name: str = "update_fields"

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        variables = ctx.template_vars(results)
        values = {k: v.render(variables) for k, v in self.values.items()}
        changed = {k: v for k, v in values.items() if str(ctx.deal.get(k) or "") != v}
        return [Planned(slot, UpdateDeal(ctx.deal.id, values=changed))] if changed else []


@dataclass
class AddCommentSpec(ActionSpec):
    text: Template
    name: str = "add_comment"

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        return [Planned(slot, AddComment(ctx.deal.id, text=self.text.render(ctx.template_vars(results))))]


@dataclass
class CloseDealSpec(ActionSpec):
    """Close the deal; the reason comes from a field, a mapping of its value, or a fixed text."""

    outcome: str = "lost"
    reason: Template | None = None
    reason_from: str | None = None
    reason_map: dict[str, str] = field(default_factory=dict)
    reason_field: str | None = None
    name: str = "close_deal"

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        reason = ""
        if self.reason_from:
            raw = str(ctx.deal.get(self.reason_from) or "")
            reason = self.reason_map.get(raw, raw)
        if not reason and self.reason is not None:
            reason = self.reason.render(ctx.template_vars(results))
        if self.outcome == "lost" and not reason:
            return [Planned(f"{slot}:note", Note("not closed as lost: no reason given"))]
        return [Planned(slot, CloseDeal(ctx.deal.id, outcome=self.outcome, reason=reason,  # type: ignore[arg-type]
                                        reason_field=self.reason_field))]
