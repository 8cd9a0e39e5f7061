"""What ``check`` says about calendars and the org chart: unknown calendars, roles, teams and
people named by rules, and calendars that cannot be built."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

from rules.calendar import CalendarError
from rules.calendars import DEFAULT_CALENDAR, CalendarSet
from rules.model import Rule
from rules.org import Org, OrgRef, unknown_calendar

Path = tuple[str | int, ...]


def calendar_set_of(data: Mapping[str, Any], add: Callable[[Any, Path], None]) -> CalendarSet | None:
    """Every configured calendar, or None (with the problem added) when one cannot be built."""
    named = dict(data.get("calendars") or {})
    if DEFAULT_CALENDAR in named:
        add(["'default' is the top-level calendar: block; give this calendar another name"], ("calendars", "default"))
        named.pop(DEFAULT_CALENDAR)
    try:
        return CalendarSet.from_config(data.get("calendar") or {}, named)
    except CalendarError as exc:
        text = str(exc)
        if text.startswith("calendars."):
            name, _, message = text[len("calendars.") :].partition(": ")
            add([message], ("calendars", name))
        else:
            add([text], ("calendar",))
        return None


def org_problems(
    raw: Mapping[str, Any], data: Mapping[str, Any], rules: Sequence[tuple[int, Rule]], calendars: CalendarSet | None
) -> Iterator[tuple[Path, str]]:
    """(key path, message) for each name in ``org`` and the rules that is not configured."""
    org = data.get("org")
    if not isinstance(org, Org):
        org = Org()
    names = calendars.names if calendars is not None else _named_calendars(raw)
    yield from org.problems(names)
    listed = raw.get("rules")
    raw_rules: list[Any] = listed if isinstance(listed, list) else []
    for i, rule in rules:
        if rule.calendar is not None and rule.calendar not in names:
            yield ("rules", i, "calendar"), unknown_calendar(rule.calendar, names)
        for j, step in enumerate(rule.actions):
            for param, ref in _refs(step):
                problem = org.ref_problem(ref)
                if problem:
                    yield ("rules", i, "do", j, step.name, *param), problem
        raw_rule = raw_rules[i] if i < len(raw_rules) and isinstance(raw_rules[i], Mapping) else {}
        for path, name in _condition_calendars(raw_rule.get("when"), ("rules", i, "when")):
            if name not in names:
                yield path, unknown_calendar(str(name), names)


def _named_calendars(raw: Mapping[str, Any]) -> frozenset[str]:
    named = raw.get("calendars")
    return frozenset({DEFAULT_CALENDAR, *(named if isinstance(named, Mapping) else ())})


def _refs(step: object) -> Iterator[tuple[Path, OrgRef]]:
    """Every OrgRef among a step's parameters, with its parameter path."""
    if not is_dataclass(step):
        return
    for f in fields(step):
        value = getattr(step, f.name)
        if isinstance(value, OrgRef):
            yield (f.name,), value
        elif isinstance(value, list):
            for k, item in enumerate(value):
                if isinstance(item, OrgRef):
                    yield (f.name, k), item


def _condition_calendars(spec: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    """(path, name) for every ``calendar:`` inside a raw ``when:``."""
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if key == "calendar":
                yield (*path, key), value
            else:
                yield from _condition_calendars(value, (*path, str(key)))
    elif isinstance(spec, list):
        for k, item in enumerate(spec):
            yield from _condition_calendars(item, (*path, k))
