"""Evaluate the configured rules against one event: a pure function, state in, actions out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from domain.keys import rule_decision_key, rule_decision_prefix
from rules.model import Decision, Rule, RuleContext


def rule_version(rule: Rule, ctx: RuleContext) -> str:
    """What makes a new firing of the same rule on the same deal a different one.

    ``deal``: once per deal, ever. ``stage``: once per stage the deal enters.
    ``event``: every event (its dedup key), for rules that must act on each change.
    ``run``: once per scheduled run (its time slot), for scheduled rules.
    ``holiday``: once per coming public holiday (reactivation before holidays).
    """
    if rule.once_per == "stage":
        return f"stage={ctx.deal.stage}"
    if rule.once_per == "event":
        return f"event={ctx.event.dedup_key}"
    if rule.once_per == "holiday":
        return f"holiday={ctx.next_holiday()['date']}"
    if rule.once_per == "run":
        return f"run={ctx.event.data.get('slot', ctx.event.dedup_key)}"
    return "once"


def may_fire(rule: Rule, crm: str, triggers: frozenset[str]) -> bool:
    """The first, cheap test of a rule: enabled, for this CRM, listening to one of the triggers."""
    # isdisjoint: the same test as an empty intersection, without building one per rule
    return rule.enabled and rule.crm == crm and not rule.triggers.isdisjoint(triggers)


def with_rule_calendar(rule: Rule, ctx: RuleContext) -> RuleContext:
    """``ctx`` counting on the rule's calendar: its own ``calendar:``, else the calendar of the
    team of the deal's responsible, else the default one already in ``ctx``."""
    return _own_calendar(rule, ctx, _team_calendars(ctx))


def _team_calendars(ctx: RuleContext) -> bool:
    """Whether a rule without a calendar of its own may count on its team's."""
    return ctx.calendars is not None and ctx.org is not None and ctx.org.has_team_calendars


def _own_calendar(rule: Rule, ctx: RuleContext, team_calendars: bool) -> RuleContext:
    if ctx.calendars is None or (rule.calendar is None and not team_calendars):
        return ctx  # the common case, on every rule of every event: nothing to choose
    name = rule.calendar
    if name is None and ctx.org is not None:
        name = ctx.org.team_calendar(ctx.deal.crm, ctx.deal.responsible_id)
    if name is None or name not in ctx.calendars:
        return ctx
    chosen = ctx.calendars.get(name)
    return ctx if chosen is ctx.calendar else replace(ctx, calendar=chosen)


def evaluate(rules: Iterable[Rule], ctx: RuleContext) -> list[Decision]:
    """Every action every matching rule takes, each with its idempotency key."""
    crm, triggers = ctx.deal.crm, ctx.triggers
    return evaluate_matching([rule for rule in rules if may_fire(rule, crm, triggers)], ctx)


def evaluate_matching(rules: Iterable[Rule], ctx: RuleContext) -> list[Decision]:
    """``evaluate`` for rules already known to pass ``may_fire`` for this event's CRM and
    triggers (the processing core's index of them): the test is not made again per rule."""
    decisions: list[Decision] = []
    deal, triggers = ctx.deal, ctx.triggers
    scheduled = "schedule" in triggers
    schedule = ctx.event.data.get("schedule") if scheduled else None
    team_calendars = _team_calendars(ctx)
    for rule in rules:
        if scheduled and schedule != rule.name:
            continue  # a scheduled run belongs to the one rule whose schedule it is
        own = _own_calendar(rule, ctx, team_calendars)
        if not rule.condition(own):
            continue
        results: dict[str, object] = {}
        prefix = rule_decision_prefix(rule.name, deal.crm, deal.id, rule_version(rule, ctx))
        for index, step in enumerate(rule.actions):
            for planned in step.plan(own, results, f"{index}:{step.name}"):
                decisions.append(Decision(rule.name, rule_decision_key(prefix, planned.slot), planned.action, triggers))
    return decisions
