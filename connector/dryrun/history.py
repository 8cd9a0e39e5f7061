"""Where a dry-run's history comes from: a JSON-lines file, the CRM, or the inbox."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters.contracts import CrmAdapter, DealSource
from connector.dryrun.replay import HistoryItem
from connector.storage.store import Store
from domain import Deal, EventKind, Location

HISTORY_KINDS = (EventKind.DEAL_CREATED, EventKind.DEAL_UPDATED)


def deal_to_dict(deal: Deal) -> dict[str, Any]:
    """A deal as one JSON object (dates as ISO text)."""
    data = asdict(deal)
    for key in ("created_at", "updated_at"):
        data[key] = data[key].isoformat() if data[key] else None
    data["amount"] = str(deal.amount) if deal.amount is not None else None
    return data


def deal_from_dict(data: dict[str, Any]) -> Deal:
    """The inverse of :func:`deal_to_dict`."""
    location = data.get("location")
    return Deal(
        crm=str(data["crm"]),
        id=str(data["id"]),
        title=data.get("title", ""),
        stage=data.get("stage", ""),
        stage_semantic=data.get("stage_semantic", "open"),
        pipeline=str(data.get("pipeline", "")),
        responsible_id=data.get("responsible_id"),
        amount=Decimal(data["amount"]) if data.get("amount") not in (None, "") else None,
        currency=data.get("currency"),
        created_at=datetime.fromisoformat(data["created_at"]) if data.get("created_at") else None,
        updated_at=datetime.fromisoformat(data["updated_at"]) if data.get("updated_at") else None,
        location=Location(**location) if isinstance(location, dict) else None,
        fields=dict(data.get("fields") or {}),
    )


def write_jsonl(items: Iterable[HistoryItem], path: Path) -> int:
    """Write history as JSON lines ``{"at", "kind", "deal"}`` (and ``"data"``, the event's own
    data, when it has any: a 1C document's figures); returns the count."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for item in items:
            line: dict[str, Any] = {"at": item.at.isoformat(), "kind": str(item.kind), "deal": deal_to_dict(item.deal)}
            if item.data:
                line["data"] = dict(item.data)
            out.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
            count += 1
    return count


def read_jsonl(path: Path, since: datetime | None = None, until: datetime | None = None) -> Iterator[HistoryItem]:
    """History from a JSON-lines file (recorded or generated), within [since, until]."""
    with path.open(encoding="utf-8") as source:
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                item = HistoryItem(
                    datetime.fromisoformat(raw["at"]),
                    EventKind(raw["kind"]),
                    deal_from_dict(raw["deal"]),
                    dict(raw.get("data") or {}),
                )
            except (KeyError, ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a history line ({exc})") from exc
            if item.at.tzinfo is None:
                raise ValueError(f"{path}:{number}: 'at' needs a time zone")
            if (since is None or item.at >= since) and (until is None or item.at <= until):
                yield item


def from_crm(adapter: DealSource, since: datetime) -> list[HistoryItem]:
    """Deals changed since ``since`` as the CRM shows them now: their creation (when after
    ``since``) and their last change. The CRM keeps no past states, so stage moves in
    between are not seen; record history as JSON lines for a faithful replay."""
    items: list[HistoryItem] = []
    for deal in adapter.changed_deals(since):
        if deal.created_at is not None and deal.created_at >= since:
            items.append(HistoryItem(deal.created_at, EventKind.DEAL_CREATED, deal))
        if deal.updated_at is not None and deal.updated_at != deal.created_at:
            items.append(HistoryItem(deal.updated_at, EventKind.DEAL_UPDATED, deal))
    return sorted(items, key=lambda i: i.at)


def from_inbox(store: Store, adapters: dict[str, CrmAdapter], since: datetime) -> list[HistoryItem]:
    """The inbox's deal events since ``since``, at the moments they happened, with each deal
    as its CRM shows it now (one batched read per CRM)."""
    rows = store.inbox.events_since(since, [str(k) for k in HISTORY_KINDS])
    deals: dict[tuple[str, str], Deal] = {}
    for crm, adapter in adapters.items():
        if not isinstance(adapter, DealSource):
            continue
        wanted = sorted({d for c, d, _, _ in rows if c == crm and d})
        if wanted:
            deals.update({(crm, i): deal for i, deal in adapter.get_deals(wanted).items()})
    return [
        HistoryItem(at, EventKind(kind), deals[(crm, deal_id)])
        for crm, deal_id, kind, at in rows
        if deal_id and (crm, deal_id) in deals
    ]
