"""Where a 1C base keeps what the connector reads: entity sets and field names per profile, and
the conversion of OData entities into plain ``Document`` values.

Names differ between configurations (see /work/shared/api-notes/onec.md): Trade Management 11
calls a customer invoice ``Document_СчетНаОплатуКлиенту``, Accounting 3.0
``Document_СчетНаОплатуПокупателю``. A profile gives the defaults; ``entities:`` in the config
overrides any of them for a customised base (always confirm against the base's ``$metadata``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.onec.odata import EMPTY_GUID, is_guid, parse_datetime

ENTITY_KEYS = ("invoice", "payment", "cash", "order", "counterparty", "order_state")
DOCUMENT_KEYS = ("invoice", "payment", "cash", "order")  # read in this order: payments need invoices


@dataclass(frozen=True)
class EntityMap:
    """One entity set and the names of the fields the connector reads from it.

    A field ending in ``_Key`` is a reference (a bare guid); any other reference field is
    composite (a value plus ``<field>_Type``), which matters for ``$filter`` literals.
    """

    key: str
    set: str
    document: str = ""  # invoice | payment | order; "" for the catalog and the register
    counterparty: str = "Контрагент_Key"
    amount: str = "СуммаДокумента"
    currency: str = "Валюта_Key"
    comment: str = "Комментарий"
    texts: tuple[str, ...] = ()  # more free text searched for a deal id (НазначениеПлатежа)
    status: str = ""  # orders
    annulled: str = ""  # invoices: Аннулирован
    basis: str = ""  # invoices: ДокументОснование (the order)
    rows: str = ""  # payments: the settlement section
    row_invoice: str = ""  # the invoice paid: ОснованиеПлатежа (composite) or СчетНаОплату_Key
    row_amount: str = ""
    row_order: str = ""
    name: str = "Description"  # counterparty catalog
    full_name: str = "НаименованиеПолное"
    inn: str = "ИНН"
    kpp: str = "КПП"
    partner: str = "Партнер_Key"  # Trade Management: the counterparty's partner, which an order names too
    ship_by: str = "ЖелаемаяДатаОтгрузки"  # orders: the desired shipment date
    order_key: str = "Заказ"  # order state register: the dimension holding the order
    paid_percent: str = "ПроцентОплаты"

    def select(self) -> list[str]:
        """``$select`` for a document read: only what the connector uses."""
        names = ["Ref_Key", "DataVersion", "DeletionMark", "Number", "Date", "Posted", self.amount]
        for name in (
            self.counterparty,
            self.currency,
            self.comment,
            self.status,
            self.annulled,
            self.basis,
            self.rows,
            *self.texts,
        ):
            if name:
                names.append(name)
        for name in (self.counterparty, self.basis):
            if name and is_composite(name):
                names.append(f"{name}_Type")
        return list(dict.fromkeys(names))


_TRADE_ROWS = {
    "rows": "РасшифровкаПлатежа",
    "row_invoice": "ОснованиеПлатежа",
    "row_amount": "Сумма",
    "row_order": "Заказ",
}
PROFILES: dict[str, dict[str, EntityMap | None]] = {
    "trade_11": {
        "invoice": EntityMap(
            "invoice", "Document_СчетНаОплатуКлиенту", "invoice", annulled="Аннулирован", basis="ДокументОснование"
        ),
        "payment": EntityMap(
            "payment",
            "Document_ПоступлениеБезналичныхДенежныхСредств",
            "payment",
            texts=("НазначениеПлатежа",),
            **_TRADE_ROWS,
        ),
        "cash": EntityMap("cash", "Document_ПриходныйКассовыйОрдер", "payment", texts=("Основание",), **_TRADE_ROWS),
        "order": EntityMap("order", "Document_ЗаказКлиента", "order", status="Статус"),
        "counterparty": EntityMap("counterparty", "Catalog_Контрагенты"),
        "order_state": EntityMap("order_state", "InformationRegister_СостоянияЗаказовКлиентов"),
    },
    "accounting_3": {
        "invoice": EntityMap("invoice", "Document_СчетНаОплатуПокупателю", "invoice", currency="ВалютаДокумента_Key"),
        # In Accounting the bank receipt's counterparty is composite and its rows point at the invoice.
        "payment": EntityMap(
            "payment",
            "Document_ПоступлениеНаРасчетныйСчет",
            "payment",
            counterparty="Контрагент",
            currency="ВалютаДокумента_Key",
            texts=("НазначениеПлатежа",),
            rows="РасшифровкаПлатежа",
            row_invoice="СчетНаОплату_Key",
            row_amount="СуммаПлатежа",
        ),
        "cash": None,  # Accounting's ПКО has its own shape: enable it under entities: when needed
        "order": None,  # Accounting 3.0 has no customer order
        "counterparty": EntityMap("counterparty", "Catalog_Контрагенты"),
        "order_state": None,
    },
}


def build_entities(profile: str, overrides: Mapping[str, Any]) -> dict[str, EntityMap]:
    """The profile's entity maps with ``overrides`` applied; ValueError names what is wrong."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    known = {f.name for f in dataclasses.fields(EntityMap)} - {"key"}
    out: dict[str, EntityMap] = {}
    for key in ENTITY_KEYS:
        base = PROFILES[profile].get(key)
        if key in overrides:
            change = overrides[key]
            if change is None:
                continue  # switched off
            if not isinstance(change, Mapping):
                raise ValueError(f"{key}: a mapping of field overrides, or null to switch it off")
            unknown = set(change) - known
            if unknown:
                raise ValueError(f"{key}: unknown keys {', '.join(sorted(unknown))}")
            values: dict[str, Any] = {k: tuple(v) if k == "texts" else str(v or "") for k, v in change.items()}
            if base is None:
                if not values.get("set"):
                    raise ValueError(f"{key}: not in profile {profile}: give at least set:")
                document = {"payment": "payment", "cash": "payment"}.get(key, key if key in DOCUMENT_KEYS else "")
                base = EntityMap(key, str(values.pop("set")), document)
            base = dataclasses.replace(base, **values)
        if base is not None:
            out[key] = base
    if "counterparty" not in out:
        raise ValueError("counterparty: the catalog cannot be switched off")
    return out


