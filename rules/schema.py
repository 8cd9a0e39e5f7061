"""Marshmallow schemas for ``rules:`` and ``territories:``; loading compiles them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from domain.fields import Id
from domain.suggest import did_you_mean
from rules.actions import (
    END_OF_MONTH,
    ORIGINS,
    AddCommentSpec,
    AssignCaptain,
    AssignSpec,
    CancelDeadlineSpec,
    CloseDealSpec,
    CreateCounterpartySpec,
    CreateOrderSpec,
    CreateTaskSpec,
    EscalateSpec,
    MoveStageSpec,
    ReopenSpec,
    StartDeadlineSpec,
    UpdateFieldsSpec,
)
from rules.conditions import ConditionError, compile_condition
from rules.deadlines import START_FROM, DeadlineDef
from rules.model import ActionSpec, Rule
from rules.org import OrgRef, parse_ref
from rules.reports import PLAN_TEXT, PLAN_TITLE, MissedPlan, ReportDef
from rules.templates import Template, TemplateProblem
from rules.territories import MATCH_KEYS, Territory

TRIGGERS = (
    "deal.created",
    "deal.updated",
    "deal.stage_changed",
    "deal.deleted",
    "deadline.reminder",
    "deadline.breached",
    "invoice.issued",
    "payment.received",
    "order.status_changed",
    "schedule",
)


def _template(value: Any, path: str) -> Template:
    if not isinstance(value, str):
        raise ValidationError({path: ["must be text (a template)"]})
    try:
        return Template(value)
    except TemplateProblem as exc:
        raise ValidationError({path: [str(exc)]}) from exc


def _user_ref(value: Any, path: str) -> str | Template | OrgRef:
    if isinstance(value, int):
        return str(value)
    ref = parse_ref(value)
    if ref is not None:
        return ref
    if not isinstance(value, str) or not value:
        raise ValidationError(
            {
                path: [
                    "a user id, a person of org.people, 'responsible', 'captain', team_lead_of(responsible), "
                    "head_of(team), role(NAME) / {role: NAME} or a template"
                ]
            }
        )
    if re.fullmatch(r"\s*\w+\s*\(.*\)\s*", value):
        raise ValidationError({path: [f"{value!r}: write team_lead_of(responsible), head_of(team) or role(NAME)"]})
    return _template(value, path) if "{" in value else value


def _duration(value: Any, path: str) -> str:
    from rules.calendar import CalendarError, parse_duration

    if value == END_OF_MONTH:
        return END_OF_MONTH
    try:
        parse_duration(str(value))
    except CalendarError as exc:
        raise ValidationError({path: [str(exc)]}) from exc
    return str(value)


def _params(value: Any, allowed: set[str], required: set[str], path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError({path: ["parameters must be a mapping"]})
    errors: dict[str, list[str]] = {}
    for key in value:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed) or f"; allowed: {', '.join(sorted(allowed))}"
            errors[f"{path}.{key}"] = [f"unknown parameter {key!r}{hint}"]
    for key in required - set(value):
        errors[f"{path}.{key}"] = [f"{key!r} is required here: add it (docs/rules.md, Steps)"]
    if errors:
        raise ValidationError(errors)
    return dict(value)


def _assign_captain(v: Any, path: str) -> ActionSpec:
    p = _params(v or {}, {"field", "fallback", "territory_field"}, set(), path)
    fallback = p.get("fallback")
    territory_field = p.get("territory_field")
    return AssignCaptain(
        field=str(p.get("field", "responsible_id")),
        fallback=str(fallback) if fallback is not None else None,
        territory_field=str(territory_field) if territory_field else None,
    )


def _create_task(v: Any, path: str) -> ActionSpec:
    p = _params(
        v,
        {
            "title",
            "description",
            "responsible",
            "due",
            "due_from",
            "due_at",
            "due_time",
            "auditors",
            "priority",
            "type",
        },
        {"title", "responsible"},
        path,
    )
    if "due_time" in p and "due" in p:
        raise ValidationError({f"{path}.due_time": ["give due or due_time, not both"]})
    if "due_time" in p:
        _clock(p["due_time"], f"{path}.due_time")
    if p.get("due_from", "now") not in ORIGINS:
        raise ValidationError({f"{path}.due_from": [f"one of {', '.join(ORIGINS)}"]})
    priority = p.get("priority", "normal")
    if priority not in ("low", "normal", "high"):
        raise ValidationError({f"{path}.priority": ["one of low, normal, high"]})
    return CreateTaskSpec(
        title=_template(p["title"], f"{path}.title"),
        description=_template(p["description"], f"{path}.description") if "description" in p else None,
        responsible=_user_ref(p["responsible"], f"{path}.responsible"),
        due=_duration(p["due"], f"{path}.due") if "due" in p else None,
        auditors=[_user_ref(a, f"{path}.auditors[{i}]") for i, a in enumerate(p.get("auditors") or [])],
        priority=priority,
        task_type=str(p.get("type", "task")),
        due_from=p.get("due_from", "now"),
        due_at=_template(p["due_at"], f"{path}.due_at") if "due_at" in p else None,
        due_time=str(p["due_time"]).strip() if "due_time" in p else None,
    )


def _clock(value: Any, path: str) -> None:
    """A time of day "HH:MM" (00:00-23:59)."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(value).strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValidationError({path: [f"{value!r} is not a time of day like 16:00"]})


