"""The steps a rule can take (``do:``), each turning the context into actions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain import AddComment, CloseDeal, CreateCounterparty, CreateOrder, CreateTask, UpdateDeal
from domain.statuses import DeadlinePhase
from rules.model import (
    ActionSpec,
    CancelDeadline,
    CountAssignment,
    Note,
    Planned,
    RecordBreach,
    RuleContext,
    StepWrite,
)
from rules.org import Org, OrgRef
from rules.templates import Template
from rules.territories import choose_captain


class ActionError(ValueError):
    """A ``do`` step whose parameters cannot be understood."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


END_OF_MONTH = "end_of_month"
ORIGINS = ("now", "created", "event")


def deadline(ctx: RuleContext, due: str | None, origin: str = "now") -> datetime | None:
    """``due`` after the origin (now, the deal's creation or the event), counted on the
    working calendar when it names working units; ``end_of_month``: the month's last moment."""
    if not due:
        return None
    if ctx.calendar is None:
        raise ActionError("a deadline needs the calendar")
    start = ctx.now
    if origin == "created" and ctx.deal.created_at is not None:
        start = ctx.deal.created_at
    elif origin == "event":
        start = ctx.event.occurred_at
    if due == END_OF_MONTH:
        return ctx.calendar.end_of_month(start)
    return ctx.calendar.add(start, due)


def by_time_of_day(ctx: RuleContext, clock: str, origin: str = "now") -> datetime:
    """``clock`` on the origin's working day while still ahead, else on the next working day."""
    if ctx.calendar is None:
        raise ActionError("a deadline needs the calendar")
    start = ctx.now
    if origin == "created" and ctx.deal.created_at is not None:
        start = ctx.deal.created_at
    elif origin == "event":
        start = ctx.event.occurred_at
    return ctx.calendar.working_day_at(start, clock)


def _moment(text: str) -> datetime | None:
    """A rendered ``due_at``: an ISO date-time with its zone, or nothing."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value if value.tzinfo else None


UserRef = str | Template | OrgRef


def _user(value: UserRef, ctx: RuleContext, results: Mapping[str, Any]) -> str:
    """The one user a reference names (the first of several); empty when nobody."""
    found = _users(value, ctx, results)[0]
    return found[0] if found else ""


def _users(value: UserRef, ctx: RuleContext, results: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """Every user a reference names, and how it was resolved (for the audit)."""
    org = ctx.org or _NO_ORG
    if isinstance(value, OrgRef):
        resolved = org.resolve(value, ctx.deal.crm, ctx.deal.responsible_id)
        return resolved.user_ids, resolved.how
    if isinstance(value, Template):
        return _one(value.render(ctx.template_vars(results))), ""
    if value == "responsible":
        return _one(ctx.deal.responsible_id or ""), ""
    if value in results:
        return _one(str(results[value])), ""
    if value in org.people:
        return org.resolve(OrgRef("person", value, value), ctx.deal.crm, None).user_ids, f"person {value}"
    return _one(value), ""


def _one(user_id: str) -> tuple[str, ...]:
    return (user_id,) if user_id else ()


_NO_ORG = Org()


@dataclass
class AssignCaptain(ActionSpec):
    """Set the deal's responsible (or ``field``) to the captain for its location, and with
    ``territory_field`` write the matched territory's name there (reports group by it)."""

    field: str = "responsible_id"
    fallback: str | None = None
    territory_field: str | None = None
    name: str = "assign_captain"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(UpdateDeal)]

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        choice = choose_captain(ctx.territories, ctx.deal.location, ctx.users, self.fallback)
        out = [Planned(f"{slot}:note", Note(f"captain: {choice.reason}"))]
        if choice.user_id is None:
            return out
        results["captain"] = choice.user_id
        values: dict[str, Any] = {}
        current = ctx.deal.responsible_id if self.field == "responsible_id" else ctx.deal.get(self.field)
        if str(current or "") != choice.user_id:
            values[self.field] = choice.user_id
        if self.territory_field:
            # No territory matched (the fallback captain): the field is emptied, not left stale.
            name = choice.territory.name if choice.territory is not None else ""
            results["territory"] = name
            if str(ctx.deal.get(self.territory_field) or "") != name:
                values[self.territory_field] = name
        if values:
            out.append(Planned(slot, UpdateDeal(ctx.deal.id, values=values)))
        return out


