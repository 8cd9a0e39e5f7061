"""A simulator of 1C:Enterprise's standard OData interface (OData 3.0), for tests and the demo.

It behaves like ``http://HOST/BASE/odata/standard.odata/`` of a Trade Management 11 or Accounting
3.0 base (see ``/work/shared/api-notes/onec.md``): entity sets ``Catalog_X``/``Document_X``/
``InformationRegister_X``, tabular sections as ``Document_X_Section`` sets, ``Ref_Key`` guids,
``DataVersion`` changing on every write, ``If-Match`` optimistic locking (412), the ``Post``/
``Unpost`` actions, the ``odata.error`` envelope, HTTP Basic with UTF-8 credentials, and the
quirk that a ``+`` in the query string is a plus, never a space.

Answers are JSON with ``$format=json`` (or ``Accept: application/json``) and Atom/XML otherwise;
``$metadata`` is always EDMX. There is no change feed, exactly as in 1C: pollers must compare
``DataVersion`` per ``Ref_Key``.

Run it on its own with ``python -m simulators.onec --port 8083 [--demo]``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import copy
import hmac
import json
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote_to_bytes
from xml.sax.saxutils import escape, quoteattr

from flask import Flask, Response, request

from simulators import FaultKnobs
from simulators.base import ApiSimulator, Call, ErrorAnswer, ForeignAnswer
from simulators.onec.odata_filter import (
    BOOL,
    COMPOSITE,
    DATETIME,
    DATETIME_FORMAT,
    EMPTY_DATE,
    EMPTY_GUID,
    ENUM,
    GUID,
    INT64,
    NUMBER,
    STRING,
    TYPE_NAME,
    FilterError,
    Guid,
    Nav,
    compile_filter,
    guid_literal,
    is_guid,
    parse_datetime,
    parse_key,
    sort_key,
    string_literal,
)

log = logging.getLogger(__name__)

NAMESPACE = "StandardODATA"
UNDEFINED_TYPE = f"{NAMESPACE}.Undefined"
DEFAULT_USERS = {"Интеграция": "secret"}
DEFAULT_ENTITY_SETS = (
    "Catalog_Контрагенты",
    "Document_СчетНаОплатуКлиенту",
    "Document_ПоступлениеБезналичныхДенежныхСредств",
    "Document_ПриходныйКассовыйОрдер",
    "Document_ЗаказКлиента",
    "Document_СчетНаОплатуПокупателю",
    "Document_ПоступлениеНаРасчетныйСчет",
    "InformationRegister_СостоянияЗаказовКлиентов",
)

# 1C's internal error codes (the "code" of odata.error). Only "-1" (internal error), "9" (no such
# object) and "13" (operation not supported) are seen in public traces; the others are the
# simulator's best guess. Clients should branch on the HTTP status, as the adapter does.
E_INTERNAL = "-1"
E_UNSUPPORTED_OPTION = "0"
E_AUTH = "0"
E_BAD_URL = "2"
E_BAD_OPTION = "3"
E_BAD_METHOD = "4"
E_BAD_BODY = "5"
E_NO_OPERATION = "6"
E_NO_SET = "8"
E_NO_OBJECT = "9"
E_NOT_SUPPORTED = "13"
E_FILTER = "14"
E_BAD_VALUE = "15"
E_VERSION = "19"
_ROWS_DIRECTLY = "{} строк табличной части напрямую не поддерживается"
INTERNAL_MESSAGE = (
    "Произошла внутренняя ошибка OData сервиса. Дополнительные сведения можно найти в технологическом журнале."
)

_EDM = {
    GUID: "Edm.Guid",
    DATETIME: "Edm.DateTime",
    STRING: "Edm.String",
    ENUM: "Edm.String",
    TYPE_NAME: "Edm.String",
    COMPOSITE: "Edm.String",
    NUMBER: "Edm.Double",
    BOOL: "Edm.Boolean",
    INT64: "Edm.Int64",
}
_EMPTY = {
    GUID: EMPTY_GUID,
    DATETIME: EMPTY_DATE,
    STRING: "",
    ENUM: "",
    TYPE_NAME: UNDEFINED_TYPE,
    COMPOSITE: "",
    NUMBER: 0,
    BOOL: False,
    INT64: "0",
}
_XML_NS = (
    'xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" '
    'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"'
)

# Reference attributes ``X_Key`` -> the set a ``$expand``/``X/Field`` navigation leads to.
REFERENCE_TARGETS = {
    "Контрагент": "Catalog_Контрагенты",
    "Партнер": "Catalog_Партнеры",
    "Организация": "Catalog_Организации",
    "Валюта": "Catalog_Валюты",
    "ВалютаДокумента": "Catalog_Валюты",
    "ВалютаВзаиморасчетов": "Catalog_Валюты",
    "Договор": "Catalog_ДоговорыКонтрагентов",
    "ДоговорКонтрагента": "Catalog_ДоговорыКонтрагентов",
    "Соглашение": "Catalog_СоглашенияСКлиентами",
    "Номенклатура": "Catalog_Номенклатура",
    "СчетНаОплату": "Document_СчетНаОплатуПокупателю",
}
# The type a composite attribute gets when a 1C user fills it with a bare guid via insert().
COMPOSITE_DEFAULT_TYPES = {
    "ОснованиеПлатежа": "Document_СчетНаОплатуКлиенту",
    "Заказ": "Document_ЗаказКлиента",
    "Сделка": "Document_СчетНаОплатуПокупателю",
    "Контрагент": "Catalog_Контрагенты",
}


@dataclass(frozen=True)
class SetSpec:
    """The shape of one published object: its kind, attributes, tabular sections and key."""

    name: str
    kind: str  # Catalog | Document | InformationRegister
    fields: dict[str, str]  # attribute -> type, in answer order; a COMPOSITE X also has X_Type
    tabular: dict[str, dict[str, str]] = field(default_factory=dict)  # section -> row attributes
    dimensions: tuple[str, ...] = ()  # registers: the record key (without the _Type companions)
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def keyed_by_ref(self) -> bool:
        return self.kind in ("Catalog", "Document")


_CATALOG_HEAD = {
    "Ref_Key": GUID,
    "DataVersion": STRING,
    "DeletionMark": BOOL,
    "Parent_Key": GUID,
    "IsFolder": BOOL,
    "Code": STRING,
    "Description": STRING,
}
_CATALOG_TAIL = {"Predefined": BOOL, "PredefinedDataName": STRING}
_DOCUMENT_HEAD = {
    "Ref_Key": GUID,
    "DataVersion": STRING,
    "DeletionMark": BOOL,
    "Number": STRING,
    "Date": DATETIME,
    "Posted": BOOL,
}
_SETTLEMENT_ROW = {
    "Партнер_Key": GUID,
    "ОснованиеПлатежа": COMPOSITE,
    "Заказ": COMPOSITE,
    "Сумма": NUMBER,
    "СуммаВзаиморасчетов": NUMBER,
    "ВалютаВзаиморасчетов_Key": GUID,
    "СтатьяДвиженияДенежныхСредств_Key": GUID,
}


def _doc(
    name: str, attrs: dict[str, str], tabular: dict[str, dict[str, str]] | None = None, **defaults: Any
) -> SetSpec:
    return SetSpec(name, "Document", {**_DOCUMENT_HEAD, **attrs}, tabular or {}, (), defaults)


SPECS: dict[str, SetSpec] = {
    spec.name: spec
    for spec in (
        SetSpec(
            "Catalog_Контрагенты",
            "Catalog",
            {
                **_CATALOG_HEAD,
                "НаименованиеПолное": STRING,
                "ИНН": STRING,
                "КПП": STRING,
                "ЮрФизЛицо": ENUM,
                "Партнер_Key": GUID,
                "Комментарий": STRING,
                **_CATALOG_TAIL,
            },
            defaults={"ЮрФизЛицо": "ЮрЛицо"},
        ),
        # Trade Management 11
        _doc(
            "Document_СчетНаОплатуКлиенту",
            {
                "Организация_Key": GUID,
                "Партнер_Key": GUID,
                "Контрагент_Key": GUID,
                "Договор_Key": GUID,
                "Соглашение_Key": GUID,
                "Валюта_Key": GUID,
                "СуммаДокумента": NUMBER,
                "ДокументОснование": COMPOSITE,
                "Аннулирован": BOOL,
                "Ответственный_Key": GUID,
                "Комментарий": STRING,
            },
            {"ЭтапыГрафикаОплаты": {"ДатаПлатежа": DATETIME, "ПроцентПлатежа": NUMBER, "СуммаПлатежа": NUMBER}},
        ),
        _doc(
            "Document_ПоступлениеБезналичныхДенежныхСредств",
            {
                "Организация_Key": GUID,
                "ХозяйственнаяОперация": ENUM,
                "Контрагент_Key": GUID,
                "БанковскийСчет_Key": GUID,
                "Валюта_Key": GUID,
                "СуммаДокумента": NUMBER,
                "НомерВходящегоДокумента": STRING,
                "ДатаВходящегоДокумента": DATETIME,
                "НазначениеПлатежа": STRING,
                "Ответственный_Key": GUID,
                "Комментарий": STRING,
            },
            {"РасшифровкаПлатежа": _SETTLEMENT_ROW},
            ХозяйственнаяОперация="ПоступлениеОплатыОтКлиента",
        ),
        _doc(
            "Document_ПриходныйКассовыйОрдер",
            {
                "Организация_Key": GUID,
                "Касса_Key": GUID,
                "ХозяйственнаяОперация": ENUM,
                "Контрагент_Key": GUID,
                "Валюта_Key": GUID,
                "СуммаДокумента": NUMBER,
                "ПринятоОт": STRING,
                "Основание": STRING,
                "Ответственный_Key": GUID,
                "Комментарий": STRING,
            },
            {"РасшифровкаПлатежа": _SETTLEMENT_ROW},
            ХозяйственнаяОперация="ПоступлениеОплатыОтКлиента",
        ),
        _doc(
            "Document_ЗаказКлиента",
            {
                "Организация_Key": GUID,
                "Партнер_Key": GUID,
                "Контрагент_Key": GUID,
                "Соглашение_Key": GUID,
                "Договор_Key": GUID,
                "Валюта_Key": GUID,
                "СуммаДокумента": NUMBER,
                "Статус": ENUM,
                "ХозяйственнаяОперация": ENUM,
                "ЖелаемаяДатаОтгрузки": DATETIME,
                "Склад_Key": GUID,
                "Менеджер_Key": GUID,
                "Комментарий": STRING,
            },
            {
                "Товары": {
                    "Номенклатура_Key": GUID,
                    "Характеристика_Key": GUID,
                    "Количество": NUMBER,
                    "Цена": NUMBER,
                    "Сумма": NUMBER,
                    "СтавкаНДС_Key": GUID,
                    "СуммаНДС": NUMBER,
                    "СуммаСНДС": NUMBER,
                    "Отменено": BOOL,
                }
            },
            Статус="НеСогласован",
            ХозяйственнаяОперация="РеализацияКлиенту",
        ),
        SetSpec(
            "InformationRegister_СостоянияЗаказовКлиентов",
            "InformationRegister",
            {
                "Заказ": COMPOSITE,
                "Состояние": ENUM,
                "ДатаСобытия": DATETIME,
                "СуммаОплаты": NUMBER,
                "ПроцентОплаты": NUMBER,
                "СуммаОтгрузки": NUMBER,
                "ПроцентОтгрузки": NUMBER,
                "СуммаДолга": NUMBER,
                "ПроцентДолга": NUMBER,
            },
            dimensions=("Заказ",),
        ),
        # Accounting 3.0
        _doc(
            "Document_СчетНаОплатуПокупателю",
            {
                "Организация_Key": GUID,
                "Контрагент_Key": GUID,
                "ДоговорКонтрагента_Key": GUID,
                "ВалютаДокумента_Key": GUID,
                "СуммаДокумента": NUMBER,
                "СуммаВключаетНДС": BOOL,
                "Ответственный_Key": GUID,
                "Комментарий": STRING,
            },
            {
                "Товары": {
                    "Номенклатура_Key": GUID,
                    "Содержание": STRING,
                    "Количество": NUMBER,
                    "Цена": NUMBER,
                    "Сумма": NUMBER,
                    "СтавкаНДС": ENUM,
                    "СуммаНДС": NUMBER,
                }
            },
            СуммаВключаетНДС=True,
        ),
        _doc(
            "Document_ПоступлениеНаРасчетныйСчет",
            {
                "Организация_Key": GUID,
                "ВидОперации": ENUM,
                "Контрагент": COMPOSITE,
                "ДоговорКонтрагента_Key": GUID,
                "СчетОрганизации_Key": GUID,
                "ВалютаДокумента_Key": GUID,
                "СуммаДокумента": NUMBER,
                "НомерВходящегоДокумента": STRING,
                "ДатаВходящегоДокумента": DATETIME,
                "НазначениеПлатежа": STRING,
                "ДокументОснование": COMPOSITE,
                "Ответственный_Key": GUID,
                "Комментарий": STRING,
            },
            {
                "РасшифровкаПлатежа": {
                    "ДоговорКонтрагента_Key": GUID,
                    "СуммаПлатежа": NUMBER,
                    "СуммаВзаиморасчетов": NUMBER,
                    "Сделка": COMPOSITE,
                    "СчетНаОплату_Key": GUID,
                    "СпособПогашенияЗадолженности": ENUM,
                    "СтатьяДвиженияДенежныхСредств_Key": GUID,
                }
            },
            ВидОперации="ОплатаПокупателя",
        ),
        SetSpec(
            "InformationRegister_СтатусыДокументов",
            "InformationRegister",
            {
                "Документ": COMPOSITE,
                "Организация_Key": GUID,
                "Статус": ENUM,
            },
            dimensions=("Документ",),
        ),
    )
}


def spec_for(name: str) -> SetSpec:
    """The spec of a known set, or a bare standard one for any other ``Catalog_``/``Document_`` name."""
    if name in SPECS:
        return SPECS[name]
    if name.startswith("Catalog_"):
        return SetSpec(name, "Catalog", {**_CATALOG_HEAD, **_CATALOG_TAIL})
    if name.startswith("Document_"):
        return SetSpec(name, "Document", dict(_DOCUMENT_HEAD))
    if name.startswith("InformationRegister_"):
        return SetSpec(name, "InformationRegister", {"Ключ": STRING}, dimensions=("Ключ",))
    raise ValueError(f"unsupported entity set {name!r} (Catalog_, Document_ or InformationRegister_)")


class ODataError(ErrorAnswer):
    """An error answer: HTTP status, 1C's error code and a Russian message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} [{code}] {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class _Target:
    """What a request path names."""

    set_name: str = ""
    spec: SetSpec | None = None
    tabular: str | None = None  # a Document_X_Section set: the section's name
    key: str | None = None  # storage key (Ref_Key, register key) or "ref|line" for tabular rows
    operation: str | None = None  # Post | Unpost | $count | a navigation property