def _update_fields(v: Any, path: str) -> ActionSpec:
    if not isinstance(v, Mapping) or not v:
        raise ValidationError({path: ["a mapping of field: value"]})
    return UpdateFieldsSpec(values={str(k): _template(str(x), f"{path}.{k}") for k, x in v.items()})


def _add_comment(v: Any, path: str) -> ActionSpec:
    p = _params(v, {"text"}, {"text"}, path)
    return AddCommentSpec(text=_template(p["text"], f"{path}.text"))


def _close_deal(v: Any, path: str) -> ActionSpec:
    p = _params(v, {"outcome", "reason", "reason_from", "reason_map", "reason_field", "comment"}, {"outcome"}, path)
    if p["outcome"] not in ("won", "lost"):
        raise ValidationError({f"{path}.outcome": ["one of won, lost"]})
    return CloseDealSpec(
        outcome=p["outcome"],
        reason=_template(p["reason"], f"{path}.reason") if "reason" in p else None,
        reason_from=p.get("reason_from"),
        reason_map={str(k): str(x) for k, x in (p.get("reason_map") or {}).items()},
        reason_field=p.get("reason_field"),
        comment=_template(p["comment"], f"{path}.comment") if "comment" in p else None,
    )


def _reopen(v: Any, path: str) -> ActionSpec:
    p = _params(v, {"default_stage"}, {"default_stage"}, path)
    return ReopenSpec(default_stage=str(p["default_stage"]))


def _move_stage(v: Any, path: str) -> ActionSpec:
    p = _params(v if isinstance(v, Mapping) else {"stage": v}, {"stage"}, {"stage"}, path)
    return MoveStageSpec(stage=_template(str(p["stage"]), f"{path}.stage"))


def _assign(v: Any, path: str) -> ActionSpec:
    p = _params(v, {"strategy", "group", "field"}, {"strategy", "group"}, path)
    if p["strategy"] not in ("round_robin", "least_loaded"):
        raise ValidationError({f"{path}.strategy": ["one of round_robin, least_loaded"]})
    group = p["group"]
    if not isinstance(group, list) or not group or not all(isinstance(u, (int, str)) for u in group):
        raise ValidationError({f"{path}.group": ["a non-empty list of user ids"]})
    return AssignSpec(
        strategy=p["strategy"], group=[str(u) for u in group], field=str(p.get("field", "responsible_id"))
    )


def _deadline_name(v: Any, path: str) -> str:
    name = v.get("name") if isinstance(v, Mapping) else v
    if not isinstance(name, str) or not name:
        raise ValidationError({path: ["the name of a deadline from the deadlines: section"]})
    return name


def _escalate(v: Any, path: str) -> ActionSpec:
    p = _params(v, {"to", "title", "description", "comment", "due"}, {"to", "title"}, path)
    return EscalateSpec(
        to=_user_ref(p["to"], f"{path}.to"),
        title=_template(p["title"], f"{path}.title"),
        description=_template(p["description"], f"{path}.description") if "description" in p else None,
        comment=_template(p["comment"], f"{path}.comment") if "comment" in p else None,
        due=_duration(p["due"], f"{path}.due") if "due" in p else None,
    )


COUNTERPARTY_FIELDS = ("name", "full_name", "inn", "kpp", "phone", "email", "comment")