@dataclass
class CreateTaskSpec(ActionSpec):
    title: Template
    responsible: UserRef
    description: Template | None = None
    due: str | None = None
    auditors: list[UserRef] = field(default_factory=list)
    priority: str = "normal"
    task_type: str = "task"
    due_from: str = "now"
    due_at: Template | None = None  # a moment taken from the deal ("the agreed visit time")
    due_time: str | None = None  # "16:00": by that time of the working day (the next one when past)
    name: str = "create_task"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(CreateTask)]

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        variables = ctx.template_vars(results)
        responsibles, how = _users(self.responsible, ctx, results)
        if not responsibles:
            return [Planned(f"{slot}:note", Note(f"task not created: {how or 'no responsible user'}"))]
        due = deadline(ctx, self.due, self.due_from)
        if self.due_time is not None:
            due = by_time_of_day(ctx, self.due_time, self.due_from)
        if self.due_at is not None:
            rendered = self.due_at.render(variables)
            due = _moment(rendered) or due
            if due is None:
                return [Planned(f"{slot}:note", Note(f"task not created: due_at {rendered!r} is not a moment"))]
        auditors = tuple(dict.fromkeys(a for x in self.auditors for a in _users(x, ctx, results)[0]))
        out: list[Planned] = []
        if how:
            out.append(Planned(f"{slot}:to", Note(f"{self.responsible} -> {', '.join(responsibles)} ({how})")))
        # A role's people each get their own task, keyed by who they are (stable as the role grows).
        per_person = isinstance(self.responsible, OrgRef) and self.responsible.kind == "role"
        for responsible in responsibles:
            task = CreateTask(
                ctx.deal.id,
                title=self.title.render(variables),
                description=self.description.render(variables) if self.description else "",
                responsible_id=responsible,
                deadline=due,
                auditors=auditors,
                priority=self.priority,  # type: ignore[arg-type]
                task_type=self.task_type,
            )
            out.append(Planned(f"{slot}:{responsible}" if per_person else slot, task))
        return out


@dataclass
class UpdateFieldsSpec(ActionSpec):
    values: dict[str, Template]
    name: str = "update_fields"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(UpdateDeal)]

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        variables = ctx.template_vars(results)
        values = {k: v.render(variables) for k, v in self.values.items()}
        changed = {k: v for k, v in values.items() if str(ctx.deal.get(k) or "") != v}
        return [Planned(slot, UpdateDeal(ctx.deal.id, values=changed))] if changed else []


@dataclass
class AddCommentSpec(ActionSpec):
    text: Template
    name: str = "add_comment"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(AddComment)]

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
    comment: Template | None = None  # written on the deal's timeline with the reason
    name: str = "close_deal"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(CloseDeal)] + ([StepWrite(AddComment)] if self.comment is not None else [])

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        reason = ""
        if self.reason_from:
            raw = str(ctx.deal.get(self.reason_from) or "")
            reason = self.reason_map.get(raw, raw)
        if not reason and self.reason is not None:
            reason = self.reason.render(ctx.template_vars(results))
        if self.outcome == "lost" and not reason:
            return [Planned(f"{slot}:note", Note("not closed as lost: no reason given"))]
        out = [
            Planned(
                slot,
                CloseDeal(
                    ctx.deal.id,
                    outcome=self.outcome,  # type: ignore[arg-type]  # checked by the schema: won or lost
                    reason=reason,
                    reason_field=self.reason_field,
                ),
            )
        ]
        if self.comment is not None:
            text = self.comment.render({**ctx.template_vars(results), "reason": reason})
            out.append(Planned(f"{slot}:comment", AddComment(ctx.deal.id, text=text)))
        return out


@dataclass
class ReopenSpec(ActionSpec):
    """Put a deal closed without what the regulation requires back where it was."""

    default_stage: str
    name: str = "reopen"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(UpdateDeal)]

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        before = ctx.changes.get("stage", (None, None))[0]
        stage = str(before) if before and before != ctx.deal.stage else self.default_stage
        return [Planned(slot, UpdateDeal(ctx.deal.id, values={"stage": stage}))]


@dataclass
class MoveStageSpec(ActionSpec):
    """Move the deal to a stage (a template: ``{{ changes.stage.before }}`` reopens it)."""

    stage: Template
    name: str = "move_stage"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(UpdateDeal)]

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        stage = self.stage.render(ctx.template_vars(results))
        if not stage or stage == ctx.deal.stage:
            return []
        return [Planned(slot, UpdateDeal(ctx.deal.id, values={"stage": stage}))]


