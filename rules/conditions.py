"""Conditions in the config (``when:``) compiled into predicates over a RuleContext.

Forms:
  {stage: X | [X, ...]}              deal stage in the set
  {pipeline: X | [X, ...]}           deal pipeline in the set
  {outcome: open | won | lost}       the stage's meaning
  {stage_changed: {from: [..], to: [..]}}   this event moved the deal between those stages
  {deadline: NAME | [NAME, ...]}     the event is that deadline's reminder or breach
  {holiday_within: N}                a public holiday falls within the next N days
  {weekday: [sat, sun]}, {working_time: false}, {working_day: B}, {holiday: B},
  {time_between: "19:00-09:00"}      time tests, each with optional at: (event | now | FIELD)
                                     and calendar: NAME (see rules.timeconds)
  {field: F, OP: ARG}                a deal field (normalised name or CRM field)
  {event_field: F, OP: ARG}          a value the event carries (a 1C payment's amount, ...)
  {all: [...]}, {any: [...]}, {not: {...}}
OPs: equals, in, empty, matches, changed (fields only), gt, gte, lt, lte (numbers),
older_than, newer_than (a date field against now: "24h", "3 working days").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from domain.suggest import did_you_mean
from rules.model import Condition, RuleContext
from rules.timeconds import MODIFIERS, TIME_KEYS, TimeConditionError, compile_time


class ConditionError(ValueError):
    """A ``when`` that cannot be understood; ``path`` locates it inside the condition."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