def _create_counterparty(v: Any, path: str) -> ActionSpec:
    p = _params(v, {"in", *COUNTERPARTY_FIELDS}, {"in", "name"}, path)
    return CreateCounterpartySpec(
        target=str(p["in"]), fields={k: _template(str(p[k]), f"{path}.{k}") for k in COUNTERPARTY_FIELDS if k in p}
    )


ORDER_FIELDS = ("counterparty", "inn", "amount", "ship_by", "comment")


def _create_order(v: Any, path: str) -> ActionSpec:
    p = _params(v, {"in", *ORDER_FIELDS}, {"in", "amount", "comment"}, path)
    if "counterparty" not in p and "inn" not in p:
        raise ValidationError({path: ["name the client: inn, counterparty or both"]})
    return CreateOrderSpec(
        target=str(p["in"]), fields={k: _template(str(p[k]), f"{path}.{k}") for k in ORDER_FIELDS if k in p}
    )


def _message(v: Any, path: str) -> ActionSpec:
    from rules.messages import MessageSpec

    p = _params(v, {"channel", "text"}, {"channel", "text"}, path)
    return MessageSpec(channel=str(p["channel"]), text=_template(p["text"], f"{path}.text"))


def _reaction(block: Any, where: str) -> Any:
    """``comment`` and ``task`` of a check's reaction."""
    from rules.reactions import Reaction

    q = _params(block, {"comment", "task"}, set(), where)
    return Reaction(
        comment=_template(q["comment"], f"{where}.comment") if "comment" in q else None,
        task=_create_task(q["task"], f"{where}.task") if "task" in q else None,  # type: ignore[arg-type]  # a CreateTaskSpec
    )


def _find_duplicates(v: Any, path: str) -> ActionSpec:
    from rules.duplicates import FindDuplicatesSpec
    from rules.reactions import Reaction

    p = _params(v, {"phone", "email", "inn", "region", "comment", "task", "link", "invalid"}, set(), path)
    keys: dict[str, str] = {k: str(p[k]) for k in ("phone", "email", "inn") if k in p}
    if not keys:
        raise ValidationError({path: ["name the deal field of at least one of phone, email, inn"]})
    region = str(p.get("region", "RU")).upper()
    if not re.fullmatch(r"[A-Z]{2}", region):
        raise ValidationError({f"{path}.region": ["a two-letter country code such as RU, UA, KZ"]})
    invalid = p.get("invalid")
    return FindDuplicatesSpec(
        fields=keys,
        region=region,
        found=_reaction({k: p[k] for k in ("comment", "task") if k in p}, path),
        link=str(p["link"]) if "link" in p else None,
        invalid=_reaction(invalid, f"{path}.invalid") if invalid is not None else Reaction(),
    )


def _stage_list(value: Any, path: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(i, (str, int)) and str(i).strip() for i in items):
        raise ValidationError({path: ["a stage id or a list of them"]})
    stages = [str(i) for i in items]
    twice = sorted({s for s in stages if stages.count(s) > 1})
    if twice:
        raise ValidationError({path: [f"named twice: {', '.join(twice)}"]})
    return stages


def _guard_stage(v: Any, path: str) -> ActionSpec:
    from rules.guards import GuardStageSpec

    p = _params(v, {"stage", "require", "order", "comment", "task"}, {"stage"}, path)
    stages = _stage_list(p["stage"], f"{path}.stage")
    require = p.get("require") or []
    if not isinstance(require, list) or not all(isinstance(f, str) and f for f in require):
        raise ValidationError({f"{path}.require": ["a list of deal fields that must be filled"]})
    order = _stage_list(p["order"], f"{path}.order") if "order" in p else []
    if not require and not order:
        raise ValidationError({path: ["a guard needs require (fields) or order (the stages in sequence), or both"]})
    outside = [s for s in stages if order and s not in order]
    if outside:
        raise ValidationError({f"{path}.stage": [f"not in order: {', '.join(outside)}"]})
    return GuardStageSpec(
        stages=stages,
        require=list(require),
        order=order,
        reaction=_reaction({k: p[k] for k in ("comment", "task") if k in p}, path),
    )


ACTIONS: dict[str, Callable[[Any, str], ActionSpec]] = {
    "assign_captain": _assign_captain,
    "assign": _assign,
    "create_task": _create_task,
    "update_fields": _update_fields,
    "move_stage": _move_stage,
    "add_comment": _add_comment,
    "close_deal": _close_deal,
    "reopen": _reopen,
    "start_deadline": lambda v, path: StartDeadlineSpec(deadline=_deadline_name(v, path)),
    "cancel_deadline": lambda v, path: CancelDeadlineSpec(deadline=_deadline_name(v, path)),
    "escalate": _escalate,
    "create_counterparty": _create_counterparty,
    "create_order": _create_order,
    "message": _message,
    "find_duplicates": _find_duplicates,
    "guard_stage": _guard_stage,
}