@dataclass
class _Call(Call):
    """One request: the resource path, its query (read first: ``$format`` picks every envelope)."""

    resource: str
    as_json: bool = True
    options: dict[str, str] = field(default_factory=dict)  # the $-options
    params: dict[str, str] = field(default_factory=dict)  # the other query parameters
    malformed: ODataError | None = None  # a bad query, answered once the credentials are checked
    method: str = ""
    target: _Target = field(default_factory=_Target)


def _version_string(n: int) -> str:
    # Opaque like 1C's (base64 of an 8-byte counter); clients must only compare it for equality.
    return base64.b64encode(n.to_bytes(8, "big")).decode("ascii")


def _json_number(value: Any) -> int | float:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class OneCSimulator(ApiSimulator[_Call, Response]):
    """One simulated infobase published through the standard OData interface.

    ``data`` maps entity set -> key -> entity (JSON-ready dicts, as the interface answers them);
    the key is ``Ref_Key`` for catalogs and documents and the dimension value for registers.
    Everything goes through one lock, so tests may call ``insert``/``update`` while a client polls.
    Once served, ``base_url + base_path`` is the service root.
    """

    def __init__(
        self,
        *,
        base_path: str = "/trade/odata/standard.odata",
        users: dict[str, str] | None = None,
        entity_sets: Iterable[str] | None = None,
        faults: FaultKnobs | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(faults)
        self.base_path = "/" + base_path.strip("/")
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.clock: Callable[[], datetime] = clock or datetime.now
        self.specs: dict[str, SetSpec] = {}
        for name in entity_sets if entity_sets is not None else DEFAULT_ENTITY_SETS:
            self.specs[name] = spec_for(name)
        self.data: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.specs}
        self._extra: dict[str, dict[str, str]] = {name: {} for name in self.specs}  # ad-hoc attributes
        self._version = 0
        self._numbers: collections.Counter[str] = collections.Counter()
        self.app = self._build_app()

    # --- as a 1C user would ------------------------------------------------------------------

    @property
    def entity_sets(self) -> list[str]:
        """Every published set, tabular-section sets (``Document_X_Товары``) included."""
        names = []
        for name, spec in self.specs.items():
            names.append(name)
            names.extend(f"{name}_{section}" for section in spec.tabular)
        return names

    def insert(self, entity_set: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Create an object as a user in 1C would; returns it (a copy) as the interface shows it.

        Assigns ``Ref_Key`` (unless given), ``DataVersion``, ``Number``/``Code`` and ``Date``
        (the clock's wall time) when empty, fills every unset attribute with 1C's empty value,
        numbers tabular rows. Accepts ``datetime``/``date``/``UUID``/``Decimal`` values.
        Attributes the spec does not know are added to the set (as if the base had them).
        """
        with self._lock:
            spec = self._spec(entity_set)
            entity = self._new_entity(spec, self._user_values(spec, fields))
            key = self._storage_key(spec, entity)
            if key in self.data[entity_set]:
                raise ValueError(f"{entity_set}: key {key} exists")
            self.data[entity_set][key] = entity
            return copy.deepcopy(entity)

    def update(self, entity_set: str, ref_key: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Change an object as a user would (tabular sections are replaced whole); bumps DataVersion.

        Marking a posted document for deletion unposts it, as 1C does. KeyError if it is missing.
        """
        with self._lock:
            spec = self._spec(entity_set)
            entity = self.data[entity_set][self._norm_key(spec, ref_key)]
            self._apply(spec, entity, self._user_values(spec, fields))
            return copy.deepcopy(entity)

    def set_posted(self, entity_set: str, ref_key: str, posted: bool = True) -> dict[str, Any]:
        """Post or unpost a document from the UI; bumps DataVersion."""
        with self._lock:
            spec = self._spec(entity_set)
            entity = self.data[entity_set][self._norm_key(spec, ref_key)]
            self._post(spec, entity, posted)
            return copy.deepcopy(entity)

    def delete(self, entity_set: str, ref_key: str) -> None:
        """Delete an object outright (not a deletion mark). KeyError if it is missing."""
        with self._lock:
            spec = self._spec(entity_set)
            del self.data[entity_set][self._norm_key(spec, ref_key)]

    def get(self, entity_set: str, ref_key: str) -> dict[str, Any] | None:
        """A copy of one stored object, or None."""
        with self._lock:
            spec = self._spec(entity_set)
            found = self.data[entity_set].get(self._norm_key(spec, ref_key))
            return copy.deepcopy(found) if found is not None else None

    # --- object model --------------------------------------------------------------------------

    def _spec(self, entity_set: str) -> SetSpec:
        spec = self.specs.get(entity_set)
        if spec is None:
            raise KeyError(f"{entity_set} is not published")
        return spec

    def _fields(self, spec: SetSpec) -> dict[str, str]:
        return {**spec.fields, **self._extra[spec.name]}

    def _norm_key(self, spec: SetSpec, key: str) -> str:
        return str(key).lower() if is_guid(str(key)) else str(key)

    def _storage_key(self, spec: SetSpec, entity: Mapping[str, Any]) -> str:
        if spec.keyed_by_ref:
            return str(entity["Ref_Key"])
        return "|".join(self._norm_key(spec, str(entity.get(d, ""))) for d in spec.dimensions)

    def _next_version(self) -> str:
        self._version += 1
        return _version_string(self._version)

    def _now(self) -> str:
        now = self.clock()
        return now.replace(tzinfo=None, microsecond=0).strftime(DATETIME_FORMAT)

    def _user_values(self, spec: SetSpec, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Python values from insert()/update() in their wire form; unknown names join the set."""
        known = self._fields(spec)
        out: dict[str, Any] = {}
        for name, value in fields.items():
            if name in spec.tabular:
                rows = [self._plain_row(spec, name, row) for row in value or []]
                out[name] = rows
                continue
            if name not in known and not (name.endswith("_Type") and known.get(name[:-5]) == COMPOSITE):
                known[name] = self._extra[spec.name][name] = _infer_type(name, value)
            out[name] = _plain(value)
        for name, ftype in known.items():  # a composite filled with a bare guid gets its usual type
            if ftype == COMPOSITE and out.get(name) and f"{name}_Type" not in out:
                out[f"{name}_Type"] = _default_composite_type(name)
        return out

    def _plain_row(self, spec: SetSpec, section: str, row: Mapping[str, Any]) -> dict[str, Any]:
        plain = {k: _plain(v) for k, v in row.items()}
        for name, ftype in spec.tabular[section].items():
            if ftype == COMPOSITE and plain.get(name) and f"{name}_Type" not in plain:
                plain[f"{name}_Type"] = _default_composite_type(name)
        return plain

    def _new_entity(self, spec: SetSpec, values: Mapping[str, Any]) -> dict[str, Any]:
        fields = self._fields(spec)
        entity: dict[str, Any] = {}
        types: dict[str, Any] = {}
        for name, ftype in fields.items():
            default = spec.defaults.get(name, _EMPTY[ftype])
            entity[name] = values.get(name, default)
            if ftype == COMPOSITE:
                types[f"{name}_Type"] = values.get(f"{name}_Type", UNDEFINED_TYPE)
        if spec.keyed_by_ref:
            ref = str(values.get("Ref_Key") or uuid.uuid4()).lower()
            entity["Ref_Key"] = ref
            entity["DataVersion"] = self._next_version()
        if spec.kind == "Document":
            if not entity.get("Number"):
                self._numbers[spec.name] += 1
                entity["Number"] = f"0000-{self._numbers[spec.name]:06d}"
            if not entity.get("Date") or entity["Date"] == EMPTY_DATE:
                entity["Date"] = self._now()  # the platform dates an undated document on write
            entity["Posted"] = bool(values.get("Posted", False))
        if spec.kind == "Catalog" and not entity.get("Code"):
            self._numbers[spec.name] += 1
            entity["Code"] = f"{self._numbers[spec.name]:09d}"
        for section in spec.tabular:
            entity[section] = self._rows(spec, section, entity.get("Ref_Key", ""), values.get(section, []))
        entity.update(types)  # 1C lists the _Type companions after everything else
        return entity

    def _rows(self, spec: SetSpec, section: str, ref: str, rows: Iterable[Mapping[str, Any]]) -> list[dict]:
        out = []
        for i, row in enumerate(rows, start=1):
            line: dict[str, Any] = {"Ref_Key": ref, "LineNumber": str(row.get("LineNumber") or i)}
            types = {}
            for name, ftype in spec.tabular[section].items():
                line[name] = row.get(name, _EMPTY[ftype])
                if ftype == COMPOSITE:
                    types[f"{name}_Type"] = row.get(f"{name}_Type", UNDEFINED_TYPE)
            line.update(types)
            out.append(line)
        return out

    def _apply(self, spec: SetSpec, entity: dict[str, Any], values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            if name in ("Ref_Key", "DataVersion", "LineNumber"):
                continue
            if name in spec.tabular:
                entity[name] = self._rows(spec, name, entity.get("Ref_Key", ""), value)
            elif name == "Posted" and spec.kind == "Document":
                continue  # posting only happens through Post/Unpost
            else:
                entity[name] = value
        if spec.kind == "Document" and values.get("DeletionMark") is True:
            entity["Posted"] = False
        if spec.keyed_by_ref:
            entity["DataVersion"] = self._next_version()

    def _post(self, spec: SetSpec, entity: dict[str, Any], posted: bool) -> None:
        if posted and entity.get("DeletionMark"):
            raise ODataError(500, E_INTERNAL, "Проведение документа, помеченного на удаление, невозможно")
        entity["Posted"] = posted
        entity["DataVersion"] = self._next_version()

    def _field_map(self, spec: SetSpec, section: str | None = None) -> dict[str, Any]:
        """Field types for $filter/$select/$orderby (tabular rows nest, references navigate)."""
        if section is not None:
            return self._row_map(spec.tabular[section], with_parent=True)
        out: dict[str, Any] = {}
        for name, ftype in self._fields(spec).items():
            out[name] = ftype
            if ftype == COMPOSITE:
                out[f"{name}_Type"] = TYPE_NAME
        for name, rows in spec.tabular.items():
            out[name] = self._row_map(rows, with_parent=True)
        self._add_navs(out)
        return out

    def _row_map(self, rows: Mapping[str, str], with_parent: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"Ref_Key": GUID, "LineNumber": INT64} if with_parent else {}
        for name, ftype in rows.items():
            out[name] = ftype
            if ftype == COMPOSITE:
                out[f"{name}_Type"] = TYPE_NAME
        self._add_navs(out)
        return out

    def _add_navs(self, out: dict[str, Any]) -> None:
        for name in list(out):
            base = name[:-4] if name.endswith("_Key") else None
            target = REFERENCE_TARGETS.get(base or "")
            if base and target in self.specs and base not in out:
                out[base] = Nav(target, name)

    def _schema_of(self, set_name: str) -> dict[str, Any] | None:
        spec = self.specs.get(set_name)
        return self._field_map(spec) if spec is not None else None

    def _deref(self, set_name: str, key: str) -> dict[str, Any] | None:
        return self.data.get(set_name, {}).get(key.lower())

    # --- HTTP plumbing -------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask(f"onec-sim-{id(self)}")
        methods = ["GET", "POST", "PATCH", "PUT", "DELETE", "MERGE"]

        @app.route(self.base_path + "/", methods=methods, strict_slashes=False)
        def service_root() -> Response:
            return self._handle("")

        @app.route(self.base_path + "/<path:resource>", methods=methods)
        def resource(resource: str) -> Response:
            return self._handle(resource)

        return app

    def _handle(self, resource: str) -> Response:
        return self.answer(_Call(resource=resource))

    def authenticate(self, call: _Call) -> None:
        try:
            call.options, call.params = _read_query()
            call.as_json = _wants_json(call.options.get("$format"))
        except ODataError as exc:  # a bad query still answers 401 first to a stranger
            call.malformed = exc
        if not self._authorized():
            raise ODataError(401, E_AUTH, "Ошибка аутентификации: неверное имя пользователя или пароль")

    def resolve(self, call: _Call) -> None:
        if call.malformed is not None:
            raise call.malformed
        call.target = self._resolve(call.resource)
        call.method = request.method.upper()
        with self._lock:
            self.calls[self._label(call.method, call.target)] += 1

    def transient_error(self, call: _Call) -> Exception:
        if self.faults.roll(0.5):  # the web server in front of 1C answering for it
            page = "<html><body><h1>503 Service Unavailable</h1></body></html>"
            return ForeignAnswer(Response(page, 503, content_type="text/html; charset=iso-8859-1"))
        return self.internal_error(call)

    def handle(self, call: _Call) -> Response:
        response, call.wrote = self._dispatch(call.method, call.target, call.options, call.params, call.as_json)
        return response

    def internal_error(self, call: _Call) -> ODataError:
        return ODataError(500, E_INTERNAL, INTERNAL_MESSAGE)

    def success(self, call: _Call, result: Response) -> Response:
        return result  # built by the handler: 1C answers JSON, Atom, EDMX or plain text

    def error(self, call: _Call, exc: ErrorAnswer) -> Response:
        assert isinstance(exc, ODataError)  # the only error answer this simulator raises
        return self._error(exc, call.as_json)

    def _authorized(self) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token:
            return False
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        # 1C decodes UTF-8 (a Cyrillic login works); latin-1 covers clients like requests' default.
        for encoding in ("utf-8", "latin-1"):
            try:
                login, sep, password = raw.decode(encoding).partition(":")
            except UnicodeDecodeError:
                continue
            expected = self.users.get(login)
            if sep and expected is not None and hmac.compare_digest(password.encode(), expected.encode()):
                return True
        return False

    def _label(self, method: str, target: _Target) -> str:
        name = target.set_name or "$service"
        if target.operation:
            return f"{method} {name}/{target.operation}"
        return f"{method} {name}"

    def _resolve(self, resource: str) -> _Target:
        """Split ``Set``, ``Set(key)``, ``Set(key)/Op``, ``Set/$count``, ``$metadata``."""
        if resource in ("", "/"):
            return _Target()
        if resource == "$metadata":
            return _Target(set_name="$metadata")
        name, paren, rest = resource.partition("(")
        operation: str | None = None
        key_text: str | None = None
        if paren:
            close = _closing_paren(rest)
            if close < 0:
                raise ODataError(400, E_BAD_URL, f"Неверный URL: {resource}")
            key_text, tail = rest[:close], rest[close + 1 :]
            if tail:
                if not tail.startswith("/") or "/" in tail[1:]:
                    raise ODataError(400, E_BAD_URL, f"Неверный URL: {resource}")
                operation = tail[1:].removesuffix("()")
        elif "/" in name:
            name, _, operation = name.partition("/")
            if operation != "$count":
                raise ODataError(400, E_BAD_URL, f"Неверный URL: {resource}")
        target = self._set_target(name)
        if key_text is not None:
            target.key = self._parse_key(target, key_text)
        target.operation = operation
        return target

    def _set_target(self, name: str) -> _Target:
        if name in self.specs:
            return _Target(set_name=name, spec=self.specs[name])
        for parent, spec in self.specs.items():
            section = name.removeprefix(parent + "_") if name.startswith(parent + "_") else None
            if section and section in spec.tabular:
                return _Target(set_name=name, spec=spec, tabular=section)
        raise ODataError(404, E_NO_SET, f"Не найден тип сущности: {name}")

    def _parse_key(self, target: _Target, text: str) -> str:
        try:
            parts = parse_key(text)
        except FilterError as exc:
            raise ODataError(400, E_BAD_URL, f"Неверный ключ сущности: {exc}") from exc
        assert target.spec is not None
        named = {name: value for name, value in parts if name is not None}
        if target.tabular is not None:
            ref, line = named.get("Ref_Key"), named.get("LineNumber")
            if (
                not isinstance(ref, Guid)
                or not isinstance(line, Decimal)
                or len(parts) != 2
                or line != line.to_integral_value()
                or not 0 < line < 10**9
            ):
                raise ODataError(400, E_BAD_URL, "Ключ строки табличной части: Ref_Key=guid'…', LineNumber=N")
            return f"{ref.value}|{int(line)}"
        if target.spec.keyed_by_ref:
            value = parts[0][1] if len(parts) == 1 and parts[0][0] in (None, "Ref_Key") else None
            if not isinstance(value, Guid):
                raise ODataError(400, E_BAD_URL, "Ключ объекта: guid'…'")
            return value.value
        values = []
        for dim in target.spec.dimensions:
            value = named.get(dim, parts[0][1] if len(parts) == 1 and parts[0][0] is None else None)
            if value is None:
                raise ODataError(400, E_BAD_URL, f"Не указано измерение {dim}")
            values.append(self._norm_key(target.spec, value.value if isinstance(value, Guid) else str(value)))
        return "|".join(values)

    # --- dispatch ------------------------------------------------------------------------------

    def _dispatch(
        self, method: str, target: _Target, options: dict[str, str], params: dict[str, str], as_json: bool
    ) -> tuple[Response, bool]:
        if target.set_name == "":
            if method != "GET":
                raise ODataError(405, E_BAD_METHOD, "Метод не поддерживается")
            return self._service_document(as_json), False
        if target.set_name == "$metadata":
            if method != "GET":
                raise ODataError(405, E_BAD_METHOD, "Метод не поддерживается")
            return Response(self._metadata_xml(), 200, content_type="application/xml;charset=utf-8"), False
        spec = target.spec
        assert spec is not None
        with self._lock:
            if target.operation in ("Post", "Unpost"):
                if method != "POST" or target.key is None:
                    raise ODataError(405, E_BAD_METHOD, "Метод не поддерживается")
                return self._post_action(target, params), True
            if target.operation == "$count":
                if method != "GET" or target.key is not None:
                    raise ODataError(405, E_BAD_METHOD, "Метод не поддерживается")
                rows = self._query(target, options)[0]
                return Response(str(len(rows)), 200, content_type="text/plain;charset=utf-8"), False
            if target.operation is not None:
                return self._navigate(target, options, method, as_json), False
            if target.key is None:
                if method == "GET":
                    return self._get_collection(target, options, as_json), False
                if method == "POST":
                    return self._create(target, as_json), True
                raise ODataError(405, E_BAD_METHOD, "Метод не поддерживается")
            if method == "GET":
                entity = self._find(target)
                body = self._shape([entity], target, options)[0]
                return self._entity_response(target, body, 200, as_json), False
            if method == "PATCH":
                return self._patch(target, as_json), True
            if method == "DELETE":
                return self._delete(target), True
            raise ODataError(405, E_BAD_METHOD, "Метод не поддерживается")

    def _find(self, target: _Target) -> dict[str, Any]:
        assert target.spec is not None and target.key is not None
        if target.tabular is not None:
            ref, line = target.key.split("|")
            parent = self.data[target.spec.name].get(ref)
            for row in (parent or {}).get(target.tabular, []):
                if str(row.get("LineNumber")) == line:
                    return row
        else:
            found = self.data[target.spec.name].get(target.key)
            if found is not None:
                return found
        raise ODataError(404, E_NO_OBJECT, "Объект не найден")

    def _all_rows(self, target: _Target) -> list[dict[str, Any]]:
        assert target.spec is not None
        entities = list(self.data[target.spec.name].values())
        if target.tabular is None:
            return entities
        return [row for entity in entities for row in entity.get(target.tabular, [])]

    def _query(self, target: _Target, options: Mapping[str, str]) -> tuple[list[dict[str, Any]], int]:
        """Filter, order and page; returns the page and the filtered count."""
        assert target.spec is not None
        fields = self._field_map(target.spec, target.tabular)
        rows = self._all_rows(target)
        text = options.get("$filter")
        if text is not None:
            try:
                compiled = compile_filter(text, fields, schema_of=self._schema_of, deref=self._deref)
            except FilterError as exc:
                raise ODataError(400, E_FILTER, f"Ошибка в выражении отбора: {exc}") from exc
            rows = [row for row in rows if compiled.matches(row)]
        count = len(rows)
        if "$orderby" in options:
            for name, desc in reversed(_parse_orderby(options["$orderby"], fields)):
                rows.sort(key=_sorter(name, fields[name]), reverse=desc)
        skip, top = _non_negative(options, "$skip"), _non_negative(options, "$top")
        rows = rows[skip or 0 :]
        if top is not None:
            rows = rows[:top]
        return rows, count

    def _shape(self, rows: list[dict[str, Any]], target: _Target, options: Mapping[str, str]) -> list[dict]:
        """Apply $select and $expand to copies of ``rows``."""
        assert target.spec is not None
        fields = self._field_map(target.spec, target.tabular)
        select = _parse_list(options.get("$select"))
        expand = _parse_list(options.get("$expand"))
        for name in select:
            if name != "*" and (name not in fields or isinstance(fields[name], Nav)) and name not in expand:
                raise ODataError(400, E_BAD_OPTION, f"Свойство {name!r} не найдено ($select)")
        for name in expand:
            if not isinstance(fields.get(name), Nav):
                raise ODataError(400, E_BAD_OPTION, f"Навигационное свойство {name!r} не найдено ($expand)")
        out = []
        for row in rows:
            shaped = copy.deepcopy(row)
            if select and "*" not in select:
                shaped = {k: v for k, v in shaped.items() if k in select}
            for name in expand:
                nav = fields[name]
                key = row.get(nav.key_field)
                found = self._deref(nav.target, str(key)) if key and key != EMPTY_GUID else None
                shaped[name] = copy.deepcopy(found)
            out.append(shaped)
        return out

    def _get_collection(self, target: _Target, options: Mapping[str, str], as_json: bool) -> Response:
        inline = options.get("$inlinecount")
        if inline not in (None, "allpages", "none"):
            raise ODataError(400, E_BAD_OPTION, f"Неверное значение $inlinecount: {inline}")
        rows, count = self._query(target, options)
        shaped = self._shape(rows, target, options)
        with_count = count if inline == "allpages" else None
        if not as_json:
            return self._xml_response(self._atom_feed(target, shaped, with_count), 200)
        body: dict[str, Any] = {"odata.metadata": f"{self._root_url()}$metadata#{target.set_name}"}
        if with_count is not None:
            body["odata.count"] = str(with_count)  # OData 3.0 JSON writes the count as a string
        body["value"] = shaped
        return self._json(body, 200)

    def _navigate(self, target: _Target, options: Mapping[str, str], method: str, as_json: bool) -> Response:
        assert target.spec is not None
        fields = self._field_map(target.spec, target.tabular)
        nav = fields.get(target.operation or "")
        if target.key is None or method != "GET" or not isinstance(nav, Nav):
            raise ODataError(400, E_NO_OPERATION, f"Операция {target.operation!r} не найдена")
        key = self._find(target).get(nav.key_field)
        found = self._deref(nav.target, str(key)) if key else None
        if found is None:
            raise ODataError(404, E_NO_OBJECT, "Объект не найден")
        nav_target = _Target(set_name=nav.target, spec=self.specs[nav.target])
        body = self._shape([found], nav_target, options)[0]
        return self._entity_response(nav_target, body, 200, as_json)

    def _create(self, target: _Target, as_json: bool) -> Response:
        spec = target.spec
        assert spec is not None
        if target.tabular is not None:
            raise ODataError(400, E_NOT_SUPPORTED, _ROWS_DIRECTLY.format("Создание"))
        values = self._wire_values(spec, _read_body(), creating=True)
        entity = self._new_entity(spec, values)
        key = self._storage_key(spec, entity)
        if not spec.keyed_by_ref and not key.strip("|"):
            raise ODataError(400, E_BAD_VALUE, "Не заполнены измерения записи регистра")
        if key in self.data[spec.name]:
            raise ODataError(400, E_BAD_VALUE, "Объект с таким ключом уже существует")
        self.data[spec.name][key] = entity
        response = self._entity_response(target, copy.deepcopy(entity), 201, as_json)
        location = f"{self._root_url()}{spec.name}({self._key_literal(spec, entity)})"
        response.headers["Location"] = quote(location, safe=":/()'=,")  # headers are latin-1: encode
        return response

    def _patch(self, target: _Target, as_json: bool) -> Response:
        spec = target.spec
        assert spec is not None
        if target.tabular is not None:
            raise ODataError(400, E_NOT_SUPPORTED, _ROWS_DIRECTLY.format("Изменение"))
        entity = self._find(target)
        self._check_if_match(spec, entity)
        values = self._wire_values(spec, _read_body(), creating=False)
        if not spec.keyed_by_ref and any(d in values for d in spec.dimensions):
            raise ODataError(400, E_BAD_VALUE, "Измерения записи регистра не изменяются")
        self._apply(spec, entity, values)
        return self._entity_response(target, copy.deepcopy(entity), 200, as_json)

    def _delete(self, target: _Target) -> Response:
        spec = target.spec
        assert spec is not None and target.key is not None
        if target.tabular is not None:
            raise ODataError(400, E_NOT_SUPPORTED, _ROWS_DIRECTLY.format("Удаление"))
        self._check_if_match(spec, self._find(target))
        del self.data[spec.name][target.key]
        return Response(status=200)

    def _post_action(self, target: _Target, params: Mapping[str, str]) -> Response:
        spec = target.spec
        assert spec is not None
        if spec.kind != "Document" or target.tabular is not None:
            raise ODataError(400, E_NO_OPERATION, f"Операция {target.operation} не найдена")
        mode = params.get("PostingModeOperational")
        if mode is not None and mode not in ("true", "false"):
            raise ODataError(400, E_BAD_OPTION, "PostingModeOperational: ожидается true или false")
        self._post(spec, self._find(target), target.operation == "Post")
        return Response(status=200)

    def _check_if_match(self, spec: SetSpec, entity: Mapping[str, Any]) -> None:
        wanted = request.headers.get("If-Match")
        if wanted is None or not spec.keyed_by_ref:
            return
        wanted = wanted.strip()
        if wanted.startswith("W/"):
            wanted = wanted[2:]
        wanted = wanted.strip('"')
        if wanted != "*" and wanted != entity.get("DataVersion"):
            raise ODataError(412, E_VERSION, "Версия данных объекта изменилась (If-Match не совпадает с DataVersion)")

    def _wire_values(self, spec: SetSpec, body: Mapping[str, Any], creating: bool) -> dict[str, Any]:
        """Validate a request body against the set's attributes, as 1C's deserializer would."""
        fields = self._field_map(spec)
        out: dict[str, Any] = {}
        for name, value in body.items():
            if "@" in name or name.startswith("odata."):
                continue  # annotations such as odata.metadata are not data
            if name in ("DataVersion", "Posted"):
                continue  # not writable: the server computes them
            if name == "Ref_Key" and spec.keyed_by_ref:
                ref = _coerce(GUID, value, name)
                if not creating:
                    continue
                out[name] = ref
                continue
            ftype = fields.get(name)
            if ftype is None or isinstance(ftype, Nav):
                raise ODataError(400, E_BAD_VALUE, f"Свойство {name!r} не найдено")
            if isinstance(ftype, Mapping):
                out[name] = self._wire_rows(name, ftype, value)
            else:
                out[name] = _coerce(ftype, value, name)
        for name, ftype in fields.items():
            if ftype == COMPOSITE and name in out:
                _check_composite(name, out, f"{name}_Type")
        return out

    def _wire_rows(self, section: str, row_fields: Mapping[str, Any], value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise ODataError(400, E_BAD_VALUE, f"Табличная часть {section}: ожидается массив объектов")
        rows = []
        for raw in value:
            row: dict[str, Any] = {}
            if raw.get("LineNumber") in (None, ""):
                # Real 1C fails a row without LineNumber with an internal error, not a 400.
                raise ODataError(500, E_INTERNAL, INTERNAL_MESSAGE)
            for name, item in raw.items():
                if "@" in name or name == "Ref_Key":
                    continue
                ftype = row_fields.get(name)
                if ftype is None or isinstance(ftype, (Nav, Mapping)):
                    raise ODataError(400, E_BAD_VALUE, f"Свойство {section}.{name} не найдено")
                row[name] = _coerce(ftype, item, f"{section}.{name}")
            for name, ftype in row_fields.items():
                if ftype == COMPOSITE and name in row:
                    _check_composite(f"{section}.{name}", row, f"{name}_Type")
            rows.append(row)
        return rows

    # --- answers -------------------------------------------------------------------------------

    def _root_url(self) -> str:
        return request.host_url.rstrip("/") + self.base_path + "/"

    def _key_literal(self, spec: SetSpec, entity: Mapping[str, Any]) -> str:
        if spec.keyed_by_ref:
            return guid_literal(str(entity["Ref_Key"]))
        parts = []
        for dim in spec.dimensions:
            parts.append(f"{dim}={string_literal(str(entity.get(dim, '')))}")
            if f"{dim}_Type" in entity:
                parts.append(f"{dim}_Type={string_literal(str(entity[f'{dim}_Type']))}")
        return ", ".join(parts)

    def _entity_response(self, target: _Target, body: dict[str, Any], status: int, as_json: bool) -> Response:
        if not as_json:
            return self._xml_response(self._atom_entry(target, body, standalone=True), status)
        return self._json({"odata.metadata": f"{self._root_url()}$metadata#{target.set_name}/@Element", **body}, status)

    @staticmethod
    def _json(body: Any, status: int) -> Response:
        return Response(
            json.dumps(body, ensure_ascii=False),
            status,
            content_type="application/json;charset=utf-8",
            headers={"DataServiceVersion": "3.0"},
        )

    @staticmethod
    def _xml_response(text: str, status: int) -> Response:
        return Response(
            text, status, content_type="application/atom+xml;charset=utf-8", headers={"DataServiceVersion": "3.0"}
        )

    def _error(self, exc: ODataError, as_json: bool) -> Response:
        headers = {"WWW-Authenticate": 'Basic realm="1C:Enterprise"'} if exc.status == 401 else {}
        if as_json:
            body = {"odata.error": {"code": exc.code, "message": {"lang": "ru", "value": exc.message}}}
            return Response(
                json.dumps(body, ensure_ascii=False),
                exc.status,
                content_type="application/json;charset=utf-8",
                headers=headers,
            )
        xml = (
            '<?xml version="1.0" encoding="utf-8"?>\n<m:error xmlns:m='
            '"http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">'
            f'<m:code>{escape(exc.code)}</m:code><m:message xml:lang="ru">{escape(exc.message)}'
            "</m:message></m:error>"
        )
        return Response(xml, exc.status, content_type="application/xml;charset=utf-8", headers=headers)

    def _service_document(self, as_json: bool) -> Response:
        names = self.entity_sets
        if as_json:
            return self._json(
                {"odata.metadata": f"{self._root_url()}$metadata", "value": [{"name": n, "url": n} for n in names]}, 200
            )
        collections_xml = "".join(
            f"<collection href={quoteattr(n)}><atom:title>{escape(n)}</atom:title></collection>" for n in names
        )
        xml = (
            '<?xml version="1.0" encoding="utf-8"?>\n<service xmlns="http://www.w3.org/2007/app" '
            f'xmlns:atom="http://www.w3.org/2005/Atom" xml:base={quoteattr(self._root_url())}>'
            f"<workspace><atom:title>Default</atom:title>{collections_xml}</workspace></service>"
        )
        return Response(xml, 200, content_type="application/xml;charset=utf-8")

    def _metadata_xml(self) -> str:
        """A minimal valid EDMX (CSDL 3.0) of the published sets, in 1C's namespace and container."""
        types: list[str] = []
        sets: list[str] = []
        functions: list[str] = []
        for name, spec in self.specs.items():
            keys = (
                ["Ref_Key"]
                if spec.keyed_by_ref
                else [k for d in spec.dimensions for k in (d, f"{d}_Type") if k in self._field_map(spec)]
            )
            props = [
                _edm_property(n, t)
                for n, t in self._field_map(spec).items()
                if isinstance(t, str) and n not in spec.tabular
            ]
            for section in spec.tabular:
                row_type = f"{name}_{section}_RowType"
                row_props = self._row_map(spec.tabular[section], with_parent=True)
                scalar = {n: t for n, t in row_props.items() if isinstance(t, str)}
                types.append(
                    f'<ComplexType Name="{row_type}">'
                    + "".join(_edm_property(n, t) for n, t in scalar.items())
                    + "</ComplexType>"
                )
                props.append(f'<Property Name="{section}" Type="Collection({NAMESPACE}.{row_type})" Nullable="false"/>')
                row_set = f"{name}_{section}"
                types.append(
                    f'<EntityType Name="{row_set}"><Key><PropertyRef Name="Ref_Key"/>'
                    '<PropertyRef Name="LineNumber"/></Key>'
                    + "".join(_edm_property(n, t, n in ("Ref_Key", "LineNumber")) for n, t in scalar.items())
                    + "</EntityType>"
                )
                sets.append(f'<EntitySet Name="{row_set}" EntityType="{NAMESPACE}.{row_set}"/>')
            key_xml = "".join(f'<PropertyRef Name="{k}"/>' for k in keys)
            types.append(f'<EntityType Name="{name}"><Key>{key_xml}</Key>{"".join(props)}</EntityType>')
            sets.append(f'<EntitySet Name="{name}" EntityType="{NAMESPACE}.{name}"/>')
            if spec.kind == "Document":
                binding = f'<Parameter Name="bindingParameter" Type="{NAMESPACE}.{name}"/>'
                mode = '<Parameter Name="PostingModeOperational" Type="Edm.Boolean"/>'
                for action in ("Post", "Unpost"):
                    functions.append(
                        f'<FunctionImport Name="{action}" IsBindable="true" '
                        f'IsSideEffecting="true">{binding}{mode}</FunctionImport>'
                    )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<edmx:Edmx xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" Version="1.0">'
            '<edmx:DataServices xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" '
            'm:DataServiceVersion="3.0" m:MaxDataServiceVersion="3.0">'
            f'<Schema xmlns="http://schemas.microsoft.com/ado/2009/11/edm" Namespace="{NAMESPACE}">'
            + "".join(types)
            + '<EntityContainer Name="EnterpriseV8" m:IsDefaultEntityContainer="true">'
            + "".join(sets)
            + "".join(functions)
            + "</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>"
        )

    def _atom_feed(self, target: _Target, rows: list[dict[str, Any]], count: int | None) -> str:
        root = self._root_url()
        count_xml = f"<m:count>{count}</m:count>" if count is not None else ""
        entries = "".join(self._atom_entry(target, row, standalone=False) for row in rows)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<feed xmlns="http://www.w3.org/2005/Atom" {_XML_NS} xml:base={quoteattr(root)}>'
            f"<id>{escape(root + target.set_name)}</id>"
            f'<title type="text">{escape(target.set_name)}</title>'
            f"<updated>{self._now()}Z</updated>{count_xml}{entries}</feed>"
        )

    def _atom_entry(self, target: _Target, row: dict[str, Any], standalone: bool) -> str:
        assert target.spec is not None
        fields = self._field_map(target.spec, target.tabular)
        if target.tabular is not None:
            ref = guid_literal(str(row.get("Ref_Key") or EMPTY_GUID))
            key = f"Ref_Key={ref}, LineNumber={row.get('LineNumber')}"
        else:
            needed = ["Ref_Key"] if target.spec.keyed_by_ref else list(target.spec.dimensions)
            key = self._key_literal(target.spec, row) if all(k in row for k in needed) else ""
        base = quoteattr(self._root_url())
        head = "<entry>"
        if standalone:
            head = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<entry xmlns="http://www.w3.org/2005/Atom" {_XML_NS} xml:base={base}>'
            )
        return (
            f"{head}<id>{escape(self._root_url() + target.set_name)}({escape(key)})</id>"
            f'<category term="{NAMESPACE}.{escape(target.set_name)}" '
            'scheme="http://schemas.microsoft.com/ado/2007/08/dataservices/scheme"/>'
            f'<title type="text"/><updated>{self._now()}Z</updated><author/>'
            f'<content type="application/xml"><m:properties>{_xml_props(row, fields)}</m:properties>'
            "</content></entry>"
        )


