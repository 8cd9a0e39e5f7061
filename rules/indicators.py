"""Indicators (the config's ``indicators:``): counts and sums over what happened in the CRM.

Each indicator is computed from ``Fact`` records (activities actually logged as done, and
deals) for a set of people and a period:

  {count: activities, type: call}                 calls marked done in the period
  {count: won_deals, where: {SEGMENT: SMB}}       deals won in the period with that field value
  {sum: amount, of: won_deals}                    their amount (or any numeric field)
  {average: UF_CRM_SCORE, of: won_deals}          the mean of a numeric field (records without it skipped)
  {count: new_deals} / {count: lost_deals}        deals created / lost in the period
  {count: open_deals, where: {stage: PROPOSAL}}   deals open now (at the end of the period)
  {ratio: [meetings, calls]}                      one indicator as a percentage of another
  {average_days: [created_at, at], of: won_deals} days between two moments of each deal
  {count: stage_entries, where: {stage: C2:PROPOSAL}}   deals that entered the stage
  {stage_days: [C2:PROPOSAL, C2:MEETING]}          days from entering one stage to the other,
                                                  for deals that reached the second in the period
  {count: breaches, where: {deadline: connection}}  deadlines breached (due) in the period, as the
                                                  connector recorded them for the penalty report

``where`` holds field → value (or a list of values) on the record's fields; ``type`` an
activity type or a list of them. Pure: the facts are read by the runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from domain.facts import Fact
from rules.periods import Period

SETS = ("activities", "new_deals", "won_deals", "lost_deals", "open_deals", "stage_entries", "breaches")
KINDS = ("count", "sum", "average", "ratio", "average_days", "stage_days")


class IndicatorError(ValueError):
    """An indicator definition that cannot be understood; ``key`` names the bad key."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Indicator:
    name: str
    title: str
    how: str  # count, sum, ratio or average_days
    of: str = ""
    sum_field: str = ""
    types: frozenset[str] = frozenset()
    where: Mapping[str, frozenset[str]] = field(default_factory=dict)
    parts: tuple[str, str] = ("", "")  # ratio: numerator, denominator; average_days, stage_days: from, to

    @property
    def needs_history(self) -> bool:
        """Whether it reads deals' moves between stages (a CRM must keep them)."""
        return self.how == "stage_days" or self.of == "stage_entries"


def parse_indicator(name: str, spec: Any) -> Indicator:
    """One ``indicators.<name>`` entry; ``IndicatorError`` says what is wrong and where."""
    if not isinstance(spec, Mapping):
        raise IndicatorError("an indicator is a mapping such as {count: activities, type: call}")
    allowed = {"title", "count", "sum", "average", "of", "type", "where", "ratio", "average_days", "stage_days"}
    if unknown := sorted(set(spec) - allowed):
        raise IndicatorError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}", unknown[0])
    hows = [k for k in KINDS if k in spec]
    if len(hows) != 1:
        raise IndicatorError(f"give exactly one of {', '.join(KINDS)}")
    how = hows[0]
    title = str(spec.get("title") or name)
    if how == "stage_days":
        parts = spec["stage_days"]
        if not (isinstance(parts, Sequence) and not isinstance(parts, str) and len(parts) == 2):
            raise IndicatorError("stage_days is [from stage, to stage], two stage ids", "stage_days")
        return Indicator(name, title, how, of="stage_entries", parts=(str(parts[0]), str(parts[1])))
    if how == "ratio":
        parts = spec["ratio"]
        if not (isinstance(parts, Sequence) and not isinstance(parts, str) and len(parts) == 2):
            raise IndicatorError("ratio is [numerator, denominator], two indicator names", "ratio")
        return Indicator(name, title, how, parts=(str(parts[0]), str(parts[1])))
    of = str(spec["count"] if how == "count" else spec.get("of") or "")
    if of not in SETS:
        key = "count" if how == "count" else "of"
        raise IndicatorError(f"{of or 'nothing'!r} is not one of {', '.join(SETS)}", key)
    types = spec.get("type")
    type_set = frozenset(str(t).lower() for t in ([types] if isinstance(types, str) else types or []))
    if type_set and of != "activities":
        raise IndicatorError("type filters activities only", "type")
    where = spec.get("where") or {}
    if not isinstance(where, Mapping):
        raise IndicatorError("where is a mapping of field: value (or a list of values)", "where")
    where_sets = {str(k): frozenset(str(x) for x in (v if isinstance(v, list) else [v])) for k, v in where.items()}
    if how == "average_days":
        parts = spec["average_days"]
        if not (isinstance(parts, Sequence) and not isinstance(parts, str) and len(parts) == 2):
            raise IndicatorError("average_days is [from field, to field], e.g. [created_at, at]", "average_days")
        return Indicator(
            name, title, how, of=of, types=type_set, where=where_sets, parts=(str(parts[0]), str(parts[1]))
        )
    sum_field = str(spec[how]) if how in ("sum", "average") else ""
    return Indicator(name, title, how, of=of, sum_field=sum_field, types=type_set, where=where_sets)