class ActionsField(fields.Field):
    """``do:`` — a list of one-key mappings ``{action_name: parameters}``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[ActionSpec]:
        if not isinstance(value, list) or not value:
            raise ValidationError("a non-empty list of actions")
        specs: list[ActionSpec] = []
        errors: dict[str, Any] = {}
        for i, item in enumerate(value):
            if not isinstance(item, Mapping) or len(item) != 1:
                errors[str(i)] = ["each action is a mapping with one key, the action's name"]
                continue
            ((name, params),) = item.items()
            builder = ACTIONS.get(name)
            if builder is None:
                hint = did_you_mean(str(name), ACTIONS) or f"; known: {', '.join(ACTIONS)}"
                errors[str(i)] = [f"unknown action {name!r}{hint}"]
                continue
            try:
                specs.append(builder(params, name))
            except ValidationError as exc:
                errors[str(i)] = exc.messages
        if errors:
            raise ValidationError(errors)
        return specs


class ConditionField(fields.Field):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            return compile_condition(value)
        except ConditionError as exc:
            # The part of the condition at fault as key path under this key: its own line.
            inner = exc.path.partition(".")[2].replace("[", ".").replace("]", "")
            raise ValidationError({inner: [str(exc)]} if inner else str(exc)) from exc


class RuleSchema(Schema):
    name = fields.String(
        required=True, validate=validate.Regexp(r"^[A-Za-z0-9_.-]+$", error="letters, digits, '-', '_', '.' only")
    )
    crm = fields.String(required=True)
    on = fields.List(fields.String(validate=validate.OneOf(TRIGGERS)), required=True, validate=validate.Length(min=1))
    when = ConditionField(load_default=None, allow_none=True)
    do = ActionsField(required=True)
    once_per = fields.String(load_default="deal", validate=validate.OneOf(("deal", "stage", "event", "run", "holiday")))
    enabled = fields.Boolean(load_default=True)
    description = fields.String(load_default="")
    schedule = fields.String(
        load_default=None,
        allow_none=True,
        metadata={"doc": "cron (minute hour day month weekday) in the calendar's zone"},
    )
    calendar = fields.String(
        load_default=None,
        allow_none=True,
        metadata={"doc": "a calendar of `calendars:` by name; default: the responsible's team's, else `calendar:`"},
    )

    @validates_schema
    def check_schedule(self, data: dict[str, Any], **kwargs: Any) -> None:
        scheduled = "schedule" in (data.get("on") or [])
        if scheduled and not data.get("schedule"):
            raise ValidationError({"schedule": ["required with on: [schedule], e.g. '0 19 * * mon-fri'"]})
        if data.get("schedule"):
            if not scheduled:
                raise ValidationError({"schedule": ["only for rules with on: [schedule]"]})
            _check_cron(data["schedule"])

    @validates_schema
    def check_guards(self, data: dict[str, Any], **kwargs: Any) -> None:
        from rules.guards import GuardStageSpec

        if not any(isinstance(s, GuardStageSpec) for s in data.get("do") or []):
            return
        if not {"deal.stage_changed", "deal.updated"} & set(data.get("on") or []):
            raise ValidationError({"on": ["a stage guard acts on moves: include deal.stage_changed"]})
        if data.get("once_per") != "event":
            # Keyed once per deal or stage, a second refused move would repeat the first's keys
            # and never be returned.
            raise ValidationError({"once_per": ["a stage guard acts on every move: once_per: event"]})

    @post_load
    def build(self, data: dict[str, Any], **kwargs: Any) -> Rule:
        for step in data["do"]:
            if isinstance(step, AssignSpec):
                step.rule = data["name"]  # round-robin counts per rule
        return Rule(
            name=data["name"],
            crm=data["crm"],
            triggers=frozenset(data["on"]),
            condition=data["when"] or compile_condition(None),
            actions=data["do"],
            once_per=data["once_per"],
            enabled=data["enabled"],
            schedule=data["schedule"],
            calendar=data["calendar"],
        )


class TerritorySchema(Schema):
    match = fields.Dict(
        keys=fields.String(validate=validate.OneOf(MATCH_KEYS)),
        values=fields.String(),
        required=True,
        validate=validate.Length(min=1),
    )
    captain = Id(required=True)
    backup = Id(load_default=None, allow_none=True)
    name = fields.String(load_default="")

    @validates_schema
    def check_postcode(self, data: dict[str, Any], **kwargs: Any) -> None:
        postcode = data.get("match", {}).get("postcode")
        if postcode is not None and not postcode.rstrip("*").isdigit():
            raise ValidationError({"match": {"postcode": ["digits, optionally ending in * (a prefix)"]}})

    @post_load
    def build(self, data: dict[str, Any], **kwargs: Any) -> Territory:
        return Territory(match=data["match"], captain=data["captain"], backup=data["backup"], name=data["name"])


class DeadlineSchema(Schema):
    """One entry of ``deadlines:`` (the key is its name)."""

    due = fields.String(required=True)
    remind_before = fields.String(load_default=None, allow_none=True)
    done_when = ConditionField(load_default=None, allow_none=True)
    rearm_on = fields.List(fields.String(), load_default=list)
    start_from = fields.String(load_default="now", validate=validate.OneOf(START_FROM))
    description = fields.String(load_default="")
    penalty = fields.Boolean(
        load_default=False, metadata={"doc": "its breaches go to the penalty report (`connector penalties`)"}
    )

    @validates_schema
    def check_durations(self, data: dict[str, Any], **kwargs: Any) -> None:
        for key in ("due", "remind_before"):
            if data.get(key) is not None:
                _duration(data[key], key)

    @post_load
    def build(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return data


def build_deadline(name: str, data: Mapping[str, Any]) -> DeadlineDef:
    """A DeadlineDef from its loaded config block."""
    return DeadlineDef(
        name=name,
        due=data["due"],
        remind_before=data["remind_before"],
        done_when=data["done_when"],
        rearm_on=frozenset(data["rearm_on"]),
        start_from=data["start_from"],
        description=data["description"],
        penalty=data["penalty"],
    )


def _check_cron(value: str) -> None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as exc:
        raise ValidationError({"schedule": [f"not a cron expression: {exc}"]}) from exc


class ReportSchema(Schema):
    """One entry of ``reports:``: a periodic report written as a task (and a CSV file)."""

    name = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_.-]+$"))
    crm = fields.String(required=True)
    schedule = fields.String(required=True, metadata={"doc": "cron in the calendar's zone"})
    to = fields.Raw(
        load_default=None,
        metadata={
            "doc": "'responsible' (each user their own) or a user id; plan-vs-fact reports also "
            "'person', 'team_lead', 'head', 'role(NAME)' or a person of org.people"
        },
    )
    when = ConditionField(load_default=None, allow_none=True)
    title = fields.String(load_default=None, metadata={"doc": "task title (template); plan reports have one"})
    text = fields.String(load_default=None, metadata={"doc": "task text (template); plan reports: the table"})
    due = fields.String(load_default=None, allow_none=True)
    period = fields.String(
        load_default="day",
        validate=validate.OneOf(("day", "week", "month", "quarter", "year")),
        metadata={"doc": "plan-vs-fact: the period reported on (the last one that ended)"},
    )
    indicators = fields.List(
        fields.String(), load_default=list, metadata={"doc": "plan-vs-fact: the indicators compared with the plans"}
    )
    by = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1, max=31),
        metadata={"doc": "plan-vs-fact: due on this day of the next month, or the working day before"},
    )
    file = fields.String(load_default=None, metadata={"doc": "plan-vs-fact: also write a CSV here (template)"})
    missed = fields.Dict(
        load_default=None,
        metadata={
            "doc": "plan-vs-fact: {title, text, to} of a task to the team lead (to: person: the person) of each "
            "person below plan"
        },
    )
    ahead = fields.Boolean(
        load_default=False,
        metadata={"doc": "plan-vs-fact: the day just begun, counting the activities planned in it (not yet done)"},
    )
    channel = fields.String(
        load_default=None,
        allow_none=True,
        metadata={"doc": "plan-vs-fact: also post the whole table, once per period, to this channel of channels"},
    )
    current = fields.Boolean(
        load_default=False,
        metadata={"doc": "plan-vs-fact: report on the running period, on its last working day (not the last one)"},
    )
    targets = fields.Dict(
        keys=fields.String(),
        values=fields.Decimal(validate=validate.Range(min=0)),
        load_default=dict,
        metadata={"doc": "plan-vs-fact: {indicator: plan} per person and period where no plan is loaded"},
    )
    person_field = fields.String(
        load_default=None,
        allow_none=True,
        metadata={"doc": "plan-vs-fact: the record field naming the user a fact counts for (else its responsible)"},
    )
    calendar = fields.String(
        load_default=None,
        allow_none=True,
        metadata={
            "doc": "a calendar of calendars: the schedule's zone, the working days and the end of work "
            "count on (else the top-level one)"
        },
    )
    group_by = fields.String(
        load_default=None,
        allow_none=True,
        metadata={
            "doc": "plan-vs-fact: also a row per value of this deal field (e.g. the territory "
            "assign_captain wrote), without plans"
        },
    )

    @validates_schema
    def check(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("schedule"):
            _check_cron(data["schedule"])
        for key in ("title", "text", "file"):
            if data.get(key):
                _template(data[key], key)
        if data.get("due"):
            _duration(data["due"], "due")
        planned = bool(data.get("indicators"))
        if not planned:
            for key in ("title", "text"):
                if not data.get(key):
                    raise ValidationError({key: ["Missing data for required field."]})
            for key in ("by", "file", "missed", "channel", "person_field", "group_by", "ahead"):
                if data.get(key) not in (None, False):
                    raise ValidationError({key: ["only a plan-vs-fact report (with indicators) has it"]})
            if data.get("period", "day") != "day":
                raise ValidationError({"period": ["only a plan-vs-fact report (with indicators) covers a period"]})
            for key in ("current", "targets"):
                if data.get(key):
                    raise ValidationError({key: ["only a plan-vs-fact report (with indicators) has it"]})
            if data.get("to") in ("head", "team_lead", "person"):
                raise ValidationError({"to": [f"{data['to']}: only a plan-vs-fact report (with indicators) has it"]})
        elif not any(data.get(key) for key in ("to", "file", "channel", "missed")):
            raise ValidationError(
                {
                    "to": [
                        "the report has no recipient: give to (head, team_lead, person, role(NAME), a user id), "
                        "file or missed"
                    ]
                }
            )
        if data.get("current") and data.get("by") is not None:
            raise ValidationError(
                {"by": ["a report on the running period is due on its last working day, not by a day"]}
            )
        if unknown := sorted(set(data.get("targets") or {}) - set(data.get("indicators") or ())):
            raise ValidationError({"targets": [f"{', '.join(unknown)}: not among the report's indicators"]})
        if data.get("missed") is not None:
            _params(data["missed"], {"title", "text", "to"}, {"title"}, "missed")
            if data.get("period") != "day":
                raise ValidationError({"missed": ["a missed plan is a day report's reaction (period: day)"]})
            if data["missed"].get("to", "team_lead") not in ("team_lead", "person"):
                raise ValidationError({"missed.to": ["a missed plan goes to team_lead (the default) or person"]})
        if data.get("ahead") and data.get("current"):
            raise ValidationError({"ahead": ["a report is either ahead (the day just begun) or current, not both"]})
        if data.get("ahead") and (data.get("period") != "day" or data.get("by") is not None):
            raise ValidationError({"ahead": ["ahead reports on the day just begun: period: day, no by"]})

    @post_load
    def build(self, data: dict[str, Any], **kwargs: Any) -> ReportDef:
        planned = bool(data["indicators"])
        missed = data["missed"]
        return ReportDef(
            name=data["name"],
            crm=data["crm"],
            schedule=data["schedule"],
            to=None if data["to"] is None and planned else str(data["to"] or "responsible"),
            title=_template(data["title"] or PLAN_TITLE, "title"),
            text=_template(data["text"] or PLAN_TEXT, "text"),
            condition=data["when"],
            due=data["due"],
            period=data["period"],
            indicators=tuple(data["indicators"]),
            by=data["by"],
            file=_template(data["file"], "file") if data["file"] else None,
            missed=MissedPlan(
                title=_template(missed["title"], "missed.title"),
                text=_template(missed.get("text") or PLAN_TEXT, "missed.text"),
                to=str(missed.get("to") or "team_lead"),
            )
            if missed
            else None,
            channel=data["channel"],
            current=data["current"],
            targets=dict(data["targets"]),
            person_field=data["person_field"],
            group_by=data["group_by"],
            calendar=data["calendar"],
            ahead=bool(data["ahead"]),
        )
