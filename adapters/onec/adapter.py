"""The 1C:Enterprise adapter: a document source (invoices, payments, customer orders) for the
deals of another CRM, and a command sink for counterparties and customer orders.

1C keeps no deals and sends no webhooks: it has only these two capabilities. A poll reads the
documents through the methods below (``adapters.onec.documents``) and files them as events of
the CRM named by ``deal_crm``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from adapters.contracts import (
    CommandSink,
    CrmAdapter,
    CrmInventory,
    DealLookup,
    DealSource,
    DocumentFiling,
    DocumentSource,
    Inspectable,
    WriteResult,
)
from adapters.onec import documents
from adapters.onec.client import OneCClient
from adapters.onec.linking import Linker
from adapters.onec.mapping import (
    DOCUMENT_KEYS,
    Counterparty,
    Document,
    EntityMap,
    build_entities,
    counterparty_from_odata,
    document_from_odata,
    is_composite,
    is_empty_ref,
)
from adapters.onec.odata import (
    TypedRef,
    datetime_literal,
    format_literal,
    guid_literal,
    is_guid,
    string_literal,
)
from adapters.onec.settings import OneCSettings
from adapters.values import to_decimal
from domain import Command, CreateCounterparty, CreateOrder
from domain.errors import FatalError, NotFoundError


class OneCAdapter(CrmAdapter[OneCSettings], DocumentSource, CommandSink, Inspectable):
    """One 1C base published through the standard OData interface."""

    type = "onec"

    def __init__(self, name: str, settings: OneCSettings, client: OneCClient | None = None) -> None:
        super().__init__(name, settings)
        self.client = client or OneCClient(
            settings.base_url,
            settings.username,
            settings.password,
            crm=name,
            timeout=settings.timeout,
            max_attempts=settings.max_attempts,
            backoff_initial=settings.backoff_initial,
        )
        self.entities: dict[str, EntityMap] = build_entities(settings.profile, settings.entities)
        self.tz = ZoneInfo(settings.timezone)
        self.deal_crm = settings.deal_crm
        self.page_size = settings.page_size
        self.currency = settings.currency
        self.currencies = {str(k).lower(): str(v) for k, v in settings.currencies.items()}
        self.shipment_statuses = frozenset(settings.shipment_statuses)
        self.contact_kinds = settings.contact_kinds
        self._cache: dict[tuple[str, str], Any] = {}

    def poll_documents(self, filing: DocumentFiling, deals: DealSource) -> int:
        # A strategy that searches deals by a field is configured only for a CRM that can (cross_check).
        return documents.poll(self, filing, Linker(self.settings.link, cast(DealLookup, deals)))

    def inspect(self) -> CrmInventory:
        """Log in and read ``$metadata``: every entity set the profile uses must be published
        (Configurator → Administration → Publish OData, the set ticked)."""
        published = set(entity_sets(self.client.metadata()))
        used = {emap.key: emap.set for emap in self.entities.values()}
        # A set not published is the setting that names it (below): one message, at that key.
        return CrmInventory(
            account=f"{self.settings.username} at {self.client.base}",
            permissions=tuple(sorted(s for s in used.values() if s in published)),
            settings_problems={
                f"entities.{key}": f"entity set {entity!r} is not published in the base's OData ($metadata)"
                for key, entity in sorted(used.items())
                if entity not in published
            },
            webhook_setup="",  # 1C is polled: nothing to set up on its side
        )

    def interrupt(self) -> None:
        self.client.interrupt()

    def close(self) -> None:
        self.client.close()

    # --- time: 1C dates are the base's naive wall time --------------------------------------------

    def to_local(self, moment: datetime) -> datetime:
        """An aware moment as the base's naive wall time (what ``datetime'…'`` literals mean)."""
        return moment.astimezone(self.tz).replace(tzinfo=None, microsecond=0)

    def to_utc(self, wall: datetime) -> datetime:
        """A 1C date (naive wall time) as an aware UTC moment."""
        return wall.replace(tzinfo=self.tz).astimezone(UTC)

    # --- reads for the document poller -------------------------------------------------------------

    def document_entities(self) -> list[EntityMap]:
        """The document sets to poll, invoices first (payments refer to them)."""
        return [self.entities[k] for k in DOCUMENT_KEYS if k in self.entities]

    def begin_run(self) -> None:
        """Forget cached counterparties and invoices: a poll run reads them fresh once."""
        self._cache.clear()

    def documents_page(
        self, emap: EntityMap, since: datetime, *, skip: int = 0, top: int | None = None
    ) -> list[Document]:
        """Documents dated at or after ``since`` (wall time), by ``Date, Ref_Key``, one page.

        The poller pages by date and uses ``$skip`` only within the documents sharing the last
        date it saw, so a document inserted or deleted meanwhile cannot shift a page over another.
        """
        rows = self.client.collection(
            emap.set,
            filter=f"Date ge {datetime_literal(since)}",
            select=emap.select(),
            orderby="Date,Ref_Key",
            top=top or self.page_size,
            skip=skip,
        )
        return [document_from_odata(emap, row) for row in rows]

    def get_document(self, entity: str, ref: str) -> Document | None:
        """One document by ``Ref_Key`` (cached for the run), None if it does not exist."""
        emap = self.entities.get(entity)
        if emap is None or is_empty_ref(ref):
            return None
        key = (f"doc:{entity}", ref.lower())
        if key not in self._cache:
            try:
                raw = self.client.get(f"{emap.set}({guid_literal(ref)})", {"$select": ",".join(emap.select())})
            except NotFoundError:
                raw = None
            self._cache[key] = document_from_odata(emap, raw) if raw else None
        return self._cache[key]  # type: ignore[no-any-return]

    def counterparty(self, ref: str) -> Counterparty | None:
        """A counterparty's name and tax ids (cached for the run)."""
        if is_empty_ref(ref):
            return None
        emap = self.entities["counterparty"]
        key = ("party", ref.lower())
        if key not in self._cache:
            select = ",".join(n for n in ("Ref_Key", emap.name, emap.full_name, emap.inn, emap.kpp) if n)
            try:
                raw = self.client.get(f"{emap.set}({guid_literal(ref)})", {"$select": select})
            except NotFoundError:
                raw = None
            self._cache[key] = counterparty_from_odata(emap, raw) if raw else None
        return self._cache[key]  # type: ignore[no-any-return]

    def payments_for_invoice(self, invoice_ref: str) -> list[tuple[Document, float]]:
        """Every payment document with a settlement row for this invoice, and that row's sum.

        Read through the tabular-section sets (``Document_X_РасшифровкаПлатежа``): 1C filters
        those by the row's attribute without lambda operators, which not every release has.
        """
        invoice = self.entities.get("invoice")
        if invoice is None or is_empty_ref(invoice_ref):
            return []
        found: list[tuple[Document, float]] = []
        for emap in self.document_entities():
            if emap.document != "payment" or not emap.rows or not emap.row_invoice:
                continue
            literal = (
                format_literal(TypedRef(invoice_ref.lower(), invoice.set))
                if is_composite(emap.row_invoice)
                else guid_literal(invoice_ref)
            )
            sums: dict[str, float] = {}
            try:
                for row in self.client.iterate(
                    f"{emap.set}_{emap.rows}",
                    filter=f"{emap.row_invoice} eq {literal}",
                    select=["Ref_Key", "LineNumber", emap.row_amount],
                    orderby="Ref_Key,LineNumber",
                    page_size=self.page_size,
                ):
                    parent = str(row.get("Ref_Key") or "").lower()
                    sums[parent] = sums.get(parent, 0.0) + float(row.get(emap.row_amount) or 0)
            except NotFoundError:  # this payment set is not published in the base: it holds no payments
                continue
            for parent, amount in sums.items():
                doc = self.get_document(emap.key, parent)
                if doc is not None:
                    found.append((doc, round(amount, 2)))
        return found

    def order_paid(self, order_ref: str) -> bool | None:
        """Whether Trade Management's order state register says the order is paid in full."""
        emap = self.entities.get("order_state")
        order = self.entities.get("order")
        if emap is None or order is None or is_empty_ref(order_ref):
            return None
        literal = (
            format_literal(TypedRef(order_ref.lower(), order.set))
            if is_composite(emap.order_key)
            else guid_literal(order_ref)
        )
        try:
            rows = self.client.collection(emap.set, filter=f"{emap.order_key} eq {literal}", top=1)
        except NotFoundError:  # the register is not published in this base
            return None
        if not rows:
            return False
        return float(rows[0].get(emap.paid_percent) or 0) >= 100

    def currency_code(self, doc: Document) -> str:
        """ISO code of the document's currency (the base currency when empty or unknown)."""
        if is_empty_ref(doc.currency_ref):
            return self.currency
        return self.currencies.get(doc.currency_ref.lower(), self.currency)

    # --- writes ---------------------------------------------------------------------------------

    def _create_counterparty(self, command: CreateCounterparty, marker: str) -> WriteResult:
        created = self.client.create(self.entities["counterparty"].set, self._counterparty_body(command, marker))
        return WriteResult(remote_id=str(created.get("Ref_Key") or "") or None)

    def _create_order(self, command: CreateOrder, marker: str) -> WriteResult:
        """A customer order from the deal's data, not posted: the order's goods and its agreement
        are 1C's own work (the CRM's card carries the client, the sum, the date and the details)."""
        emap = self.entities.get("order")
        if emap is None:
            raise FatalError(
                f"profile {self.settings.profile!r} has no customer order: set entities.order", crm=self.name
            )
        method = f"POST {emap.set}"
        amount = to_decimal(command.amount.replace("\xa0", "").replace(" ", "").replace(",", "."))
        if amount is None:
            raise FatalError(f"order sum {command.amount!r} is not a number", crm=self.name, method=method)
        party = self._client_of(command)
        if party is None:
            raise FatalError(
                f"no counterparty {command.inn or command.counterparty!r} in 1C to order for: create it first "
                "(create_counterparty), then replay",
                crm=self.name,
                method=method,
            )
        notes = [command.comment.strip()] if command.comment.strip() else []
        notes.append(f"[{marker}]")  # lets a retried write find this order
        body: dict[str, Any] = {
            emap.counterparty: party["Ref_Key"],
            emap.amount: float(amount),
            emap.comment: "\n".join(notes),
        }
        partner = self.entities["counterparty"].partner
        if partner and not is_empty_ref(party.get(partner)):
            body[emap.partner] = party[partner]
        if command.ship_by:
            try:
                moment = datetime.fromisoformat(command.ship_by)
                wall = self.to_local(moment) if moment.tzinfo else moment  # a bare date is the base's own
            except ValueError as exc:
                raise FatalError(f"ship_by {command.ship_by!r} is not a date", crm=self.name, method=method) from exc
            body[emap.ship_by] = wall.replace(hour=0, minute=0, second=0).isoformat()
        created = self.client.create(emap.set, body)
        return WriteResult(remote_id=str(created.get("Ref_Key") or "") or None)

    def _client_of(self, command: CreateOrder) -> dict[str, Any] | None:
        """The live counterparty with the order's INN, else the one of its name."""
        emap = self.entities["counterparty"]
        select = ["Ref_Key", *([emap.partner] if emap.partner else [])]
        for field_name, value in ((emap.inn, command.inn), (emap.name, command.counterparty)):
            if not value.strip():
                continue
            flt = f"{field_name} eq {string_literal(value.strip())} and DeletionMark eq false"
            found = self.client.collection(emap.set, filter=flt, select=select, top=1)
            if found:
                return dict(found[0])
        return None

    def find_written(self, command: Command, marker: str) -> WriteResult | None:
        """An earlier try's counterparty or order by the marker in its comment; for a counterparty,
        else one with the same INN/KPP (a person may have typed it meanwhile: adding a twin would be
        worse than reusing it)."""
        if isinstance(command, CreateOrder):
            order = self.entities.get("order")
            if order is None:
                return None
            flt = f"substringof({string_literal(marker)}, {order.comment})"
            mine = self.client.collection(order.set, filter=flt, select=["Ref_Key"], top=1)
            return WriteResult(remote_id=str(mine[0]["Ref_Key"]), reconciled=True) if mine else None
        if not isinstance(command, CreateCounterparty):
            return None
        emap = self.entities["counterparty"]
        mine = self.client.collection(
            emap.set, filter=f"substringof({string_literal(marker)}, {emap.comment})", select=["Ref_Key"], top=1
        )
        if mine:
            return WriteResult(remote_id=str(mine[0]["Ref_Key"]), reconciled=True)
        if command.inn:
            flt = f"{emap.inn} eq {string_literal(command.inn)} and DeletionMark eq false"
            if command.kpp:
                flt += f" and {emap.kpp} eq {string_literal(command.kpp)}"
            same = self.client.collection(emap.set, filter=flt, select=["Ref_Key"], top=1)
            if same:
                return WriteResult(remote_id=str(same[0]["Ref_Key"]), reconciled=True)
        return None

    def _counterparty_body(self, command: CreateCounterparty, marker: str) -> dict[str, Any]:
        emap = self.entities["counterparty"]
        if not command.name.strip():
            raise FatalError("a counterparty needs a name", crm=self.name, method=f"POST {emap.set}")
        notes = [command.comment.strip()] if command.comment.strip() else []
        body: dict[str, Any] = {
            emap.name: command.name.strip()[:100],
            emap.full_name: (command.full_name or command.name).strip(),
        }
        if command.inn:
            body[emap.inn] = command.inn.strip()
        if command.kpp:
            body[emap.kpp] = command.kpp.strip()
        rows: list[dict[str, str]] = []
        for kind, value, contact_type in (
            ("phone", command.phone, "Телефон"),
            ("email", command.email, "АдресЭлектроннойПочты"),
        ):
            if not value:
                continue
            if is_guid(self.contact_kinds.get(kind, "")):
                rows.append(
                    {
                        "LineNumber": str(len(rows) + 1),
                        "Тип": contact_type,
                        "Вид_Key": self.contact_kinds[kind],
                        "Представление": value,
                    }
                )
            else:  # the base's contact kinds are not configured: keep the value readable in the comment
                notes.append(f"{'Телефон' if kind == 'phone' else 'E-mail'}: {value}")
        if rows:
            body["КонтактнаяИнформация"] = rows
        notes.append(f"[{marker}]")  # lets a retried write find this counterparty
        body[emap.comment] = "\n".join(notes)
        return body

    handlers = {CreateCounterparty: _create_counterparty, CreateOrder: _create_order}


def entity_sets(edmx: str) -> list[str]:
    """The ``EntitySet`` names of an EDMX document."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(edmx.encode("utf-8"))
    except ET.ParseError as exc:
        raise FatalError(f"$metadata is not XML: {exc}", method="GET $metadata") from exc
    return [str(e.get("Name")) for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "EntitySet" and e.get("Name")]
