"""The toy CRM's adapter: a deal source, a command sink for tasks, a webhook receiver."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime

from adapters.contracts import CommandSink, CrmAdapter, DealSource, IncomingRequest, WebhookReceiver, WriteResult
from adapters.webhooks import TokenValidator
from domain import Command, CreateTask, Deal, Event, EventKind, EventSource, User
from domain.errors import MalformedWebhook
from domain.keys import webhook_key
from tests.toy_crm.board import BOARDS, Board
from tests.toy_crm.settings import ToySettings

EVENTS = {"deal.created": EventKind.DEAL_CREATED, "deal.updated": EventKind.DEAL_UPDATED}


def _header_token(request: IncomingRequest) -> str | None:
    return request.headers.get("X-Toy-Token")


class ToyAdapter(CrmAdapter[ToySettings], DealSource, CommandSink, WebhookReceiver):
    type = "toy"

    def __init__(self, name: str, settings: ToySettings) -> None:
        super().__init__(name, settings)
        self.board: Board = BOARDS.setdefault(settings.board, Board())
        self.validators = (TokenValidator(settings.token, _header_token, name="toy token"),)

    # --- DealSource ------------------------------------------------------------------------

    def get_deals(self, deal_ids: Iterable[str]) -> dict[str, Deal]:
        return {i: self._deal(i) for i in deal_ids if i in self.board.deals}

    def changed_deals(self, since: datetime | None) -> Iterator[Deal]:
        for deal_id, at in sorted(self.board.modified.items(), key=lambda kv: kv[1]):
            if since is None or at >= since:
                yield self._deal(deal_id)

    def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        return {u: User(u, self.board.users[u]) for u in user_ids if u in self.board.users}

    def open_deal_counts(self, user_ids: list[str]) -> dict[str, int]:
        return {u: sum(1 for d in self.board.deals.values() if d.get("owner") == u) for u in user_ids}

    def _deal(self, deal_id: str) -> Deal:
        raw = self.board.deals[deal_id]
        return Deal(
            crm=self.name,
            id=deal_id,
            title=raw.get("title", ""),
            stage=raw.get("stage", "new"),
            responsible_id=raw.get("owner"),
            updated_at=self.board.modified.get(deal_id),
            fields=dict(raw),
        )

    # --- CommandSink -----------------------------------------------------------------------

    def _create_task(self, command: CreateTask, marker: str) -> WriteResult:
        text = f"{command.description}\n[{marker}]"
        return WriteResult(self.board.add_task(command.deal_id, command.title, command.responsible_id, text))

    def find_written(self, command: Command, marker: str) -> WriteResult | None:
        for number, task in enumerate(self.board.tasks, 1):
            if marker in task["text"]:
                return WriteResult(str(number), reconciled=True)
        return None

    handlers = {CreateTask: _create_task}

    # --- WebhookReceiver -------------------------------------------------------------------

    def parse(self, request: IncomingRequest, *, received_at: datetime) -> list[Event]:
        try:
            body = json.loads(request.body)
            kind, deal_id, delivery = EVENTS[body["event"]], str(body["deal"]), str(body["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedWebhook("expected {event, deal, id}") from exc
        return [
            Event(
                crm=self.name,
                kind=kind,
                deal_id=deal_id,
                occurred_at=received_at,
                dedup_key=webhook_key("toy", delivery),
                source=EventSource.WEBHOOK,
            )
        ]
