"""Indicators (the config's ``indicators:``): counts and sums over what happened in the CRM.

Each indicator is computed from ``Fact`` records (activities actually logged as done, and
deals) for a set of people and a period:

  {count: activities, type: call}                 calls marked done in the period
  {count: won_deals, where: {SEGMENT: SMB}}       deals won in the period with that field value
  {sum: amount, of: won_deals}                    their amount (or any numeric field)
  {average: UF_CRM_SCORE, of: won_deals}          the mean of a numeric field (records without it skipped)
  {count: new_deals} / {count: lost_deals}        deals created / lost in the period
  {count: open_deals, where: {stage: PROPOSAL}}   deals open now (at the end of the period)
  {count: open_at_start}                          deals open when the period began (created before
                                                  it, and open now or closed since its start)
  {ratio: [meetings, calls]}                      one indicator as a percentage of another
  {average_days: [created_at, at], of: won_deals} days between two moments of each deal
  {average_hours: [A_AT, B_AT], of: deals, at: B_AT}  hours between them (reaction times), for
                                                  the deals whose second moment is in the period
  {count: stage_entries, where: {stage: C2:PROPOSAL}}   deals that entered the stage
  {stage_days: [C2:PROPOSAL, C2:MEETING]}          days from entering one stage to the other,
                                                  for deals that reached the second in the period
  {count: breaches, where: {deadline: connection}}  deadlines breached (due) in the period, as the
                                                  connector recorded them for the penalty report
  {count: deals, at: UF_CRM_FLAGGED_AT}           deals whose date field falls in the period
  {count: open_deals, distinct: COMPANY_ID}       distinct values of a field (companies in work)
  {followed: [cold_meetings, working_meetings]}   deals with the first in the period that had the
                                                  second after it, as a percentage of the former
  {cycles: [calls, meetings]}                     per deal, how many times the first was followed
                                                  by the second; the mean over the period's deals

``where`` holds field → value (or a list of values) on the record's fields, and on activities
and stage entries ``deal.FIELD`` a field of the deal the record belongs to (calls to new
clients: ``where: {deal.UF_CRM_CLIENT_KIND: new}``; ``with_deals`` joins them); ``type`` an
activity type or a list of them (as the adapter names it: a CRM's own activity types, custom
ones included, tell kinds of meetings apart); ``at`` a date field that places a record in a
period instead of the set's own moment. ``followed`` and ``cycles`` follow each deal through the
records two count indicators select. Pure: the facts are read by the runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from domain.facts import Fact
from rules.periods import Period

SETS = (
    "activities",
    "new_deals",
    "won_deals",
    "lost_deals",
    "open_deals",
    "open_at_start",
    "stage_entries",
    "deals",
    "breaches",
)
KINDS = ("count", "sum", "average", "ratio", "average_days", "average_hours", "stage_days", "followed", "cycles")
# Seconds in the unit an average of spans is given in.
UNIT_SECONDS = {"average_days": 86400, "average_hours": 3600}
# Kinds whose two parts are indicators followed deal by deal (counts over records of a deal).
PER_DEAL = ("followed", "cycles")
# ``where`` keys naming a field of the record's deal rather than of the record.
DEAL_PREFIX = "deal."


class IndicatorError(ValueError):
    """An indicator definition that cannot be understood; ``key`` names the bad key."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Indicator:
    name: str
    title: str
    how: str  # one of KINDS
    of: str = ""
    sum_field: str = ""
    types: frozenset[str] = frozenset()
    where: Mapping[str, frozenset[str]] = field(default_factory=dict)
    parts: tuple[str, str] = ("", "")  # ratio: numerator, denominator; the others: from, to
    at: str = ""  # a date field placing a record in the period instead of the set's own moment
    distinct: str = ""  # count: distinct values of this field (a record without one counts alone)

    @property
    def needs_history(self) -> bool:
        """Whether it reads deals' moves between stages (a CRM must keep them)."""
        return self.how == "stage_days" or self.of == "stage_entries"

    @property
    def reaches_back(self) -> bool:
        """Whether it needs records from before the period (a deal's earlier steps)."""
        return self.how in ("stage_days", "cycles")