@dataclass
class AssignSpec(ActionSpec):
    """Assign within a group: ``round_robin`` (whom this rule gave the fewest deals, in
    group order on a tie) or ``least_loaded`` (fewest open deals right now)."""

    strategy: str
    group: list[str]
    rule: str = ""
    field: str = "responsible_id"
    name: str = "assign"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(UpdateDeal)]

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        members = [u for u in self.group if ctx.users.get(u) is None or ctx.users[u].active] or self.group
        counts = ctx.workload if self.strategy == "least_loaded" else ctx.assigned.get(self.rule, {})
        chosen = min(members, key=lambda u: (counts.get(u, 0), members.index(u)))
        results["assignee"] = chosen
        out = [
            Planned(
                f"{slot}:note", Note(f"assigned by {self.strategy}: user {chosen} ({counts.get(chosen, 0)} before)")
            )
        ]
        current = ctx.deal.responsible_id if self.field == "responsible_id" else ctx.deal.get(self.field)
        if str(current or "") != chosen:
            out.append(Planned(slot, UpdateDeal(ctx.deal.id, values={self.field: chosen})))
            if self.strategy == "round_robin":
                out.append(Planned(f"{slot}:count", CountAssignment(self.rule, chosen)))
        return out


@dataclass
class StartDeadlineSpec(ActionSpec):
    deadline: str
    name: str = "start_deadline"

    def writes(self) -> list[StepWrite]:
        return []

    def fixed_slots(self, slot: str) -> tuple[str, ...] | None:
        return (slot,)

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        from rules.deadlines import start

        definition = ctx.deadlines.get(self.deadline)
        if definition is None:
            raise ActionError(f"no deadline named {self.deadline!r}")
        return [Planned(slot, start(definition, ctx))]


@dataclass
class CancelDeadlineSpec(ActionSpec):
    deadline: str
    name: str = "cancel_deadline"

    def writes(self) -> list[StepWrite]:
        return []

    def fixed_slots(self, slot: str) -> tuple[str, ...] | None:
        return (slot,)

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        return [Planned(slot, CancelDeadline(self.deadline, reason="cancelled by rule"))]


@dataclass
class EscalateSpec(ActionSpec):
    """A task to the supervisor, a comment on the deal and, on a breached deadline, a
    breach record for the penalty report."""

    to: UserRef
    title: Template
    description: Template | None = None
    comment: Template | None = None
    due: str | None = None
    name: str = "escalate"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(CreateTask)] + ([StepWrite(AddComment)] if self.comment is not None else [])

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        out: list[Planned] = []
        data = ctx.event.data
        if data.get("phase") == DeadlinePhase.BREACHED:
            due_at = data.get("due_at")
            out.append(
                Planned(
                    f"{slot}:breach",
                    RecordBreach(
                        str(data.get("deadline", "")),
                        datetime.fromisoformat(due_at) if isinstance(due_at, str) else None,
                        # Whoever is responsible now, at the breach (the deal is read fresh), is
                        # charged; the one at the deadline's start only when the deal names no one.
                        str(ctx.deal.responsible_id or data.get("responsible_id") or "") or None,
                    ),
                )
            )
        task = CreateTaskSpec(
            title=self.title, responsible=self.to, description=self.description, due=self.due, priority="high"
        )
        out.extend(task.plan(ctx, results, f"{slot}:task"))
        if self.comment is not None:
            out.extend(AddCommentSpec(self.comment).plan(ctx, results, f"{slot}:comment"))
        return out


@dataclass
class CreateCounterpartySpec(ActionSpec):
    """Create the deal's client as a counterparty in the accounting system ``target``."""

    target: str
    fields: dict[str, Template]
    name: str = "create_counterparty"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(CreateCounterparty, crm=self.target, param="in")]

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        variables = ctx.template_vars(results)
        values = {k: t.render(variables) for k, t in self.fields.items()}
        if not values.get("name"):
            return [Planned(f"{slot}:note", Note("counterparty not created: no name on the card"))]
        return [Planned(slot, CreateCounterparty(ctx.deal.id, target=self.target, **values))]


@dataclass
class CreateOrderSpec(ActionSpec):
    """Create the deal's order in the accounting system ``target``, from the deal's data."""

    target: str
    fields: dict[str, Template]
    name: str = "create_order"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(CreateOrder, crm=self.target, param="in")]

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        variables = ctx.template_vars(results)
        values = {k: t.render(variables).strip() for k, t in self.fields.items()}
        if not values.get("inn") and not values.get("counterparty"):
            return [Planned(f"{slot}:note", Note("order not created: no client (INN or name) on the card"))]
        return [Planned(slot, CreateOrder(ctx.deal.id, target=self.target, **values))]
