"""Conditions in the config (``when:``) compiled into predicates over a RuleContext.

Forms:
  {stage: X | [X, ...]}            deal stage in the set
  {pipeline: X | [X, ...]}         deal pipeline in the set
  {outcome: open | won | lost}     the stage's meaning
  {field: F, equals: V}            field (normalised name or CRM field) equals V
  {field: F, in: [V, ...]}
  {field: F, empty: true|false}
  {field: F, matches: REGEX}
  {field: F, changed: true}        changed by this event
  {all: [...]}, {any: [...]}, {not: {...}}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rules.model import Condition


class ConditionError(ValueError):
    """A ``when`` that cannot be understood; ``path`` locates it inside the condition."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


_FIELD_OPS = ("equals", "in", "empty", "matches", "changed")


def compile_condition(spec: Any, path: str = "when") -> Condition:
    """Compile a condition spec; None means always true."""
    if spec is None:
        return lambda ctx: True
    if isinstance(spec, list):
        return compile_condition({"all": spec}, path)
    if not isinstance(spec, Mapping) or not spec:
        raise ConditionError("a condition is a non-empty mapping", path)
    if "field" in spec:
        return _field_condition(spec, path)
    parts = [_single(key, value, f"{path}.{key}") for key, value in spec.items()]
    if len(parts) == 1:
        return parts[0]
    return lambda ctx: all(p(ctx) for p in parts)


def _single(key: str, value: Any, path: str) -> Condition:
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise ConditionError(f"{key} takes a non-empty list", path)
        subs = [compile_condition(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return (lambda ctx: all(s(ctx) for s in subs)) if key == "all" else (lambda ctx: any(s(ctx) for s in subs))
    if key == "not":
        sub = compile_condition(value, path)
        return lambda ctx: not sub(ctx)
    if key in ("stage", "pipeline"):
        wanted = _as_set(value, path)
        return lambda ctx: str(getattr(ctx.deal, key)) in wanted
    if key == "outcome":
        if value not in ("open", "won", "lost"):
            raise ConditionError("outcome is one of open, won, lost", path)
        return lambda ctx: ctx.deal.stage_semantic == value
    raise ConditionError(f"unknown condition {key!r}", path)


def _field_condition(spec: Mapping[str, Any], path: str) -> Condition:
    name = spec["field"]
    if not isinstance(name, str) or not name:
        raise ConditionError("field names a deal field", f"{path}.field")
    ops = [k for k in spec if k != "field"]
    if len(ops) != 1 or ops[0] not in _FIELD_OPS:
        raise ConditionError(f"a field condition takes exactly one of {', '.join(_FIELD_OPS)}", path)
    op, arg = ops[0], spec[ops[0]]
    if op == "equals":
        return lambda ctx: _text(ctx.deal.get(name)) == _text(arg)
    if op == "in":
        wanted = _as_set(arg, f"{path}.in")
        return lambda ctx: _text(ctx.deal.get(name)) in wanted
    if op == "empty":
        return lambda ctx: _is_empty(ctx.deal.get(name)) == bool(arg)
    if op == "matches":
        try:
            regex = re.compile(str(arg))
        except re.error as exc:
            raise ConditionError(f"bad regular expression: {exc}", f"{path}.matches") from exc
        return lambda ctx: regex.search(_text(ctx.deal.get(name))) is not None
    return lambda ctx: (name in ctx.changes) == bool(arg)


def _as_set(value: Any, path: str) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, (dict, list)) for v in values):
        raise ConditionError("expects a value or a list of values", path)
    return frozenset(str(v) for v in values)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}