def parse_indicator(name: str, spec: Any) -> Indicator:
    """One ``indicators.<name>`` entry; ``IndicatorError`` says what is wrong and where."""
    if not isinstance(spec, Mapping):
        raise IndicatorError("an indicator is a mapping such as {count: activities, type: call}")
    allowed = {"title", "count", "sum", "average", "of", "type", "where", "at", "distinct"} | set(KINDS)
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
    if how in ("ratio", *PER_DEAL):
        parts = spec[how]
        if not (isinstance(parts, Sequence) and not isinstance(parts, str) and len(parts) == 2):
            what = "[numerator, denominator]" if how == "ratio" else "[first, then]"
            raise IndicatorError(f"{how} is {what}, two indicator names", how)
        if how in PER_DEAL and (extra := sorted(set(spec) - {how, "title"})):
            raise IndicatorError(f"{how} takes no {', '.join(extra)}: filter the indicators it names", extra[0])
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
    if any(k.startswith(DEAL_PREFIX) for k in where_sets) and of not in ("activities", "stage_entries"):
        raise IndicatorError(f"{DEAL_PREFIX}FIELD filters activities and stage_entries by their deal's field", "where")
    at = str(spec.get("at") or "")
    if of == "deals" and not at:
        raise IndicatorError("deals are placed in a period by a date field: give at: FIELD", "count")
    if at and of in ("open_deals", "open_at_start", "stage_entries"):
        raise IndicatorError(f"at: does not apply to {of}", "at")
    distinct = str(spec.get("distinct") or "")
    if distinct and how != "count":
        raise IndicatorError("distinct counts distinct values: it goes with count", "distinct")
    if how in UNIT_SECONDS:
        parts = spec[how]
        if not (isinstance(parts, Sequence) and not isinstance(parts, str) and len(parts) == 2):
            raise IndicatorError(f"{how} is [from field, to field], e.g. [created_at, at]", how)
        return Indicator(
            name, title, how, of=of, types=type_set, where=where_sets, parts=(str(parts[0]), str(parts[1])), at=at
        )
    sum_field = str(spec[how]) if how in ("sum", "average") else ""
    return Indicator(
        name, title, how, of=of, sum_field=sum_field, types=type_set, where=where_sets, at=at, distinct=distinct
    )


def check_references(indicators: Mapping[str, Indicator], declared: Iterable[str] = ()) -> dict[str, str]:
    """Ratios naming indicators that do not exist (or themselves, or another ratio), and
    ``followed`` / ``cycles`` naming anything but counts of activities or stage entries: name →
    problem. Names in ``declared`` that failed to load are refused on their own already."""
    broken = set(declared) - set(indicators)
    problems = {}
    for name, ind in indicators.items():
        for part in ind.parts if ind.how in ("ratio", *PER_DEAL) else ():
            if part in broken:
                continue
            found = indicators.get(part)
            if ind.how == "ratio" and (found is None or found.how not in ("count", "sum")):  # not a mean
                problems[name] = f"ratio: {part!r} is not a count or sum indicator defined under indicators"
            elif ind.how in PER_DEAL and (
                found is None or found.how != "count" or found.of not in ("activities", "stage_entries") or found.at
            ):  # a deal's steps: records with their own moment and a deal
                problems[name] = (
                    f"{ind.how}: {part!r} is no count of activities or stage_entries (without at:) under indicators"
                )
    return problems


def deal_fields(indicators: Mapping[str, Indicator], names: Iterable[str]) -> frozenset[str]:
    """The deal fields that the indicators ``names`` (and those they are made of) filter
    activities or stage entries by (``where: {deal.FIELD: …}``), without the prefix."""
    found: set[str] = set()
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen or name not in indicators:
            continue
        seen.add(name)
        ind = indicators[name]
        found |= {k.removeprefix(DEAL_PREFIX) for k in ind.where if k.startswith(DEAL_PREFIX)}
        if ind.how in ("ratio", *PER_DEAL):
            todo += list(ind.parts)
    return frozenset(found)


def with_deals(facts: Iterable[Fact], deals: Iterable[Fact], names: Iterable[str]) -> list[Fact]:
    """``facts`` with each activity's and stage entry's deal fields ``names`` copied in as
    ``deal.FIELD``, from the deal facts in ``deals``; a record whose deal is not among them
    (none, or one closed before the deals read) gets none and passes no ``deal.`` filter."""
    wanted = tuple(names)
    by_id = {d.id: d for d in deals if d.kind == "deal"}
    out = []
    for f in facts:
        deal = by_id.get(f.deal_id or "") if wanted and f.kind in ("activity", "stage") else None
        if deal is not None:
            f = replace(f, fields={**f.fields, **{DEAL_PREFIX + n: deal.fields.get(n) for n in wanted}})
        out.append(f)
    return out


def _in(moment: datetime | date | None, period: Period | None, tz: Any) -> bool:
    """Whether the moment falls in ``period``; with None, whether there is a moment at all."""
    if moment is None:
        return False
    day = moment.astimezone(tz).date() if isinstance(moment, datetime) else moment
    return period is None or period.contains(day)