def check_references(indicators: Mapping[str, Indicator], declared: Iterable[str] = ()) -> dict[str, str]:
    """Ratios naming indicators that do not exist (or themselves, or another ratio): name →
    problem. Names in ``declared`` that failed to load are refused on their own already."""
    broken = set(declared) - set(indicators)
    problems = {}
    for name, ind in indicators.items():
        if ind.how == "ratio":
            for part in ind.parts:
                if part in broken:
                    continue
                if part not in indicators or indicators[part].how not in ("count", "sum"):  # not a mean
                    problems[name] = f"ratio: {part!r} is not a count or sum indicator defined under indicators"
    return problems


def _in(moment: datetime | None, period: Period, tz: Any) -> bool:
    return moment is not None and period.contains(moment.astimezone(tz).date())


def _selected(ind: Indicator, facts: Iterable[Fact], period: Period, tz: Any) -> list[Fact]:
    chosen = []
    for f in facts:
        if ind.of == "activities":
            ok = f.kind == "activity" and _in(f.at, period, tz) and (not ind.types or f.type in ind.types)
        elif ind.of == "new_deals":
            ok = f.kind == "deal" and _in(f.created_at, period, tz)
        elif ind.of == "open_deals":
            ok = f.kind == "deal" and f.status == "open"
        elif ind.of == "stage_entries":
            ok = f.kind == "stage" and _in(f.at, period, tz)
        elif ind.of == "breaches":
            ok = f.kind == "breach" and _in(f.at, period, tz)
        else:
            ok = f.kind == "deal" and f.status == ind.of.removesuffix("_deals") and _in(f.at, period, tz)
        if ok and all(str(f.get(k)) in values for k, values in ind.where.items()):
            chosen.append(f)
    return chosen


def _moment(value: Any) -> datetime | None:
    """A date-time field: a datetime, or ISO text as CRMs give their date fields (aware only)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else None
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None


def _number(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def figure(
    ind: Indicator, facts: Sequence[Fact], period: Period, tz: Any, indicators: Mapping[str, Indicator]
) -> Decimal | None:
    """The indicator's value over ``facts`` (one person's, a team's, everyone's) in ``period``;
    None where it is undefined (a ratio over zero, an average of nothing)."""
    if ind.how == "ratio":
        top = figure(indicators[ind.parts[0]], facts, period, tz, indicators)
        bottom = figure(indicators[ind.parts[1]], facts, period, tz, indicators)
        if top is None or not bottom:
            return None
        return (top * 100 / bottom).quantize(Decimal("0.1"))
    if ind.how == "stage_days":
        return _stage_days(ind, facts, period, tz)
    chosen = _selected(ind, facts, period, tz)
    if ind.how == "count":
        return Decimal(len(chosen))
    if ind.how == "sum":
        return sum((_number(f.get(ind.sum_field)) for f in chosen), Decimal(0))
    if ind.how == "average":
        values = [_number(f.get(ind.sum_field)) for f in chosen if f.get(ind.sum_field) not in (None, "")]
        return (sum(values, Decimal(0)) / len(values)).quantize(Decimal("0.01")) if values else None
    spans = []
    for f in chosen:
        start, end = _moment(f.get(ind.parts[0])), _moment(f.get(ind.parts[1]))
        if start is not None and end is not None and end >= start:
            spans.append(Decimal((end - start).total_seconds()) / 86400)
    return (sum(spans, Decimal(0)) / len(spans)).quantize(Decimal("0.1")) if spans else None


def _stage_days(ind: Indicator, facts: Sequence[Fact], period: Period, tz: Any) -> Decimal | None:
    """Average days from a deal's last entry into the first stage to its entry into the second,
    over the entries into the second stage in ``period``."""
    start, end = ind.parts
    entered: dict[str, list[datetime]] = {}
    for f in facts:
        if f.kind == "stage" and f.stage == start and f.at is not None and f.deal_id:
            entered.setdefault(f.deal_id, []).append(f.at)
    spans = []
    for f in facts:
        if f.kind != "stage" or f.stage != end or not f.deal_id or not _in(f.at, period, tz):
            continue
        before = [t for t in entered.get(f.deal_id, []) if f.at is not None and t <= f.at]
        if before and f.at is not None:
            spans.append(Decimal((f.at - max(before)).total_seconds()) / 86400)
    return (sum(spans, Decimal(0)) / len(spans)).quantize(Decimal("0.1")) if spans else None
