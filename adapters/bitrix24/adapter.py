"""The Bitrix24 adapter: deals, users, tasks and comments over the inbound-webhook REST API."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from adapters.bitrix24.client import BATCH_LIMIT, Bitrix24Client
from adapters.bitrix24.keyset import read_deals
from adapters.bitrix24.mapping import (
    ACTIVITY_SELECT,
    FACT_DEAL_SELECT,
    FIELD_NAMES,
    SEMANTICS,
    activity_fact,
    deal_fact,
    deal_fields_to_b24,
    deal_from_b24,
    format_datetime,
    planned_fact,
    stage_fact,
    user_from_b24,
)
from adapters.bitrix24.settings import Bitrix24Settings
from adapters.bitrix24.webhook import form_token, parse_delivery
from adapters.contracts import (
    CommandSink,
    CrmAdapter,
    CrmInventory,
    DealSearch,
    DealSource,
    DepartmentSource,
    DuplicateSearch,
    FactSource,
    IncomingRequest,
    Inspectable,
    WebhookReceiver,
    Write,
    WriteResult,
)
from adapters.webhooks import TokenValidator
from domain import AddComment, CloseDeal, Command, CreateTask, Deal, Event, UpdateDeal, User
from domain.duplicates import Duplicate
from domain.errors import AdapterError, AmbiguousWriteError, FatalError, NotFoundError
from domain.facts import Fact
from domain.org import Department

_PRIORITY = {"low": 0, "normal": 1, "high": 2}


# The scopes the connector's calls need: deals and stages, tasks, users.
NEEDED_SCOPES = ("crm", "task", "user")


# crm.requisite.list: the owner's ENTITY_TYPE_ID (3 a contact, 4 a company).
REQUISITE_OWNERS = {"3": "contact", "4": "company"}


class Bitrix24Adapter(
    CrmAdapter[Bitrix24Settings],
    DealSource,
    DealSearch,
    DepartmentSource,
    FactSource,
    DuplicateSearch,
    CommandSink,
    WebhookReceiver,
    Inspectable,
):
    """One Bitrix24 portal, reached through an inbound webhook URL."""

    type = "bitrix24"
    stage_history = True
    planned_activities = True
    bookkeeping_fields = frozenset({"DATE_MODIFY", "MOVED_TIME"})
    field_names = FIELD_NAMES

    def __init__(self, name: str, settings: Bitrix24Settings, client: Bitrix24Client | None = None) -> None:
        super().__init__(name, settings)
        self.client = client or Bitrix24Client(
            settings.webhook_url,
            crm=name,
            rate=settings.rate,
            burst=settings.burst,
            timeout=settings.timeout,
            max_attempts=settings.max_attempts,
            backoff_initial=settings.backoff_initial,
        )
        self.location_fields = settings.location_fields
        self.validators = (TokenValidator(settings.application_token, form_token, name="application token"),)

    def parse(self, request: IncomingRequest, *, received_at: datetime) -> list[Event]:
        return parse_delivery(self.name, request, received_at=received_at)

    @classmethod
    def sample_deal(cls, crm: str) -> Deal:
        return Deal(
            crm=crm,
            id="1",
            title="Подключение: Казань, ул. Баумана, 1",
            stage="C1:NEW",
            pipeline="1",
            responsible_id="1",
            amount=Decimal("1000"),
            currency="RUB",
            created_at=datetime(2026, 1, 12, 9, 0, tzinfo=UTC),
            updated_at=datetime(2026, 1, 12, 9, 0, tzinfo=UTC),
            fields={"ID": "1", "TITLE": "Подключение", "STAGE_ID": "C1:NEW", "CATEGORY_ID": "1", "ASSIGNED_BY_ID": "1"},
        )

    # --- the connection test ---------------------------------------------------------

    def inspect(self) -> CrmInventory:
        """``scope``, ``user.current``, the deal stages of every pipeline (``crm.status.list``),
        ``user.get`` and ``crm.deal.fields``; a part whose scope is missing is left unread."""
        scopes = tuple(str(s) for s in self.client.call("scope") or ())
        missing = tuple(s for s in NEEDED_SCOPES if s not in scopes)
        account = ""
        try:
            me = self.client.call("user.current") or {}
            account = f"user {me.get('ID')} {user_from_b24(me).name}".strip()
        except AdapterError:
            pass  # the webhook's user is only for the report
        pipelines: dict[str, tuple[str, ...]] | None = None
        fields: dict[str, str] | None = None
        users: dict[str, User] | None = None
        if "crm" in scopes:
            found: dict[str, list[str]] = {}
            for row in self.client.list_all("crm.status.list", {"order": {"SORT": "ASC"}}):
                entity = str(row.get("ENTITY_ID") or "")
                if entity == "DEAL_STAGE" or entity.startswith("DEAL_STAGE_"):
                    found.setdefault(str(row.get("CATEGORY_ID") or "0"), []).append(str(row.get("STATUS_ID")))
            pipelines = {k: tuple(v) for k, v in found.items()}
            described = self.client.call("crm.deal.fields") or {}
            fields = {
                str(name): str(d.get("listLabel") or d.get("formLabel") or d.get("title") or name)
                for name, d in described.items()
                if isinstance(d, dict)
            }
        if "user" in scopes:
            users = {u.id: u for u in (user_from_b24(raw) for raw in self.client.list_all("user.get", {}))}
        return CrmInventory(
            account=account,
            permissions=scopes,
            missing_permissions=missing,
            pipelines=pipelines,
            users=users,
            fields=fields,
            settings_problems=self._settings_against(pipelines, fields),
            webhook_setup="an outbound webhook (Developer resources → Other → Outbound webhook) on "
            "ONCRMDEALADD, ONCRMDEALUPDATE and ONCRMDEALDELETE, its application token in application_token",
        )

    def _settings_against(
        self, pipelines: dict[str, tuple[str, ...]] | None, fields: dict[str, str] | None
    ) -> dict[str, str]:
        problems: dict[str, str] = {}
        if fields is not None:
            for part, name in self.settings.location_fields.items():
                if name not in fields:
                    problems[f"location_fields.{part}"] = f"no deal field {name!r} in the portal"
        if pipelines is not None:
            for key in ("lost_stage", "won_stage"):
                for pipeline, stage in getattr(self.settings, key).items():
                    if pipeline not in pipelines:
                        problems[f"{key}.{pipeline}"] = f"no pipeline (CATEGORY_ID) {pipeline} in the portal"
                    elif stage not in pipelines[pipeline]:
                        problems[f"{key}.{pipeline}"] = f"no stage {stage!r} in pipeline {pipeline}"
        return problems

    def interrupt(self) -> None:
        self.client.interrupt()

    def close(self) -> None:
        self.client.close()

    # --- reads ---------------------------------------------------------------------

    def get_deals(self, deal_ids: Iterable[str]) -> dict[str, Deal]:
        """Read deals, up to ``batch_size`` (50) per ``batch`` request; missing deals are left out."""
        ids = list(dict.fromkeys(str(i) for i in deal_ids))
        found: dict[str, Deal] = {}
        size = self.client.batch_size  # 50: a batch is one hit of the bucket
        for chunk_start in range(0, len(ids), size):
            chunk = ids[chunk_start : chunk_start + size]
            if len(chunk) == 1:
                try:
                    raw = self.client.call("crm.deal.get", {"ID": chunk[0]})
                except NotFoundError:
                    continue
                found[chunk[0]] = deal_from_b24(self.name, raw, self.location_fields)
                continue
            result = self.client.batch({f"d{i}": ("crm.deal.get", {"ID": i}) for i in chunk})
            for err in result.errors.values():
                if not isinstance(err, NotFoundError):
                    raise err
            for key, raw in result.result.items():
                if isinstance(raw, dict) and raw.get("ID"):
                    found[key[1:]] = deal_from_b24(self.name, raw, self.location_fields)
        return found

    def changed_deals(self, since: datetime | None) -> Iterator[Deal]:
        """Deals by ``DATE_MODIFY`` ascending from ``since`` (inclusive); the poller keeps the cursor.

        Paged by key, not by offset: while we read, deals keep changing and move to the end
        of the order, which shifts every later offset and would skip a deal for good. Each
        page starts after the last deal read: the rest of its second by ID, then later seconds.
        The first page is one request; after it, pages are chained inside ``batch`` requests
        (up to ``batch_size`` each), every page starting from the last row of the one before
        it through ``$result[key][49][...]``. A long read is split into key ranges read side
        by side and yielded in order (``read_deals`` in ``adapters.bitrix24.keyset``).
        """
        for raw in read_deals(self.client, format_datetime(since) if since is not None else None, crm=self.name):
            yield deal_from_b24(self.name, raw, self.location_fields)

    def read_facts(self, since: datetime, until: datetime) -> Iterator[Fact]:
        """Completed activities (``COMPLETED=Y``) that ended in the window, deals changed since
        its start (created, won or lost then), the deals still open, and the deals' entries into
        stages in the window (``crm.stagehistory.list``, each with its deal's responsible)."""
        owners: dict[str, str | None] = {}
        select = {"order": {"ID": "ASC"}, "select": FACT_DEAL_SELECT}
        for raw in self.client.list_all(
            "crm.deal.list", {"filter": {">=DATE_MODIFY": format_datetime(since)}, **select}
        ):
            fact = deal_fact(raw)
            owners[fact.id] = fact.user
            yield fact
        for raw in self.client.list_all("crm.deal.list", {"filter": {"STAGE_SEMANTIC_ID": "P"}, **select}):
            if str(raw.get("ID")) not in owners:
                fact = deal_fact(raw)
                owners[fact.id] = fact.user
                yield fact
        window = {"COMPLETED": "Y", ">=END_TIME": format_datetime(since), "<END_TIME": format_datetime(until)}
        activities = {"filter": window, "order": {"ID": "ASC"}, "select": ACTIVITY_SELECT}
        for raw in self.client.list_all("crm.activity.list", activities):
            yield activity_fact(raw)
        moves = {
            "entityTypeId": 2,
            "filter": {">=CREATED_TIME": format_datetime(since), "<CREATED_TIME": format_datetime(until)},
            "order": {"ID": "ASC"},
        }
        for raw in self.client.list_all("crm.stagehistory.list", moves, items_key="items"):
            yield stage_fact(raw, owners.get(str(raw.get("OWNER_ID"))))

    def read_planned(self, since: datetime, until: datetime) -> Iterator[Fact]:
        """Activities not completed (``COMPLETED=N``) that start in the window."""
        window = {"COMPLETED": "N", ">=START_TIME": format_datetime(since), "<START_TIME": format_datetime(until)}
        activities = {"filter": window, "order": {"ID": "ASC"}, "select": ACTIVITY_SELECT}
        for raw in self.client.list_all("crm.activity.list", activities):
            yield planned_fact(raw)

    def find_deal_ids(self, field: str, value: str, limit: int = 2) -> list[str]:
        rows = (
            self.client.call("crm.deal.list", {"filter": {field: value}, "order": {"ID": "ASC"}, "select": ["ID"]})
            or []
        )
        return [str(r["ID"]) for r in rows[:limit]]

    def find_duplicates(self, deal: Deal, by: str, values: Sequence[str]) -> list[Duplicate]:
        """Leads, contacts and companies with the phone or e-mail (``crm.duplicate.findbycomm``,
        20 values a call) or the INN (``crm.requisite.list`` by ``RQ_INN``), then the other deals
        of those contacts and companies; the deal's own contact, company and lead are left out."""
        own = {
            ("contact", str(deal.fields.get("CONTACT_ID") or "")),
            ("company", str(deal.fields.get("COMPANY_ID") or "")),
            ("lead", str(deal.fields.get("LEAD_ID") or "")),
        }
        found: list[Duplicate] = []
        for value in values:
            if by == "inn":
                rows = self.client.call(
                    "crm.requisite.list",
                    {"filter": {"RQ_INN": value}, "select": ["ENTITY_TYPE_ID", "ENTITY_ID"]},
                )
                matches = [
                    (REQUISITE_OWNERS[str(r["ENTITY_TYPE_ID"])], str(r["ENTITY_ID"]))
                    for r in rows or []
                    if str(r.get("ENTITY_TYPE_ID")) in REQUISITE_OWNERS
                ]
            else:
                result = self.client.call("crm.duplicate.findbycomm", {"type": by.upper(), "values": [value]})
                # An object of id lists by entity type; an empty array when nothing matched.
                matches = [
                    (entity.lower(), str(i))
                    for entity, ids in (result.items() if isinstance(result, dict) else [])
                    for i in ids or []
                ]
            found += [Duplicate(kind, i, by, value) for kind, i in matches if (kind, i) not in own]
        found += self._deals_of(found, deal.id)
        return found

    def _deals_of(self, clients: list[Duplicate], deal_id: str) -> list[Duplicate]:
        """The deals of the contacts and companies found: the client's other deals."""
        deals: list[Duplicate] = []
        for kind, field in (("contact", "CONTACT_ID"), ("company", "COMPANY_ID")):
            by_id = {d.id: d for d in clients if d.kind == kind}
            if not by_id:
                continue
            rows = self.client.call(
                "crm.deal.list",
                {"filter": {field: list(by_id)}, "order": {"ID": "DESC"}, "select": ["ID", field]},
            )
            for row in rows or []:
                if str(row["ID"]) != deal_id and str(row.get(field)) in by_id:
                    match = by_id[str(row.get(field))]
                    deals.append(Duplicate("deal", str(row["ID"]), match.by, match.value))
        return deals

    def open_deal_counts(self, user_ids: list[str]) -> dict[str, int]:
        """One batch: ``crm.deal.list`` per user over open deals, reading only ``total``."""
        counts: dict[str, int] = {}
        size = self.client.batch_size
        for chunk in (user_ids[i : i + size] for i in range(0, len(user_ids), size)):
            commands = {
                f"u{u}": (
                    "crm.deal.list",
                    {"filter": {"ASSIGNED_BY_ID": u, "STAGE_SEMANTIC_ID": "P"}, "select": ["ID"]},
                )
                for u in chunk
            }
            answer = self.client.batch(commands)
            if answer.errors:
                raise next(iter(answer.errors.values()))
            for u in chunk:
                counts[u] = int(answer.total.get(f"u{u}", len(answer.result.get(f"u{u}") or [])))
        return counts

    def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        ids = list(dict.fromkeys(str(i) for i in user_ids))
        if not ids:
            return {}
        users: dict[str, User] = {}
        for raw in self.client.call("user.get", {"FILTER": {"ID": ids}}) or []:
            user = user_from_b24(raw)
            users[user.id] = user
        return users

    def departments(self) -> tuple[list[Department], dict[str, User]]:
        """``department.get`` (``UF_HEAD`` is the head) and the active users' ``UF_DEPARTMENT``."""
        members: dict[str, list[str]] = {}
        users: dict[str, User] = {}
        for raw in self.client.list_all("user.get", {"FILTER": {"ACTIVE": True}}):
            user = user_from_b24(raw)
            users[user.id] = user
            for dept in raw.get("UF_DEPARTMENT") or []:
                members.setdefault(str(dept), []).append(user.id)
        departments = [
            Department(
                id=str(raw.get("ID")),
                name=str(raw.get("NAME") or ""),
                parent_id=str(raw["PARENT"]) if raw.get("PARENT") not in (None, "", "0", 0) else None,
                head_id=str(raw["UF_HEAD"]) if raw.get("UF_HEAD") not in (None, "", "0", 0) else None,
                member_ids=tuple(members.get(str(raw.get("ID")), ())),
            )
            for raw in self.client.list_all("department.get", {})
        ]
        return departments, users

    # --- writes ---------------------------------------------------------------------

    batch_limit = BATCH_LIMIT  # writes of different deals travel together, one hit per 50

    def _create_task(self, command: CreateTask, marker: str) -> WriteResult:
        return self._write_one(self._plan(command, marker, {}))

    def _update(self, command: UpdateDeal, marker: str) -> WriteResult:
        return self._write_one(self._plan(command, marker, {}))

    def _add_comment(self, command: AddComment, marker: str) -> WriteResult:
        return self._write_one(self._plan(command, marker, {}))

    def _close(self, command: CloseDeal, marker: str) -> WriteResult:
        deal = self.get_deal(command.deal_id)
        if deal is None:
            raise NotFoundError("deal not found", crm=self.name, method="crm.deal.get")
        return self._write_one(self._plan(command, marker, {command.deal_id: deal}))

    def _write_one(self, plan: _WritePlan) -> WriteResult:
        return plan.result(self.client.call(plan.method, plan.params, idempotent=plan.idempotent))

    def execute_many(self, writes: Sequence[Write]) -> list[WriteResult | AdapterError]:
        """Carry out writes in ``batch`` requests of up to 50 commands (one hit each).

        Each command's own answer or ``result_error`` decides its write; a batch whose answer
        was lost leaves every write in it ambiguous (``AmbiguousWriteError``): the caller
        reconciles each by its marker. Deals to close are read first, in batches too.
        """
        outcomes: list[WriteResult | AdapterError | None] = [None] * len(writes)
        closing = [command.deal_id for command, _ in writes if isinstance(command, CloseDeal)]
        deals: dict[str, Deal] = {}
        read_error: AdapterError | None = None
        if closing:
            try:
                deals = self.get_deals(closing)
            except AdapterError as exc:
                read_error = exc
        plans: dict[int, _WritePlan] = {}
        for i, (command, marker) in enumerate(writes):
            if isinstance(command, CloseDeal) and read_error is not None:
                outcomes[i] = read_error
                continue
            try:
                plans[i] = self._plan(command, marker, deals)
            except AdapterError as exc:
                outcomes[i] = exc
            except _NoPlan:
                try:
                    outcomes[i] = self.execute(command, marker)
                except AdapterError as exc:
                    outcomes[i] = exc
        order = list(plans)
        for start in range(0, len(order), BATCH_LIMIT):
            chunk = order[start : start + BATCH_LIMIT]
            if len(chunk) == 1:  # one write: its own method's call, the same single hit
                try:
                    outcomes[chunk[0]] = self._write_one(plans[chunk[0]])
                except AdapterError as exc:
                    outcomes[chunk[0]] = exc
                continue
            commands = {f"w{i}": (plans[i].method, plans[i].params) for i in chunk}
            try:
                # Only setting fields may be sent again blindly: a batch that adds anything is not.
                answer = self.client.batch(commands, idempotent=all(plans[i].idempotent for i in chunk))
            except AdapterError as exc:
                for i in chunk:
                    outcomes[i] = exc
                continue
            for i in chunk:
                key = f"w{i}"
                if key in answer.errors:
                    outcomes[i] = answer.errors[key]
                elif key in answer.result:
                    outcomes[i] = plans[i].result(answer.result[key])
                else:  # neither a result nor an error: whether it ran is unknown
                    outcomes[i] = AmbiguousWriteError(
                        "Bitrix24 batch gave no answer for the command", crm=self.name, method=plans[i].method
                    )
        return [o if o is not None else FatalError("no outcome", crm=self.name) for o in outcomes]

    def _plan(self, command: Command, marker: str, deals: Mapping[str, Deal]) -> _WritePlan:
        """The REST call that carries out ``command`` and how to read its answer."""
        if isinstance(command, CreateTask):

            def task_id(result: Any) -> WriteResult:
                task = (result or {}).get("task") or {} if isinstance(result, dict) else {}
                return WriteResult(remote_id=str(task.get("id")) if task.get("id") else None)

            return _WritePlan("tasks.task.add", {"fields": self._task_fields(command, marker)}, task_id)
        if isinstance(command, AddComment):
            comment = {"ENTITY_ID": command.deal_id, "ENTITY_TYPE": "deal", "COMMENT": f"{command.text}\n[{marker}]"}
            return _WritePlan(
                "crm.timeline.comment.add", {"fields": comment}, lambda result: WriteResult(remote_id=str(result))
            )
        if isinstance(command, UpdateDeal):
            return self._deal_update(command.deal_id, deal_fields_to_b24(command.values))
        if isinstance(command, CloseDeal):
            deal = deals.get(command.deal_id)
            if deal is None:
                raise NotFoundError("deal not found", crm=self.name, method="crm.deal.get")
            fields: dict[str, Any] = {"STAGE_ID": self.closed_stage(deal, command.outcome)}
            if command.reason and command.reason_field:
                fields[command.reason_field] = command.reason
            return self._deal_update(command.deal_id, fields)
        raise _NoPlan

    def _deal_update(self, deal_id: str, fields: dict[str, Any]) -> _WritePlan:
        params = {"ID": deal_id, "FIELDS": fields, "PARAMS": {"REGISTER_SONET_EVENT": "N"}}
        return _WritePlan("crm.deal.update", params, lambda result: WriteResult(remote_id=deal_id))

    def find_written(self, command: Command, marker: str) -> WriteResult | None:
        """Find an earlier try's task or comment by its marker; updates are idempotent."""
        lookup = self._lookup(command)
        if lookup is None:
            return None
        method, params, items_key = lookup
        return _marked(self.client.list_all(method, params, items_key=items_key), marker)

    def find_written_many(self, writes: Sequence[Write]) -> list[WriteResult | AdapterError | None]:
        """Look for earlier tries by their markers, one list command per write, 50 per hit; a
        deal with more than a page of tasks or comments is read to its end on its own."""
        found: list[WriteResult | AdapterError | None] = [None] * len(writes)
        lookups = {i: lookup for i, (command, _) in enumerate(writes) if (lookup := self._lookup(command))}
        order = list(lookups)
        for start in range(0, len(order), BATCH_LIMIT):
            chunk = order[start : start + BATCH_LIMIT]
            if len(chunk) == 1:
                try:
                    found[chunk[0]] = self.find_written(*writes[chunk[0]])
                except AdapterError as exc:
                    found[chunk[0]] = exc
                continue
            try:
                answer = self.client.batch({f"f{i}": (lookups[i][0], lookups[i][1]) for i in chunk})
            except AdapterError as exc:
                for i in chunk:
                    found[i] = exc
                continue
            for i in chunk:
                key, (command, marker) = f"f{i}", writes[i]
                if key in answer.errors:
                    found[i] = answer.errors[key]
                    continue
                rows = answer.result.get(key)
                if lookups[i][2] and isinstance(rows, dict):
                    rows = rows.get(lookups[i][2])
                hit = _marked(rows or [], marker)
                if hit is None and answer.next.get(key):
                    try:
                        hit = self.find_written(command, marker)
                    except AdapterError as exc:
                        found[i] = exc
                        continue
                found[i] = hit
        return found

    def _lookup(self, command: Command) -> tuple[str, dict[str, Any], str | None] | None:
        """The list call whose rows would hold an earlier try of ``command`` (None: no need)."""
        if isinstance(command, CreateTask):
            flt = (
                {"UF_CRM_TASK": f"D_{command.deal_id}"}
                if command.deal_id
                else {"RESPONSIBLE_ID": command.responsible_id, "TITLE": command.title}
            )
            return "tasks.task.list", {"filter": flt, "select": ["ID", "DESCRIPTION", "TITLE"]}, "tasks"
        if isinstance(command, AddComment):
            params = {"filter": {"ENTITY_ID": command.deal_id, "ENTITY_TYPE": "deal"}, "select": ["ID", "COMMENT"]}
            return "crm.timeline.comment.list", params, None
        return None  # field updates set values: doing them again changes nothing

    def _task_fields(self, command: CreateTask, marker: str) -> dict[str, Any]:
        description = command.description.rstrip()
        fields: dict[str, Any] = {
            "TITLE": command.title,
            # The marker lets a retried dispatch find this task instead of adding a second.
            "DESCRIPTION": f"{description}\n\n[{marker}]" if description else f"[{marker}]",
            "RESPONSIBLE_ID": command.responsible_id,
            "PRIORITY": _PRIORITY[command.priority],
        }
        if command.deal_id:  # a report's task belongs to no deal
            fields["UF_CRM_TASK"] = [f"D_{command.deal_id}"]
        if command.deadline is not None:
            fields["DEADLINE"] = format_datetime(command.deadline)
        if command.auditors:
            fields["AUDITORS"] = list(command.auditors)
        if self.settings.task_created_by:
            fields["CREATED_BY"] = self.settings.task_created_by
        return fields

    def closed_stage(self, deal: Deal, outcome: str) -> str:
        stages = self.settings.won_stage if outcome == "won" else self.settings.lost_stage
        # "Lost" is a stage semantics in Bitrix24, not one id: each pipeline names its own.
        stage = stages.get(deal.pipeline) or ("WON" if outcome == "won" else "LOSE")
        if deal.pipeline not in ("0", "") and deal.pipeline not in stages:
            stage = f"C{deal.pipeline}:{stage}"
        return stage

    def deal_after(self, deal: Deal, command: Command) -> Deal:
        """As the portal keeps it: a stage moved by a write brings its semantics along."""
        after = super().deal_after(deal, command)
        if after.stage == deal.stage:
            return after
        code = self._semantic_code(after.stage)
        return dataclasses.replace(
            after, stage_semantic=SEMANTICS[code], fields={**after.fields, "STAGE_SEMANTIC_ID": code}
        )

    def _semantic_code(self, stage: str) -> str:
        """S, F or P for a stage id, from the configured won/lost stages and the portal's own
        final stage ids (``WON``, ``LOSE``, ``APOLOGY``, with a ``C<n>:`` prefix in pipelines)."""
        final = stage.rsplit(":", 1)[-1]
        if stage in self.settings.won_stage.values() or final == "WON":
            return "S"
        if stage in self.settings.lost_stage.values() or final in ("LOSE", "APOLOGY"):
            return "F"
        return "P"

    handlers = {CreateTask: _create_task, UpdateDeal: _update, AddComment: _add_comment, CloseDeal: _close}


class _NoPlan(Exception):
    """A command with no batched form: it is carried out on its own."""


@dataclass(frozen=True)
class _WritePlan:
    """One write as a REST call: the method, its parameters, and how its answer reads."""

    method: str
    params: dict[str, Any]
    result: Callable[[Any], WriteResult]

    @property
    def idempotent(self) -> bool:
        """Whether sending it twice changes nothing (setting a deal's fields)."""
        return self.method == "crm.deal.update"


def _marked(rows: Iterable[Any], marker: str) -> WriteResult | None:
    """The task or comment among ``rows`` that carries ``marker``, as a reconciled result."""
    for row in rows:
        if not isinstance(row, dict):
            continue
        text = row.get("description") or row.get("DESCRIPTION") or row.get("COMMENT") or ""
        if marker in str(text):
            return WriteResult(remote_id=str(row.get("id") or row.get("ID")), reconciled=True)
    return None
