"""The config's ``indicators:`` section (marshmallow) and the checks of plan-vs-fact reports."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields

from rules.indicators import PER_DEAL, Indicator, IndicatorError, check_references, parse_indicator
from rules.org import parse_ref
from rules.plans import Teams
from rules.templates import Template, TemplateProblem


class IndicatorsField(fields.Field):
    """``indicators: {name: {count: activities, type: call}, …}``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Indicator]:
        if not isinstance(value, Mapping):
            raise ValidationError("a mapping of indicator name to its definition")
        out: dict[str, Indicator] = {}
        errors: dict[str, Any] = {}
        for name, spec in value.items():
            try:
                out[str(name)] = parse_indicator(str(name), spec)
            except IndicatorError as exc:
                errors[f"{name}.{exc.key}" if exc.key else str(name)] = [str(exc)]
        for name, problem in check_references(out, map(str, value)).items():
            errors[f"{name}.ratio"] = [problem]
        if errors:
            raise ValidationError(errors)
        return out


RECIPIENTS = ("head", "team_lead", "person", "responsible")
_SAMPLE_ROW = {"scope": "person", "name": "1", "team": "sales", "cells": {}}
SAMPLE = {
    "report": "r",
    "period": "2026-03",
    "due": date(2026, 4, 3),
    "user": "1",
    "scope": "all",
    "rows": [_SAMPLE_ROW],
    "table": "",
}


def _templates(report: Any) -> Iterator[tuple[str, Template, dict[str, Any]]]:
    """Each template of a plan-vs-fact report with the names it sees when it renders: a row's
    cells hold the report's own indicators, so ``rows[0].cells.calls.fact`` is checked too."""
    cell = {"plan": Decimal(1), "fact": Decimal(1), "percent": Decimal(100)}
    sample = {**SAMPLE, "rows": [{**_SAMPLE_ROW, "cells": {name: dict(cell) for name in report.indicators}}]}
    yield "title", report.title, sample
    yield "text", report.text, sample
    if report.file is not None:
        yield "file", report.file, {"report": "r", "period": "2026-03"}
    if report.missed is not None:
        yield "missed.title", report.missed.title, sample
        yield "missed.text", report.missed.text, sample


def report_problems(report: Any, indicators: Any, teams: Any) -> dict[str, list[str]]:
    """What a plan-vs-fact report names that the config does not define, by key. ``indicators``
    and ``teams`` are what their sections loaded; a refused section (reported on its own) is
    not held against the report."""
    problems: dict[str, list[str]] = {}
    for name in report.indicators:
        if isinstance(indicators, Mapping) and name not in indicators:
            problems.setdefault("indicators", []).append(f"no indicator named {name!r} under indicators")
    if not report.indicators:
        return problems
    if getattr(report, "ahead", False) and isinstance(indicators, Mapping):
        for name in report.indicators:
            ind = indicators.get(name)
            if ind is not None and (ind.how != "count" or ind.of != "activities"):
                problems.setdefault("indicators", []).append(
                    f"{name}: an ahead report counts activities planned; {name} is no count of activities"
                )
    for key, template, variables in _templates(report):
        try:
            template.render(variables)
        except TemplateProblem as exc:
            problems[key] = [f"{exc}; a plan-vs-fact report's templates see {', '.join(sorted(variables))}"]
    if not isinstance(teams, Teams):
        return problems
    role = parse_ref(report.to) if report.to else None
    if role is not None and role.kind != "role":
        problems["to"] = [f"{report.to}: a report goes to head, team_lead, person, role(NAME), a person or a user id"]
    elif role is not None and not teams.roles.get(role.arg):
        known = ", ".join(sorted(teams.roles)) or "none (add org.roles)"
        problems["to"] = [f"no role named {role.arg!r} with people under org.roles; known: {known}"]
    elif role is None and report.to and not report.to.isdigit() and report.to not in (*RECIPIENTS, *teams.people):
        problems["to"] = [f"{report.to!r} is no person of org.people, no user id and none of {', '.join(RECIPIENTS)}"]
    elif report.to == "team_lead" and not teams.leads:
        problems["to"] = ["team_lead: no team with members under org.teams has a lead"]
    elif report.to == "head" and not teams.head:
        problems["to"] = ["head: org.teams gives no head over the teams (head: on a team or its parent)"]
    missed_to = getattr(report.missed, "to", "team_lead")
    if report.missed is not None and missed_to != "person" and not teams.leads and not teams.head:
        problems["missed"] = ["a missed plan goes to the team lead (or the head): org.teams gives none"]
    return problems


def history_problem(report: Any, indicators: Any, source: type) -> str | None:
    """Why ``source`` (a FactSource class) cannot count the report's stage indicators, if so."""
    if not isinstance(indicators, Mapping) or getattr(source, "stage_history", False):
        return None

    def needs(name: str) -> bool:
        ind = indicators.get(name)
        if ind is None:
            return False
        follows = ind.how in ("ratio", *PER_DEAL)  # their parts are other indicators
        return bool(ind.needs_history or (follows and any(needs(p) for p in ind.parts)))

    needing = [n for n in report.indicators if needs(n)]
    if not needing:
        return None
    return f"{', '.join(needing)}: the CRM keeps no stage history to count (stage_entries, stage_days)"