# --- helpers ------------------------------------------------------------------------------------


def _read_query() -> tuple[dict[str, str], dict[str, str]]:
    """``$options`` and plain parameters from the raw query string, percent-decoding only.

    1C reads ``+`` as a plus sign, so unlike form decoding it is never turned into a space.
    """
    raw = request.environ.get("QUERY_STRING", "")
    data = raw.encode("latin-1", errors="replace") if isinstance(raw, str) else bytes(raw)
    options: dict[str, str] = {}
    params: dict[str, str] = {}
    for part in data.split(b"&"):
        if not part:
            continue
        name_b, _, value_b = part.partition(b"=")
        name = unquote_to_bytes(name_b).decode("utf-8", errors="replace")
        value = unquote_to_bytes(value_b).decode("utf-8", errors="replace")
        if name.startswith("$"):
            if name not in ("$filter", "$select", "$orderby", "$top", "$skip", "$inlinecount", "$expand", "$format"):
                raise ODataError(400, E_UNSUPPORTED_OPTION, f"Параметр {name} не поддерживается")
            if name in options:
                raise ODataError(400, E_BAD_OPTION, f"Параметр {name} указан дважды")
            options[name] = value
        else:
            params[name] = value  # allowedOnly, PostingModeOperational, ...: read where they apply
    return options, params