CONDITION_KEYS = (
    "stage",
    "pipeline",
    "outcome",
    "stage_changed",
    "deadline",
    "holiday_within",
    "field",
    "event_field",
    "all",
    "any",
    "not",
)
_FIELD_OPS = ("equals", "in", "empty", "matches", "changed", "gt", "gte", "lt", "lte", "older_than", "newer_than")
_COMPARE: dict[str, Callable[[Decimal, Decimal], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}
Getter = Callable[[RuleContext], Any]


def compile_condition(spec: Any, path: str = "when") -> Condition:
    """Compile a condition spec; None means always true."""
    if spec is None:
        return lambda ctx: True
    if isinstance(spec, list):
        return compile_condition({"all": spec}, path)
    if not isinstance(spec, Mapping) or not spec:
        raise ConditionError("a condition is a non-empty mapping", path)
    parts: list[Condition] = []
    if "field" in spec or "event_field" in spec:
        # A field test may sit beside other keys: {stage: X, field: F, equals: V}.
        own = {k: v for k, v in spec.items() if k in ("field", "event_field") or k in _FIELD_OPS}
        try:
            parts.append(_field_condition(own, path))
        except ConditionError as exc:
            # A test missing beside an unknown key: the key is the misspelt test.
            stray = [k for k in spec if k not in own and k not in CONDITION_KEYS]
            if len(own) > 1 or not stray:
                raise
            hint = did_you_mean(str(stray[0]), _FIELD_OPS) or f"; one of {', '.join(_FIELD_OPS)}"
            raise ConditionError(f"unknown field test {stray[0]!r}{hint}", f"{path}.{stray[0]}") from exc
        spec = {k: v for k, v in spec.items() if k not in own}
    if any(k in spec for k in (*TIME_KEYS, *MODIFIERS)):
        # A time test takes its moment (at:) and calendar (calendar:) from beside it.
        timed = {k: v for k, v in spec.items() if k in TIME_KEYS or k in MODIFIERS}
        if not any(k in spec for k in TIME_KEYS):
            key = next(k for k in MODIFIERS if k in spec)
            raise ConditionError(f"{key} goes with a time condition ({', '.join(TIME_KEYS)})", f"{path}.{key}")
        try:
            parts += compile_time(timed)
        except TimeConditionError as exc:
            raise ConditionError(str(exc), f"{path}.{exc.key}") from exc
        spec = {k: v for k, v in spec.items() if k not in timed}
    parts += [_single(key, value, f"{path}.{key}") for key, value in spec.items()]
    if len(parts) == 1:
        return parts[0]
    return _all_of(parts)


# all() over a generator expression costs a generator per test, on every rule of every
# event; these loops give the same answers (bools, first false or true part decides).
def _all_of(parts: list[Condition]) -> Condition:
    def check(ctx: RuleContext) -> bool:
        for part in parts:  # noqa: SIM110 - all()/any() on a generator is slower here, on every event
            if not part(ctx):
                return False
        return True

    return check


def _any_of(parts: list[Condition]) -> Condition:
    def check(ctx: RuleContext) -> bool:
        for part in parts:  # noqa: SIM110 - all()/any() on a generator is slower here, on every event
            if part(ctx):
                return True
        return False

    return check


def _single(key: str, value: Any, path: str) -> Condition:
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise ConditionError(f"{key} takes a non-empty list", path)
        subs = [compile_condition(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return _all_of(subs) if key == "all" else _any_of(subs)
    if key == "not":
        sub = compile_condition(value, path)
        return lambda ctx: not sub(ctx)
    if key in ("stage", "pipeline"):
        wanted = _as_set(value, path)
        return lambda ctx: str(getattr(ctx.deal, key)) in wanted
    if key == "outcome":
        outcomes = _as_set(value, path)
        if not outcomes <= {"open", "won", "lost"}:
            raise ConditionError("outcome is open, won or lost (or a list of them)", path)
        return lambda ctx: ctx.deal.stage_semantic in outcomes
    if key == "stage_changed":
        return _stage_changed(value, path)
    if key == "holiday_within":
        return _holiday_within(value, path)
    if key == "deadline":
        names = _as_set(value, path)
        return lambda ctx: str(ctx.event.data.get("deadline", "")) in names
    hint = did_you_mean(str(key), CONDITION_KEYS) or f"; known: {', '.join(CONDITION_KEYS)}"
    raise ConditionError(f"unknown condition {key!r}{hint}", path)


def _holiday_within(value: Any, path: str) -> Condition:
    """A public holiday falls within the next N calendar days (reactivation before holidays)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 366:
        raise ConditionError("holiday_within takes a number of days (1-366)", path)

    def check(ctx: RuleContext) -> bool:
        if ctx.calendar is None:
            return False
        today = ctx.now.astimezone(ctx.calendar.tz).date()
        return bool(ctx.calendar.holidays_between(today + timedelta(days=1), today + timedelta(days=value)))

    return check


def _stage_changed(value: Any, path: str) -> Condition:
    if value is True:
        return lambda ctx: "stage" in ctx.changes
    if not isinstance(value, Mapping) or not set(value) <= {"from", "to"}:
        raise ConditionError("stage_changed takes true or {from: [...], to: [...]}", path)
    before = _as_set(value["from"], f"{path}.from") if "from" in value else None
    after = _as_set(value["to"], f"{path}.to") if "to" in value else None

    def check(ctx: RuleContext) -> bool:
        if "stage" not in ctx.changes:
            return False
        old, new = ctx.changes["stage"]
        return (before is None or str(old) in before) and (after is None or str(new) in after)

    return check


def _field_condition(spec: Mapping[str, Any], path: str) -> Condition:
    on_event = "event_field" in spec
    name = spec["event_field" if on_event else "field"]
    if not isinstance(name, str) or not name:
        raise ConditionError("names a field", f"{path}.{'event_field' if on_event else 'field'}")
    get: Getter = (lambda ctx: ctx.event.data.get(name)) if on_event else (lambda ctx: ctx.deal.get(name))
    ops = [k for k in spec if k not in ("field", "event_field")]
    if len(ops) != 1 or ops[0] not in _FIELD_OPS:
        raise ConditionError(f"a field condition takes exactly one of {', '.join(_FIELD_OPS)}", path)
    op, arg = ops[0], spec[ops[0]]
    if op == "equals":
        return lambda ctx: _text(get(ctx)) == _text(arg)
    if op == "in":
        wanted = _as_set(arg, f"{path}.in")
        return lambda ctx: _text(get(ctx)) in wanted
    if op == "empty":
        return lambda ctx: _is_empty(get(ctx)) == bool(arg)
    if op == "matches":
        try:
            regex = re.compile(str(arg))
        except re.error as exc:
            raise ConditionError(f"bad regular expression: {exc}", f"{path}.matches") from exc
        return lambda ctx: regex.search(_text(get(ctx))) is not None
    if op in _COMPARE:
        limit = _number(arg)
        if limit is None:
            raise ConditionError(f"{op} compares with a number", f"{path}.{op}")
        compare = _COMPARE[op]
        return lambda ctx: (value := _number(get(ctx))) is not None and compare(value, limit)
    if op in ("older_than", "newer_than"):
        return _age(get, op, str(arg), f"{path}.{op}")
    if on_event:
        raise ConditionError("changed applies to deal fields", f"{path}.changed")
    return lambda ctx: (name in ctx.changes) == bool(arg)


def _age(get: Getter, op: str, duration: str, path: str) -> Condition:
    from rules.calendar import CalendarError, parse_duration

    try:
        parse_duration(duration)
    except CalendarError as exc:
        raise ConditionError(str(exc), path) from exc

    def check(ctx: RuleContext) -> bool:
        when = _moment(get(ctx))
        if when is None or ctx.calendar is None:
            return False
        older = ctx.calendar.add(when, duration) <= ctx.now
        return older if op == "older_than" else not older

    return check


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else None
    return None


def _number(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value).replace(" ", "").replace(",", "."))
    except InvalidOperation:
        return None


def _as_set(value: Any, path: str) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, (dict, list)) for v in values):
        raise ConditionError("expects a value or a list of values", path)
    return frozenset(str(v) for v in values)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}
