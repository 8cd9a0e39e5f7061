"""A generated year of ISP connection applications, to see what a rule set would do.

The shape follows seed 000: applications handed over on working days, checked, routed,
given to engineers, visited and connected, most within 3 working days and some late;
a share has no technical possibility (no poles), some clients are not at home, a few
deals are closed as lost with no reason, some carry a legal claim, agents bring a third.
The same seed gives the same history.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from connector.dryrun.replay import HistoryItem
from domain import Deal, EventKind, Location
from rules.calendar import WorkCalendar

# (city, district, the captain the territory table of examples/isp-field-service.yaml gives it)
PLACES = [
    ("Казань", "Советский", 17),
    ("Казань", "Вахитовский", 19),
    ("Казань", "Приволжский", 29),
    ("Зеленодольск", "", 37),
]


def isp_year(
    year: int = 2026, deals: int = 5000, seed: int = 1, calendar: WorkCalendar | None = None, crm: str = "b24"
) -> Iterator[HistoryItem]:
    """``deals`` applications spread over ``year``, each with its stage history, in time order."""
    rng = random.Random(seed)
    cal = calendar or WorkCalendar(country="RU", timezone="Europe/Moscow", work_hours="09:00-18:00")
    tz = ZoneInfo("Europe/Moscow")
    start = datetime(year, 1, 1, tzinfo=tz)
    items: list[HistoryItem] = []
    for number in range(1, deals + 1):
        created = cal.next_working_moment(start + timedelta(seconds=rng.randrange(365 * 86400)))
        items.extend(_application(rng, cal, str(number), created, crm))
    items.sort(key=lambda i: i.at)
    yield from items


def _application(rng: random.Random, cal: WorkCalendar, deal_id: str, created: datetime, crm: str) -> list[HistoryItem]:
    city, district, captain = rng.choice(PLACES)
    fields: dict[str, Any] = {"UF_CRM_SOURCE": "agent" if rng.random() < 0.33 else rng.choice(["site", "call"])}
    deal = Deal(
        crm=crm,
        id=deal_id,
        title=f"Подключение №{deal_id}",
        stage="C1:NEW",
        pipeline="1",
        responsible_id="1",
        created_at=created,
        updated_at=created,
        location=Location(text=f"{city}, {district}".strip(", "), city=city, district=district),
        fields=fields,
    )
    out = [HistoryItem(created, EventKind.DEAL_CREATED, deal)]
    at = created

    def step(hours: float, **changes: Any) -> None:
        nonlocal at, deal
        at = cal.add(at, f"{max(1, int(hours * 60))} working minutes")
        new_fields = {**deal.fields, **changes.pop("fields", {})}
        deal = replace(deal, updated_at=at, fields=new_fields, **changes)
        out.append(HistoryItem(at, EventKind.DEAL_UPDATED, deal))

    step(rng.uniform(0.2, 3), responsible_id=str(captain))  # captain assigned
    roll = rng.random()
    if roll < 0.10:  # no poles
        step(rng.uniform(1, 8), fields={"UF_CRM_TECH_RESULT": "Нет опор"})
        step(
            0.2,
            stage="C1:LOSE",
            stage_semantic="lost",
            fields={"UF_CRM_LOST_REASON": "Нет технической возможности (нет опор)"},
        )
        return out
    step(rng.uniform(0.5, 8), stage="C1:ROUTE", fields={"UF_CRM_TECH_RESULT": "Есть"})
    step(rng.uniform(0.5, 6), stage="C1:ENGINEERS")
    step(rng.uniform(1, 6), stage="C1:VISIT")
    roll = rng.random()
    if roll < 0.06:  # client not at home: a new time is agreed
        agreed = cal.add(at, "1 working day").isoformat()
        step(1, fields={"UF_CRM_VISIT_RESULT": "Клиент не дома", "UF_CRM_AGREED_TIME": agreed})
        step(rng.uniform(8, 10), fields={"UF_CRM_VISIT_RESULT": ""})
    elif roll < 0.08:  # legal claim
        step(1, fields={"UF_CRM_VISIT_RESULT": "Юридическая претензия"})
        return out
    elif roll < 0.11:  # closed as lost with no reason
        step(rng.uniform(1, 30), stage="C1:LOSE", stage_semantic="lost")
        return out
    late = rng.random() < 0.15
    step(
        rng.uniform(20, 40) if late else rng.uniform(0.5, 3),
        stage="C1:WON",
        stage_semantic="won",
        fields={"UF_CRM_VISIT_RESULT": "Подключено"},
    )
    if rng.random() < 0.8:
        step(rng.uniform(8, 120), fields={"UF_CRM_PAID": "Y"})
    return out