def _closing_paren(text: str) -> int:
    """Index of the ``)`` closing a key (quotes skipped, ``''`` included), -1 if none."""
    quoted = False
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted  # a doubled quote flips twice: still inside the string
        elif ch == ")" and not quoted:
            return i
    return -1


def _wants_json(fmt: str | None) -> bool:
    if fmt is None:
        return "json" in request.headers.get("Accept", "").lower()
    lowered = fmt.strip().lower()
    if lowered == "json" or lowered.startswith("application/json"):
        return True
    if lowered in ("xml", "atom", "application/xml", "application/atom+xml"):
        return False
    raise ODataError(400, E_BAD_OPTION, f"Неверное значение $format: {fmt}")


def _read_body() -> dict[str, Any]:
    try:
        body = json.loads(request.get_data(as_text=False).decode("utf-8") or "null")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ODataError(400, E_BAD_BODY, "Ошибка разбора тела запроса: ожидается JSON") from exc
    if not isinstance(body, dict):
        raise ODataError(400, E_BAD_BODY, "Ошибка разбора тела запроса: ожидается объект JSON")
    return body


def _non_negative(options: Mapping[str, str], name: str) -> int | None:
    text = options.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit():
        raise ODataError(400, E_BAD_OPTION, f"Неверное значение {name}: {text}")
    return int(text)


