"""The Pipedrive adapter: deals, users, activities (tasks) and notes over API v2 and v1."""

from __future__ import annotations

import dataclasses
import html
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from adapters.contracts import (
    CommandSink,
    CrmAdapter,
    CrmInventory,
    DealSearch,
    DealSource,
    DuplicateSearch,
    FactSource,
    IncomingRequest,
    Inspectable,
    WebhookReceiver,
    WriteResult,
)
from adapters.pipedrive.client import PipedriveClient
from adapters.pipedrive.mapping import (
    CUSTOM_KEY,
    DEAL_STATUSES,
    FIELD_NAMES,
    activity_fact,
    deal_fact,
    deal_fields_to_pd,
    deal_from_pd,
    format_time,
    planned_fact,
    user_from_pd,
)
from adapters.pipedrive.settings import PipedriveSettings
from adapters.pipedrive.webhook import DeliveryParser
from adapters.webhooks import BasicAuthValidator
from domain import AddComment, CloseDeal, Command, CreateTask, Deal, Event, UpdateDeal, User
from domain.duplicates import Duplicate
from domain.errors import NotFoundError
from domain.facts import Fact
from rules.identity import check_phone, national_digits

IDS_PER_CALL = 100  # the v2 list's ``ids`` filter takes at most 100


class PipedriveAdapter(
    CrmAdapter[PipedriveSettings],
    DealSource,
    DealSearch,
    DuplicateSearch,
    FactSource,
    CommandSink,
    WebhookReceiver,
    Inspectable,
):
    """One Pipedrive company, reached with an API token."""

    type = "pipedrive"
    planned_activities = True
    bookkeeping_fields = frozenset(
        {"update_time", "stage_change_time", "close_time", "lost_time", "won_time", "first_won_time"}
    )
    webhooks_carry_previous = True
    field_names = FIELD_NAMES

    def __init__(self, name: str, settings: PipedriveSettings, client: PipedriveClient | None = None) -> None:
        super().__init__(name, settings)
        self.client = client or PipedriveClient(
            settings.base_url,
            settings.api_token,
            crm=name,
            burst_limit=settings.burst_limit,
            window=settings.window,
            rate=settings.rate,  # the deprecated leaky bucket, where the config names it
            burst=settings.burst,
            timeout=settings.timeout,
            max_attempts=settings.max_attempts,
            backoff_initial=settings.backoff_initial,
        )
        self.location_fields = settings.location_fields
        # Pipedrive signs nothing: the Basic credentials the webhooks were registered with are the proof.
        self.validators = (BasicAuthValidator(settings.webhook_user, settings.webhook_password),)
        self.deliveries = DeliveryParser(
            name, skip_own_changes=settings.skip_own_changes, own_user_id=settings.own_user_id
        )

    def parse(self, request: IncomingRequest, *, received_at: datetime) -> list[Event]:
        return self.deliveries.parse(request, received_at=received_at)

    @classmethod
    def sample_deal(cls, crm: str) -> Deal:
        return Deal(
            crm=crm,
            id="1",
            title="Acme: 50 licences",
            stage="1",
            pipeline="1",
            responsible_id="1",
            amount=Decimal("5000"),
            currency="EUR",
            created_at=datetime(2026, 1, 12, 9, 0, tzinfo=UTC),
            updated_at=datetime(2026, 1, 12, 9, 0, tzinfo=UTC),
            fields={"id": 1, "title": "Acme: 50 licences", "stage_id": 1, "pipeline_id": 1, "owner_id": 1},
        )

    # --- the connection test ---------------------------------------------------------

    def inspect(self) -> CrmInventory:
        """``users/me`` (who the token is, its apps and admin rights), ``stages`` of every
        pipeline, ``users`` and ``dealFields``."""
        me = self.client.get("/v1/users/me") or {}
        access = [a for a in me.get("access") or [] if isinstance(a, Mapping)]
        permissions = tuple(f"{a.get('app')}{' (admin)' if a.get('admin') else ''}" for a in access) or (
            ("admin",) if me.get("is_admin") else ("user",)
        )
        pipelines: dict[str, list[str]] = {}
        for stage in self.client.iter_v2("/api/v2/stages"):
            pipelines.setdefault(str(stage.get("pipeline_id")), []).append(str(stage.get("id")))
        users = {u.id: u for u in (user_from_pd(raw) for raw in self.client.get("/v1/users") or [])}
        fields = {str(f.get("key")): str(f.get("name") or f.get("key")) for f in self.client.iter_v1("/v1/dealFields")}
        if "user_id" in fields:  # v2 deals, which the rules read, call the owner owner_id
            fields.setdefault("owner_id", fields["user_id"])
        problems = {
            f"location_fields.{part}": f"no deal field {key!r} in the company"
            for part, key in self.location_fields.items()
            if key not in fields
        }
        return CrmInventory(
            account=f"user {me.get('id')} {me.get('name') or ''} ({me.get('company_domain') or ''})".strip(),
            permissions=permissions,
            missing_permissions=() if not access or any(a.get("app") == "sales" for a in access) else ("sales",),
            pipelines={k: tuple(v) for k, v in pipelines.items()},
            users=users,
            fields=fields,
            settings_problems=problems,
            webhook_setup="webhooks (Tools and apps → Webhooks) for deal events added, updated and deleted, "
            "with HTTP auth webhook_user / webhook_password",
        )

    def interrupt(self) -> None:
        """Cut retry and throttle waits short."""
        self.client.interrupt()

    def close(self) -> None:
        """Close the HTTP session."""
        self.client.close()

    # --- reads ---------------------------------------------------------------------

    def get_deals(self, deal_ids: Iterable[str]) -> dict[str, Deal]:
        """Read deals: one GET for a single id, else the v2 list filtered by up to 100 ids.

        Deleted deals count as absent (Pipedrive keeps them with status "deleted").
        """
        ids = list(dict.fromkeys(str(i) for i in deal_ids if str(i).isdigit()))
        found: dict[str, Deal] = {}
        if len(ids) == 1:
            try:
                raw = self.client.get(f"/api/v2/deals/{ids[0]}")
            except NotFoundError:
                return found
            if isinstance(raw, dict) and not _deleted(raw):
                found[ids[0]] = deal_from_pd(self.name, raw, self.location_fields)
            return found
        for start in range(0, len(ids), IDS_PER_CALL):
            chunk = ids[start : start + IDS_PER_CALL]
            for raw in self.client.iter_v2("/api/v2/deals", {"ids": ",".join(chunk)}):
                if not _deleted(raw):
                    deal = deal_from_pd(self.name, raw, self.location_fields)
                    found[deal.id] = deal
        return found

    def changed_deals(self, since: datetime | None) -> Iterator[Deal]:
        """Deals by ``update_time`` ascending (cursor paging); the poller keeps the cursor."""
        params: dict[str, Any] = {"sort_by": "update_time", "sort_direction": "asc"}
        if since is not None:
            params["updated_since"] = format_time(since)
        for raw in self.client.iter_v2("/api/v2/deals", params):
            yield deal_from_pd(self.name, raw, self.location_fields)

    def find_deal_ids(self, field: str, value: str, limit: int = 2) -> list[str]:
        """Deals whose ``field`` (a custom field's hash key, or ``title``) equals ``value``.

        ``/v1/itemSearch/field`` with an exact match returns item ids; each candidate is then
        read to drop deleted deals and to compare the value exactly (search folds case).
        """
        if not value:
            return []
        params = {
            "term": value,
            "field_type": "dealField",
            "field_key": field,
            "exact_match": "true",
            "return_item_ids": "true",
        }
        candidates: list[str] = []
        for row in self.client.iter_v1("/v1/itemSearch/field", params, limit=100):
            if isinstance(row, Mapping) and row.get("id") is not None and str(row["id"]) not in candidates:
                candidates.append(str(row["id"]))
            if len(candidates) >= 100:  # far more than an ambiguity check needs
                break
        deals = self.get_deals(candidates) if candidates else {}
        matched = [d for d in candidates if d in deals and str(deals[d].fields.get(field) or "") == value]
        return matched[:limit]

    def find_duplicates(self, deal: Deal, by: str, values: Sequence[str]) -> list[Duplicate]:
        """Persons with the phone or e-mail (``persons/search``), organizations with the INN in a
        custom field (``organizations/search``), then those persons' and organizations' other
        deals; the deal's own person and organization are left out.

        A phone is searched by its national digits (people type "8 916…", "+7 (916)…") and a hit
        kept only when one of the person's numbers is the same number.
        """
        own = {
            ("person", str(deal.fields.get("person_id") or "")),
            ("organization", str(deal.fields.get("org_id") or "")),
        }
        found: list[Duplicate] = []
        for value in values:
            if by == "inn":
                items = self._search("/api/v2/organizations/search", value, "custom_fields", exact=True)
                matches = [("organization", str(i["id"])) for i in items]
            elif by == "email":
                items = self._search("/api/v2/persons/search", value, "email", exact=True)
                matches = [
                    ("person", str(i["id"])) for i in items if value in [e.lower() for e in i.get("emails") or []]
                ]
            else:
                term = national_digits(value)
                items = self._search("/api/v2/persons/search", term, "phone", exact=False)
                matches = [
                    ("person", str(i["id"]))
                    for i in items
                    if any(check_phone(str(p)).value == value for p in i.get("phones") or [])
                ]
            found += [Duplicate(kind, i, by, value) for kind, i in matches if (kind, i) not in own]
        for kind, param in (("person", "person_id"), ("organization", "org_id")):
            for match in [d for d in found if d.kind == kind]:
                rows = self.client.get("/api/v2/deals", {param: match.id, "limit": 50}) or []
                found += [Duplicate("deal", str(r["id"]), by, match.value) for r in rows if str(r["id"]) != deal.id]
        return found

    def _search(self, path: str, term: str, field: str, *, exact: bool) -> list[dict[str, Any]]:
        data = self.client.get(path, {"term": term, "fields": field, "exact_match": str(exact).lower(), "limit": 50})
        return [entry["item"] for entry in (data or {}).get("items") or [] if isinstance(entry.get("item"), dict)]

    def open_deal_counts(self, user_ids: list[str]) -> dict[str, int]:
        """Open deals per owner, from one paged list of open deals."""
        wanted = set(user_ids)
        counts: Counter[str] = Counter()
        for raw in self.client.iter_v2("/api/v2/deals", {"status": "open"}):
            owner = str(raw.get("owner_id"))
            if owner in wanted:
                counts[owner] += 1
        return {u: counts.get(u, 0) for u in user_ids}

    def read_facts(self, since: datetime, until: datetime) -> Iterator[Fact]:
        """Activities marked done (``done=true``; marking one done moves its ``update_time``, so
        ``updated_since`` finds them), deals created or closed in the window, and open deals."""
        params = {"done": "true", "updated_since": format_time(since)}
        for raw in self.client.iter_v2("/api/v2/activities", params):
            fact = activity_fact(raw)
            if fact.at is not None and since <= fact.at < until:
                yield fact
        seen: set[str] = set()
        for raw in self.client.iter_v2("/api/v2/deals", {"updated_since": format_time(since)}):
            if not _deleted(raw):
                seen.add(str(raw.get("id")))
                yield deal_fact(raw)
        for raw in self.client.iter_v2("/api/v2/deals", {"status": "open"}):
            if str(raw.get("id")) not in seen:
                yield deal_fact(raw)

    def read_planned(self, since: datetime, until: datetime) -> Iterator[Fact]:
        """Activities not done (``done=false``) due in the window; v2 filters activities by
        neither due date nor time, so every open one is read and the window applied here."""
        for raw in self.client.iter_v2("/api/v2/activities", {"done": "false"}):
            fact = planned_fact(raw)
            if fact.at is not None and since <= fact.at < until:
                yield fact

    def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        """Users by id, from ``/v1/users`` (one call lists the company's users)."""
        ids = {str(i) for i in user_ids}
        if not ids:
            return {}
        users: dict[str, User] = {}
        for raw in self.client.get("/v1/users") or []:
            user = user_from_pd(raw)
            if user.id in ids:
                users[user.id] = user
        return users

    # --- writes --------------------------------------------------------------------

    def _create_task(self, command: CreateTask, marker: str) -> WriteResult:
        body = self._activity(command, marker)
        data = self.client.request("POST", "/api/v2/activities", json=body, idempotent=False).get("data") or {}
        return WriteResult(remote_id=str(data["id"]) if data.get("id") else None)

    def _update(self, command: UpdateDeal, marker: str) -> WriteResult:
        self._patch_deal(command.deal_id, deal_fields_to_pd(command.values))
        return WriteResult(remote_id=command.deal_id)

    def _add_note(self, command: AddComment, marker: str) -> WriteResult:
        content = f"{_html_text(command.text)}<br><br>[{marker}]"
        data = (
            self.client.request(
                "POST", "/v1/notes", json={"content": content, "deal_id": int(command.deal_id)}, idempotent=False
            ).get("data")
            or {}
        )
        return WriteResult(remote_id=str(data["id"]) if data.get("id") else None)

    def find_written(self, command: Command, marker: str) -> WriteResult | None:
        """Find an earlier try's activity or note by its marker; deal updates are idempotent."""
        if isinstance(command, CreateTask):
            params: dict[str, Any] = (
                {"deal_id": command.deal_id} if command.deal_id else {"owner_id": command.responsible_id}
            )
            for activity in self.client.iter_v2("/api/v2/activities", params):
                if marker in str(activity.get("note") or ""):
                    return WriteResult(remote_id=str(activity.get("id")), reconciled=True)
            return None
        if isinstance(command, AddComment):
            for note in self.client.iter_v1("/v1/notes", {"deal_id": command.deal_id}):
                if marker in str(note.get("content") or ""):
                    return WriteResult(remote_id=str(note.get("id")), reconciled=True)
            return None
        return None  # field updates set values: doing them again changes nothing

    def _activity(self, command: CreateTask, marker: str) -> dict[str, Any]:
        description = command.description.strip()
        # The note is HTML; the marker lets a retried dispatch find this activity instead of adding another.
        note = f"{_html_text(description)}<br><br>[{marker}]" if description else f"[{marker}]"
        body: dict[str, Any] = {
            "subject": command.title,
            "type": command.task_type or "task",
            "note": note,
            "done": False,
        }
        if command.deal_id:  # a report's task belongs to no deal
            body["deal_id"] = int(command.deal_id)
        if command.responsible_id:
            body["owner_id"] = int(command.responsible_id)
        if command.deadline is not None:
            due = command.deadline if command.deadline.tzinfo else command.deadline.replace(tzinfo=UTC)
            due = due.astimezone(UTC)  # Pipedrive keeps due_date/due_time in UTC
            body["due_date"] = due.strftime("%Y-%m-%d")
            body["due_time"] = due.strftime("%H:%M")
        return body

    def _patch_deal(self, deal_id: str, body: dict[str, Any]) -> None:
        if not deal_id.isdigit():
            raise NotFoundError("deal ids are numeric", crm=self.name, method="PATCH /api/v2/deals")
        self.client.request("PATCH", f"/api/v2/deals/{deal_id}", json=body)

    def deal_after(self, deal: Deal, command: Command) -> Deal:
        """As Pipedrive keeps it: won and lost are the deal's ``status``, not a stage, so a
        written status (a close, or a rule reopening a deal) brings the outcome along."""
        after = super().deal_after(deal, command)
        if isinstance(command, CloseDeal):
            fields = {**after.fields, "status": command.outcome}
            if command.outcome == "lost" and command.reason:
                fields[command.reason_field or "lost_reason"] = command.reason
            return dataclasses.replace(after, fields=fields)
        status = after.fields.get("status")
        if status == deal.fields.get("status") or status not in DEAL_STATUSES:
            return after
        return dataclasses.replace(after, stage_semantic=DEAL_STATUSES[str(status)])

    def _close(self, command: CloseDeal, marker: str) -> WriteResult:
        body: dict[str, Any] = {"status": command.outcome}
        if command.outcome == "lost" and command.reason:
            field = command.reason_field or "lost_reason"
            if CUSTOM_KEY.match(field):
                body["custom_fields"] = {field: command.reason}
            elif field == "lost_reason":
                body["lost_reason"] = command.reason  # accepted only together with status lost
            else:
                body[field] = command.reason
        self._patch_deal(command.deal_id, body)
        return WriteResult(remote_id=command.deal_id)

    handlers = {CreateTask: _create_task, UpdateDeal: _update, AddComment: _add_note, CloseDeal: _close}


def _deleted(raw: Mapping[str, Any]) -> bool:
    return raw.get("status") == "deleted" or bool(raw.get("is_deleted"))


def _html_text(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")