def is_composite(field_name: str) -> bool:
    """A reference attribute without ``_Key`` is composite (value + ``_Type``)."""
    return bool(field_name) and not field_name.endswith("_Key")


def is_empty_ref(value: Any) -> bool:
    return not value or value == EMPTY_GUID or not is_guid(str(value))


@dataclass(frozen=True)
class Document:
    """A document as the poller needs it; dates are the base's naive wall time."""

    entity: str
    document: str
    ref: str
    version: str
    number: str
    date: datetime
    posted: bool
    deleted: bool
    amount: float
    currency_ref: str = ""
    counterparty_ref: str = ""
    comment: str = ""
    texts: tuple[str, ...] = ()
    status: str = ""
    annulled: bool = False
    basis_ref: str = ""
    invoices: tuple[tuple[str, float], ...] = ()  # payments: (invoice Ref_Key, amount of that row)
    orders: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def counts(self) -> bool:
        """Only posted, live documents count (a draft or a deletion mark is nothing yet)."""
        return self.posted and not self.deleted and not self.annulled


def _number(value: Any) -> float:
    try:
        return round(float(value or 0), 2)
    except (TypeError, ValueError):
        return 0.0


def document_from_odata(emap: EntityMap, raw: Mapping[str, Any]) -> Document:
    """Convert one OData entity of ``emap``'s set into a ``Document``."""
    date = parse_datetime(str(raw.get("Date") or "")) or datetime(1, 1, 1)
    texts = tuple(str(raw.get(t) or "") for t in emap.texts if raw.get(t))
    invoices: list[tuple[str, float]] = []
    orders: list[str] = []
    if emap.rows:
        for row in raw.get(emap.rows) or []:
            inv = row.get(emap.row_invoice) if emap.row_invoice else None
            if inv and not is_empty_ref(inv):
                invoices.append((str(inv).lower(), _number(row.get(emap.row_amount))))
            order = row.get(emap.row_order) if emap.row_order else None
            if order and not is_empty_ref(order):
                orders.append(str(order).lower())
    basis = str(raw.get(emap.basis) or "") if emap.basis else ""
    counterparty = str(raw.get(emap.counterparty) or "") if emap.counterparty else ""
    return Document(
        entity=emap.key,
        document=emap.document,
        ref=str(raw.get("Ref_Key") or "").lower(),
        version=str(raw.get("DataVersion") or ""),
        number=str(raw.get("Number") or "").strip(),
        date=date,
        posted=bool(raw.get("Posted")),
        deleted=bool(raw.get("DeletionMark")),
        amount=_number(raw.get(emap.amount)),
        currency_ref=str(raw.get(emap.currency) or "") if emap.currency else "",
        counterparty_ref="" if is_empty_ref(counterparty) else counterparty.lower(),
        comment=str(raw.get(emap.comment) or "") if emap.comment else "",
        texts=texts,
        status=str(raw.get(emap.status) or "") if emap.status else "",
        annulled=bool(raw.get(emap.annulled)) if emap.annulled else False,
        basis_ref="" if is_empty_ref(basis) else basis.lower(),
        invoices=tuple(invoices),
        orders=tuple(dict.fromkeys(orders)),
        raw=dict(raw),
    )


@dataclass(frozen=True)
class Counterparty:
    """The counterparty fields events carry."""

    ref: str
    name: str = ""
    full_name: str = ""
    inn: str = ""
    kpp: str = ""


def counterparty_from_odata(emap: EntityMap, raw: Mapping[str, Any]) -> Counterparty:
    return Counterparty(
        ref=str(raw.get("Ref_Key") or "").lower(),
        name=str(raw.get(emap.name) or "").strip(),
        full_name=str(raw.get(emap.full_name) or "").strip(),
        inn=str(raw.get(emap.inn) or "").strip(),
        kpp=str(raw.get(emap.kpp) or "").strip(),
    )