def _parse_list(text: str | None) -> list[str]:
    if text is None:
        return []
    items = [item.strip(" ") for item in text.split(",")]
    if not all(items):
        raise ODataError(400, E_BAD_OPTION, f"Неверный список свойств: {text}")
    return items


def _parse_orderby(text: str, fields: Mapping[str, Any]) -> list[tuple[str, bool]]:
    keys = []
    for item in _parse_list(text):
        parts = item.split()
        if len(parts) > 2 or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
            raise ODataError(400, E_BAD_OPTION, f"Неверное выражение $orderby: {item}")
        name = parts[0]
        if not isinstance(fields.get(name), str):
            raise ODataError(400, E_BAD_OPTION, f"Свойство {name!r} не найдено ($orderby)")
        keys.append((name, len(parts) == 2 and parts[1] == "desc"))
    return keys


def _sorter(name: str, ftype: str) -> Callable[[Mapping[str, Any]], tuple[int, Any]]:
    def key(row: Mapping[str, Any]) -> tuple[int, Any]:
        return sort_key(row.get(name), ftype)

    return key


def _coerce(ftype: str, value: Any, name: str) -> Any:
    """A body value in stored form, or 400 when 1C's deserializer would refuse it."""
    if value is None:
        return _EMPTY[ftype]
    bad = ODataError(400, E_BAD_VALUE, f"Неверное значение свойства {name}: {value!r}")
    if ftype == GUID:
        if not is_guid(value):
            raise bad
        return str(value).lower()
    if ftype == DATETIME:
        parsed = parse_datetime(value) if isinstance(value, str) else None
        if parsed is None:
            raise bad
        return parsed.strftime(DATETIME_FORMAT)
    if ftype == NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        return value
    if ftype == BOOL:
        if not isinstance(value, bool):
            raise bad
        return value
    if ftype == INT64:
        digits = isinstance(value, str) and value.isascii() and value.isdigit()
        if isinstance(value, bool) or not (isinstance(value, int) or digits):
            raise bad
        return str(value)
    if not isinstance(value, str):
        raise bad
    return value.lower() if ftype == COMPOSITE and is_guid(value) else value


