"""Evaluate the configured rules against one event: a pure function, state in, actions out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
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


def fixed_keys(rule: Rule, prefix: str) -> list[str] | None:
    """Every key a firing of ``rule`` under ``prefix`` can decide, when its steps know their
    slots without the context (``ActionSpec.fixed_slots``); None otherwise."""
    slots = _fixed_slots(rule)
    return None if slots is None else [rule_decision_key(prefix, slot) for slot in slots]


def _fixed_slots(rule: Rule) -> tuple[str, ...] | None:
    # Asked for every once-per-deal rule that holds on an event: worked out once per rule
    # (the entry keeps the rule, so its id is not reused while it is there).
    known = _FIXED_SLOTS.get(id(rule))
    if known is not None and known[0] is rule:
        return known[1]
    slots: tuple[str, ...] | None = ()
    for index, step in enumerate(rule.actions):
        own = step.fixed_slots(f"{index}:{step.name}")
        if own is None or slots is None:
            slots = None
            break
        slots += own
    if len(_FIXED_SLOTS) >= _FIXED_SLOTS_KEPT:
        _FIXED_SLOTS.clear()  # rules of configs reloaded since: let them go
    _FIXED_SLOTS[id(rule)] = (rule, slots)
    return slots


_FIXED_SLOTS_KEPT = 4096


_FIXED_SLOTS: dict[int, tuple[Rule, tuple[str, ...] | None]] = {}


def evaluate_matching(
    rules: Iterable[Rule], ctx: RuleContext, decided: Callable[[Sequence[str]], bool] | None = None
) -> list[Decision]:
    """``evaluate`` for rules already known to pass ``may_fire`` for this event's CRM and
    triggers (the processing core's index of them): the test is not made again per rule.

    ``decided`` tells whether every one of some keys was decided before: a rule fired once
    per deal whose every possible key was is not planned again (each of its decisions would
    be dropped as taken; its condition is still tested, so a failing one is still seen)."""
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
        if decided is not None and rule.once_per == "deal":
            keys = fixed_keys(rule, prefix)
            if keys is not None and decided(keys):
                continue
        for index, step in enumerate(rule.actions):
            for planned in step.plan(own, results, f"{index}:{step.name}"):
                decisions.append(
                    Decision.of(rule.name, rule_decision_key(prefix, planned.slot), planned.action, triggers)
                )
    return decisions