def _day_field(value: Any) -> datetime | date | None:
    """A date field: an aware moment, or a plain date (a CRM's date-only field, a local day)."""
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return value if isinstance(value, date) and not isinstance(value, datetime) else _moment(value)


def _selected(ind: Indicator, facts: Iterable[Fact], period: Period | None, tz: Any) -> list[Fact]:
    """The records of ``ind``'s set in ``period`` (None: at any moment) that pass its filters."""
    chosen = []
    for f in facts:
        moment: datetime | date | None = f.at
        if ind.of == "new_deals":
            moment = f.created_at
        if ind.at:
            moment = _day_field(f.get(ind.at))
        if ind.of == "activities":
            ok = f.kind == "activity" and _in(moment, period, tz) and (not ind.types or f.type in ind.types)
        elif ind.of in ("new_deals", "deals"):
            ok = f.kind == "deal" and _in(moment, period, tz)
        elif ind.of == "open_deals":
            ok = f.kind == "deal" and f.status == "open"
        elif ind.of == "open_at_start":
            ok = f.kind == "deal" and period is not None and _open_at_start(f, period, tz)
        elif ind.of == "stage_entries":
            ok = f.kind == "stage" and _in(moment, period, tz)
        elif ind.of == "breaches":
            ok = f.kind == "breach" and _in(moment, period, tz)
        else:
            ok = f.kind == "deal" and f.status == ind.of.removesuffix("_deals") and _in(moment, period, tz)
        if ok and all(str(f.get(k)) in values for k, values in ind.where.items()):
            chosen.append(f)
    return chosen


def _open_at_start(deal: Fact, period: Period, tz: Any) -> bool:
    """Whether the deal was open when ``period`` began: created before it and not closed before
    it. The deals read are those changed since the period's start and those open now, so every
    deal open then is among them (one closed since has changed since)."""
    start = datetime.combine(period.first, time(), tzinfo=tz)
    if deal.created_at is None or deal.created_at >= start:
        return False
    return deal.status == "open" or (deal.at is not None and deal.at >= start)


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
    if ind.how in PER_DEAL:
        return _per_deal(ind, facts, period, tz, indicators)
    chosen = _selected(ind, facts, period, tz)
    if ind.how == "count" and ind.distinct:
        return Decimal(len({str(f.get(ind.distinct) or "") or f"\0{f.kind}:{f.id}" for f in chosen}))
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
            spans.append(Decimal((end - start).total_seconds()) / UNIT_SECONDS[ind.how])
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


def _steps(
    ind: Indicator, facts: Sequence[Fact], period: Period, tz: Any, indicators: Mapping[str, Indicator]
) -> dict[str, list[tuple[datetime, int]]]:
    """Per deal, its records of the two parts up to the period's end in time order, each as
    (moment, 0 for the first part or 1 for the second)."""
    end = datetime.combine(period.last, time.max, tzinfo=tz)
    steps: dict[str, list[tuple[datetime, int]]] = {}
    for which, part in enumerate(ind.parts):
        for f in _selected(indicators[part], facts, None, tz):
            if f.deal_id and f.at is not None and f.at <= end:
                steps.setdefault(f.deal_id, []).append((f.at, which))
    for mine in steps.values():
        mine.sort()
    return steps


def _per_deal(
    ind: Indicator, facts: Sequence[Fact], period: Period, tz: Any, indicators: Mapping[str, Indicator]
) -> Decimal | None:
    """``followed``: of the deals whose first part happened in the period, the percentage whose
    second part came after it (by the period's end). ``cycles``: over the deals with either part
    in the period, the mean number of times the first part was followed by the second, counted
    over the deal's history read (a run of calls before one meeting is one cycle)."""
    steps = _steps(ind, facts, period, tz, indicators)
    if ind.how == "followed":
        started = converted = 0
        for mine in steps.values():
            first = next((at for at, which in mine if which == 0 and _in(at, period, tz)), None)
            if first is None:
                continue
            started += 1
            converted += any(which == 1 and at > first for at, which in mine)
        return (Decimal(converted) * 100 / started).quantize(Decimal("0.1")) if started else None
    counts = []
    for mine in steps.values():
        if not any(_in(at, period, tz) for at, _ in mine):
            continue
        cycles, armed = 0, False
        for _, which in mine:
            if which == 0:
                armed = True
            elif armed:
                cycles, armed = cycles + 1, False
        counts.append(cycles)
    return (Decimal(sum(counts)) / len(counts)).quantize(Decimal("0.1")) if counts else None