def _check_composite(name: str, values: dict[str, Any], type_field: str) -> None:
    # A composite value is meaningless without its type; an empty one is Undefined.
    if values.get(name) and not values.get(type_field):
        raise ODataError(400, E_BAD_VALUE, f"Не указан тип значения свойства {name} ({type_field})")
    if not values.get(name) and type_field not in values:
        values[type_field] = UNDEFINED_TYPE


def _default_composite_type(name: str) -> str:
    target = COMPOSITE_DEFAULT_TYPES.get(name)
    return f"{NAMESPACE}.{target}" if target else UNDEFINED_TYPE


def _plain(value: Any) -> Any:
    """A Python value in the JSON form 1C answers with."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None, microsecond=0).strftime(DATETIME_FORMAT)
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00"
    if isinstance(value, (uuid.UUID, Guid)):
        return (value.value if isinstance(value, Guid) else str(value)).lower()
    if isinstance(value, Decimal):
        return _json_number(value)
    if isinstance(value, str) and is_guid(value):
        return value.lower()
    return value


def _infer_type(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, (int, float, Decimal)):
        return NUMBER
    if isinstance(value, (datetime, date)) or (isinstance(value, str) and parse_datetime(value)):
        return DATETIME
    if name.endswith("_Key") or isinstance(value, uuid.UUID):
        return GUID
    return STRING


def _edm_property(name: str, ftype: str, key: bool = False) -> str:
    nullable = ' Nullable="false"' if key or name in ("Ref_Key",) else ""
    return f'<Property Name="{escape(name)}" Type="{_EDM.get(ftype, "Edm.String")}"{nullable}/>'


def _xml_props(row: Mapping[str, Any], fields: Mapping[str, Any]) -> str:
    out = []
    for name, value in row.items():
        ftype = fields.get(name)
        tag = f"d:{name}"
        if isinstance(ftype, Mapping) and isinstance(value, list):
            items = "".join(f"<d:element>{_xml_props(r, ftype)}</d:element>" for r in value)
            out.append(f"<{tag}>{items}</{tag}>")
        elif isinstance(value, dict):  # an $expand-ed reference
            out.append(f"<{tag}>{_xml_props(value, {})}</{tag}>")
        elif value is None:
            out.append(f'<{tag} m:null="true"/>')
        else:
            edm = _EDM.get(ftype, "Edm.String") if isinstance(ftype, str) else "Edm.String"
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            type_attr = f' m:type="{edm}"' if edm != "Edm.String" else ""
            out.append(f"<{tag}{type_attr}>{escape(text)}</{tag}>")
    return "".join(out)


def seed_demo(sim: OneCSimulator) -> dict[str, str]:
    """A counterparty, an order, an invoice and a part payment for the demo; returns their keys."""
    counterparty = sim.insert(
        "Catalog_Контрагенты",
        {
            "Description": "Ромашка ООО",
            "НаименованиеПолное": "Общество с ограниченной ответственностью «Ромашка»",
            "ИНН": "7701234567",
            "КПП": "770101001",
        },
    )
    order = sim.insert(
        "Document_ЗаказКлиента",
        {
            "Контрагент_Key": counterparty["Ref_Key"],
            "СуммаДокумента": 120000,
            "Статус": "КОтгрузке",
            "Товары": [{"Количество": 10, "Цена": 12000, "Сумма": 120000}],
        },
    )
    invoice = sim.insert(
        "Document_СчетНаОплатуКлиенту",
        {
            "Контрагент_Key": counterparty["Ref_Key"],
            "СуммаДокумента": 120000,
            "ДокументОснование": order["Ref_Key"],
            "ДокументОснование_Type": f"{NAMESPACE}.Document_ЗаказКлиента",
        },
    )
    sim.set_posted("Document_СчетНаОплатуКлиенту", invoice["Ref_Key"])
    payment = sim.insert(
        "Document_ПоступлениеБезналичныхДенежныхСредств",
        {
            "Контрагент_Key": counterparty["Ref_Key"],
            "СуммаДокумента": 60000,
            "РасшифровкаПлатежа": [
                {
                    "ОснованиеПлатежа": invoice["Ref_Key"],
                    "Заказ": order["Ref_Key"],
                    "Сумма": 60000,
                    "СуммаВзаиморасчетов": 60000,
                }
            ],
        },
    )
    sim.set_posted("Document_ПоступлениеБезналичныхДенежныхСредств", payment["Ref_Key"])
    sim.insert(
        "InformationRegister_СостоянияЗаказовКлиентов",
        {
            "Заказ": order["Ref_Key"],
            "Состояние": "ОжидаетсяОплатаДоОтгрузки",
            "СуммаОплаты": 60000,
            "ПроцентОплаты": 50,
            "СуммаДолга": 60000,
            "ПроцентДолга": 50,
        },
    )
    return {
        "counterparty": counterparty["Ref_Key"],
        "order": order["Ref_Key"],
        "invoice": invoice["Ref_Key"],
        "payment": payment["Ref_Key"],
    }


def main(argv: list[str] | None = None) -> None:
    """Serve a simulator until interrupted: ``python -m simulators.onec --port 8083``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.onec", description="Simulated 1C:Enterprise standard OData interface."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8083)
    parser.add_argument("--base-path", default="/trade/odata/standard.odata")
    parser.add_argument(
        "--user",
        action="append",
        default=None,
        metavar="LOGIN:PASSWORD",
        help="an infobase user (repeatable); default Интеграция:secret",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="ENTITY_SET",
        help="a published entity set (repeatable); default: the standard eight",
    )
    parser.add_argument("--demo", action="store_true", help="seed a counterparty, order, invoice and payment")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--error-after-effect-rate", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.0, help="max seconds added to each answer")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    users = dict(u.split(":", 1) for u in args.user) if args.user else None
    faults = FaultKnobs(
        error_rate=args.error_rate,
        error_after_effect_rate=args.error_after_effect_rate,
        latency=(0.0, args.latency),
        seed=args.seed,
    )
    sim = OneCSimulator(base_path=args.base_path, users=users, entity_sets=args.set, faults=faults)
    if args.demo:
        seed_demo(sim)
    logins = ", ".join(sim.users)
    sim.serve_until_interrupted(
        args.host, args.port, lambda url: f"1C OData simulator: {url}{sim.base_path}/ (users: {logins})"
    )
