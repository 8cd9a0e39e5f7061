"""1C OData client and adapter against mocked HTTP (responses), with payloads shaped as 1C answers:
UTF-8 Basic auth, query literals and %20 encoding, paging, the error envelope -> typed errors."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import requests
import responses
from marshmallow import ValidationError

from adapters.contracts import DealSource, WebhookReceiver
from adapters.onec.adapter import OneCAdapter
from adapters.onec.client import OneCClient, VersionConflict, basic_auth_utf8
from adapters.onec.mapping import build_entities
from adapters.onec.settings import OneCSettings, OneCSettingsSchema
from domain import CreateCounterparty, CreateOrder, CreateTask, command_from_payload
from domain.errors import (
    AmbiguousWriteError,
    AuthError,
    FatalError,
    NotFoundError,
    RetriableError,
)

BASE = "http://1c.local/trade/odata/standard.odata/"
PAYLOADS = Path(__file__).parent / "payloads" / "onec"
LOGIN, PASSWORD = "Интеграция", "пароль-секрет"
INVOICES = "Document_СчетНаОплатуКлиенту"
PAYMENTS = "Document_ПоступлениеБезналичныхДенежныхСредств"
PARTIES = "Catalog_Контрагенты"


def payload(name: str) -> Any:
    text = (PAYLOADS / name).read_text(encoding="utf-8")
    return json.loads(text) if name.endswith(".json") else text


def url_of(resource: str) -> re.Pattern[str]:
    """Any query on ``resource`` (the client percent-encodes the Cyrillic path)."""
    return re.compile(re.escape(BASE + quote(resource, safe="()'=,/$:")) + r"(\?.*)?$")


def query_of(call: Any) -> str:
    return unquote(call.request.url.split("?", 1)[1])


def settings(**extra: Any) -> OneCSettings:
    loaded = OneCSettingsSchema().load_settings(
        {
            "type": "onec",
            "base_url": BASE,
            "username": LOGIN,
            "password": PASSWORD,
            "deal_crm": "b24",
            "backoff_initial": "1ms",
            "max_attempts": 3,
            **extra,
        }
    )
    assert isinstance(loaded, OneCSettings)
    return loaded


def adapter(**extra: Any) -> OneCAdapter:
    return OneCAdapter("onec", settings(**extra))


def client(**kw: Any) -> OneCClient:
    return OneCClient(BASE, LOGIN, PASSWORD, backoff_initial=0.001, backoff_max=0.01, **kw)


# --- wire form --------------------------------------------------------------------------------------


@responses.activate
def test_cyrillic_login_is_sent_as_utf8_basic_and_query_uses_literals_and_percent20() -> None:
    responses.get(url_of(INVOICES), json=payload("invoices_page2.json"))
    adapter().documents_page(adapter().entities["invoice"], datetime(2024, 5, 14, 10, 0), skip=3, top=2)
    req = responses.calls[0].request
    expected = "Basic " + base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
    assert req.headers["Authorization"] == expected == basic_auth_utf8(LOGIN, PASSWORD)
    raw_query = str(req.url).split("?", 1)[1]
    assert "+" not in raw_query and "%20" in raw_query  # 1C reads '+' as a plus sign
    query = query_of(responses.calls[0])
    assert "$format=json" in query
    assert "$filter=Date ge datetime'2024-05-14T10:00:00'" in query
    assert "$orderby=Date,Ref_Key" in query and "$top=2" in query and "$skip=3" in query
    assert "$select=Ref_Key,DataVersion,DeletionMark,Number,Date,Posted,СуммаДокумента" in query
    with pytest.raises(UnicodeEncodeError):  # what the hand-made header avoids
        requests.auth._basic_auth_str(LOGIN, PASSWORD).encode("latin-1")  # type: ignore[attr-defined]


def test_secrets_stay_out_of_repr() -> None:
    a = adapter()
    assert PASSWORD not in repr(a.client) and PASSWORD not in repr(vars(a.client).get("base"))


@responses.activate
def test_documents_are_parsed_from_1c_entities() -> None:
    responses.get(url_of(INVOICES), json=payload("invoices_page1.json"))
    a = adapter()
    first, deleted = a.documents_page(a.entities["invoice"], datetime(2024, 5, 1))
    assert (first.document, first.number, first.amount, first.posted, first.counts) == (
        "invoice",
        "ТД00-000123",
        120000.5,
        True,
        True,
    )
    assert first.date == datetime(2024, 5, 14, 10, 15) and first.version == "AAAAAAAAB9I="
    assert first.counterparty_ref == "8a3d2f10-0b99-11ef-8b8e-00155d010a01"
    assert first.basis_ref == "c2e0a1b4-0c20-11ef-8b8e-00155d010a01"
    assert a.currency_code(first) == "RUB"
    assert deleted.deleted and not deleted.counts
    assert a.to_utc(first.date) == datetime(2024, 5, 14, 7, 15, tzinfo=UTC)  # Moscow wall time
    assert a.to_local(datetime(2024, 5, 14, 7, 15, tzinfo=UTC)) == first.date


@responses.activate
def test_annulled_invoice_and_foreign_currency() -> None:
    responses.get(url_of(INVOICES), json=payload("invoices_page2.json"))
    a = adapter(currencies={"3d3e1c52-0b99-11ef-8b8e-00155d010a01": "USD"})
    (doc,) = a.documents_page(a.entities["invoice"], datetime(2024, 5, 1))
    assert doc.annulled and not doc.counts and doc.counterparty_ref == ""
    assert a.currency_code(doc) == "USD"


@responses.activate
def test_payment_rows_name_the_invoice_and_order() -> None:
    responses.get(url_of(PAYMENTS), json=payload("payment.json"))
    a = adapter()
    (doc,) = a.documents_page(a.entities["payment"], datetime(2024, 5, 1))
    assert doc.document == "payment" and doc.amount == 60000
    assert doc.invoices == (("5f1b6a4e-0c21-11ef-8b8e-00155d010a01", 60000.0),)
    assert doc.orders == ("c2e0a1b4-0c20-11ef-8b8e-00155d010a01",)
    assert doc.texts == ("Оплата по счету № ТД00-000123 от 14.05.2024, в т.ч. НДС 20%",)


@responses.activate
def test_payments_for_invoice_filter_composite_with_cast_and_reference_with_guid() -> None:
    ref = "5f1b6a4e-0c21-11ef-8b8e-00155d010a01"
    responses.get(url_of(f"{PAYMENTS}_РасшифровкаПлатежа"), json=payload("payment_rows.json"))
    responses.get(url_of("Document_ПриходныйКассовыйОрдер_РасшифровкаПлатежа"), json={"value": []})
    body = payload("payment.json")["value"][0]
    responses.get(url_of(f"{PAYMENTS}(guid'9d0e1f2a-0c22-11ef-8b8e-00155d010a01')"), json=body)
    found = adapter().payments_for_invoice(ref)
    assert [(d.number, amount) for d, amount in found] == [("ТД00-000077", 60000.0)]
    assert f"$filter=ОснованиеПлатежа eq cast(guid'{ref}', '{INVOICES}')" in query_of(responses.calls[0])

    responses.reset()
    acc = "Document_ПоступлениеНаРасчетныйСчет"
    responses.get(url_of(f"{acc}_РасшифровкаПлатежа"), json={"value": []})
    assert adapter(profile="accounting_3").payments_for_invoice(ref) == []
    assert f"$filter=СчетНаОплату_Key eq guid'{ref}'" in query_of(responses.calls[0])


@responses.activate
def test_paging_follows_top_and_skip_until_a_short_page() -> None:
    page1, page2 = payload("invoices_page1.json"), payload("invoices_page2.json")
    responses.get(url_of(INVOICES), json=page1)
    responses.get(url_of(INVOICES), json=page2)
    rows = list(client().iterate(INVOICES, filter="Posted eq true", page_size=2))
    assert [r["Number"] for r in rows] == ["ТД00-000123", "ТД00-000124", "ТД00-000125"]
    queries = [query_of(c) for c in responses.calls]
    assert "$top=2" in queries[0] and "$skip" not in queries[0]
    assert "$top=2" in queries[1] and "$skip=2" in queries[1]


@responses.activate
def test_counterparty_read_and_cached_for_the_run() -> None:
    ref = "8a3d2f10-0b99-11ef-8b8e-00155d010a01"
    responses.get(url_of(f"{PARTIES}(guid'{ref}')"), json=payload("counterparty.json"))
    a = adapter()
    party = a.counterparty(ref)
    assert party is not None and (party.name, party.inn, party.kpp) == ("Ромашка ООО", "7701234567", "770101001")
    assert a.counterparty(ref.upper()) == party and len(responses.calls) == 1
    a.begin_run()
    a.counterparty(ref)
    assert len(responses.calls) == 2
    assert a.counterparty("00000000-0000-0000-0000-000000000000") is None


# --- errors -----------------------------------------------------------------------------------------


@responses.activate
def test_not_found_envelope_is_typed_with_1c_code_and_message() -> None:
    responses.get(
        url_of(f"{INVOICES}(guid'11111111-1111-1111-1111-111111111111')"),
        json=payload("error_not_found.json"),
        status=404,
    )
    with pytest.raises(NotFoundError) as err:
        client().get(f"{INVOICES}(guid'11111111-1111-1111-1111-111111111111')")
    assert err.value.code == "9" and err.value.description == "Объект не найден" and err.value.status == 404
    assert len(responses.calls) == 1  # not retried
    assert adapter().get_document("invoice", "11111111-1111-1111-1111-111111111111") is None


@responses.activate
def test_xml_auth_error_is_auth_error_without_the_password() -> None:
    responses.get(
        url_of(INVOICES), body=payload("error_auth.xml"), status=401, content_type="application/xml;charset=utf-8"
    )
    with pytest.raises(AuthError) as err:
        client().collection(INVOICES)
    assert err.value.code == "0" and "аутентификации" in (err.value.description or "")
    assert PASSWORD not in str(err.value) and len(responses.calls) == 1


@responses.activate
def test_bad_filter_is_fatal_and_version_conflict_is_its_own_type() -> None:
    responses.get(url_of(INVOICES), json=payload("error_filter.json"), status=400)
    with pytest.raises(FatalError) as err:
        client().collection(INVOICES, filter="Контрагент_Key eq 'x'")
    assert err.value.code == "14" and not isinstance(err.value, RetriableError)
    responses.patch(
        url_of(f"{PARTIES}(guid'8a3d2f10-0b99-11ef-8b8e-00155d010a01')"), json=payload("error_version.json"), status=412
    )
    with pytest.raises(VersionConflict):
        client().request(
            "PATCH",
            f"{PARTIES}(guid'8a3d2f10-0b99-11ef-8b8e-00155d010a01')",
            json_body={},
            headers={"If-Match": "AAAAAAAACBA="},
            idempotent=False,
        )


@responses.activate
def test_internal_error_and_html_503_are_retried_then_succeed() -> None:
    responses.get(url_of(INVOICES), json=payload("error_internal.json"), status=500)
    responses.get(
        url_of(INVOICES),
        body="<html><body><h1>503 Service Unavailable</h1></body></html>",
        status=503,
        content_type="text/html",
    )
    responses.get(url_of(INVOICES), json=payload("invoices_page2.json"))
    assert len(client().collection(INVOICES)) == 1
    assert len(responses.calls) == 3


@responses.activate
def test_reads_give_up_after_max_attempts_with_a_retriable_error() -> None:
    responses.get(url_of(INVOICES), json=payload("error_internal.json"), status=500)
    with pytest.raises(RetriableError) as err:
        client(max_attempts=2).collection(INVOICES)
    assert err.value.code == "-1" and len(responses.calls) == 2


@responses.activate
def test_connection_reset_on_read_is_retried() -> None:
    responses.get(url_of(INVOICES), body=requests.ConnectionError("Connection reset by peer"))
    responses.get(url_of(INVOICES), json={"value": []})
    assert client().collection(INVOICES) == []


@responses.activate
def test_write_with_lost_answer_is_ambiguous_and_not_resent() -> None:
    responses.post(url_of(PARTIES), json=payload("error_internal.json"), status=500)
    with pytest.raises(AmbiguousWriteError):
        client().create(PARTIES, {"Description": "Лютик"})
    assert len(responses.calls) == 1


def test_interrupt_cuts_retry_waits_short() -> None:
    c = OneCClient(BASE, LOGIN, PASSWORD, backoff_initial=30, backoff_max=30, max_attempts=5)
    with responses.RequestsMock() as mock:
        mock.get(url_of(INVOICES), json=payload("error_internal.json"), status=500)
        threading.Timer(0.2, c.interrupt).start()
        started = time.monotonic()
        with pytest.raises(RetriableError):
            c.collection(INVOICES)
        assert time.monotonic() - started < 5


# --- writes -----------------------------------------------------------------------------------------


@responses.activate
def test_create_counterparty_posts_fields_and_marker() -> None:
    responses.post(url_of(PARTIES), json=payload("counterparty_created.json"), status=201)
    cmd = CreateCounterparty(
        deal_id="42",
        name="Лютик",
        full_name="ООО «Лютик»",
        inn="7809876543",
        kpp="780901001",
        phone="+7 812 555-01-02",
        email="info@lutik.ru",
    )
    result = adapter().execute(cmd, "crmc:0123456789abcdef")
    assert result.remote_id == "0f1e2d3c-0c30-11ef-8b8e-00155d010a01"
    body = json.loads(responses.calls[0].request.body or b"")
    assert body["Description"] == "Лютик" and body["НаименованиеПолное"] == "ООО «Лютик»"
    assert body["ИНН"] == "7809876543" and body["КПП"] == "780901001"
    assert "Телефон: +7 812 555-01-02" in body["Комментарий"] and "E-mail: info@lutik.ru" in body["Комментарий"]
    assert body["Комментарий"].endswith("[crmc:0123456789abcdef]")
    assert "КонтактнаяИнформация" not in body  # contact kinds not configured


@responses.activate
def test_create_counterparty_with_configured_contact_kinds() -> None:
    responses.post(url_of(PARTIES), json=payload("counterparty_created.json"), status=201)
    kind = "e1f2a3b4-0b99-11ef-8b8e-00155d010a01"
    adapter(contact_kinds={"phone": kind}).execute(CreateCounterparty(deal_id="1", name="X", phone="+7 1"), "crmc:x")
    body = json.loads(responses.calls[0].request.body or b"")
    assert body["КонтактнаяИнформация"] == [
        {"LineNumber": "1", "Тип": "Телефон", "Вид_Key": kind, "Представление": "+7 1"}
    ]


@responses.activate
def test_find_written_by_marker_then_by_inn() -> None:
    responses.get(url_of(PARTIES), json={"value": [{"Ref_Key": "0f1e2d3c-0c30-11ef-8b8e-00155d010a01"}]})
    cmd = CreateCounterparty(deal_id="42", name="Лютик", inn="7809876543", kpp="780901001")
    found = adapter().find_written(cmd, "crmc:0123456789abcdef")
    assert found is not None and found.reconciled and found.remote_id == "0f1e2d3c-0c30-11ef-8b8e-00155d010a01"
    assert "$filter=substringof('crmc:0123456789abcdef', Комментарий)" in query_of(responses.calls[0])
    responses.reset()
    responses.get(url_of(PARTIES), json={"value": []})
    responses.get(url_of(PARTIES), json={"value": [{"Ref_Key": "0f1e2d3c-0c30-11ef-8b8e-00155d010a01"}]})
    assert adapter().find_written(cmd, "crmc:0123456789abcdef") is not None
    assert "ИНН eq '7809876543' and DeletionMark eq false and КПП eq '780901001'" in query_of(responses.calls[1])


def test_counterparty_command_round_trips_through_the_outbox_payload() -> None:
    cmd = CreateCounterparty(deal_id="42", name="Лютик", inn="7809876543")
    assert command_from_payload(cmd.kind, cmd.to_payload()) == cmd


def test_a_base_keeps_no_deals_and_takes_only_counterparties_and_orders() -> None:
    a = adapter()
    assert not isinstance(a, DealSource) and not isinstance(a, WebhookReceiver)
    assert OneCAdapter.accepts(CreateCounterparty) and OneCAdapter.accepts(CreateOrder)
    assert not OneCAdapter.accepts(CreateTask)
    with pytest.raises(FatalError):
        a.execute(CreateTask(deal_id="1", title="x"), "m")


# --- settings and profiles ------------------------------------------------------------------------------


def test_profiles_and_overrides() -> None:
    trade = build_entities("trade_11", {})
    assert trade["invoice"].set == INVOICES and trade["order"].status == "Статус"
    acc = build_entities("accounting_3", {})
    assert acc["invoice"].set == "Document_СчетНаОплатуПокупателю" and "order" not in acc
    assert acc["payment"].counterparty == "Контрагент"  # composite in Accounting
    custom = build_entities(
        "trade_11", {"cash": None, "invoice": {"amount": "СуммаСНДС"}, "order": {"set": "Document_ЗаказПокупателя"}}
    )
    assert "cash" not in custom and custom["invoice"].amount == "СуммаСНДС"
    assert custom["order"].set == "Document_ЗаказПокупателя" and custom["order"].status == "Статус"
    with pytest.raises(ValueError):
        build_entities("trade_11", {"invoice": {"nonsense": "x"}})
    with pytest.raises(ValueError):
        build_entities("accounting_3", {"order": {"status": "Статус"}})  # no set to start from


@pytest.mark.parametrize(
    "bad, where",
    [
        ({"profile": "unf"}, "profile"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"link": [{"by": "telepathy"}]}, "link.0"),
        ({"link": [{"by": "comment", "pattern": "сделка \\d+"}]}, "link.0"),
        ({"link": [{"by": "inn"}]}, "link.0"),
        ({"link": [{"by": "deal_field", "field": "UF_X", "match": "maybe"}]}, "link.0"),
        ({"entities": {"invoice": {"bogus": 1}}}, "entities"),
        ({"deal_crm": "Not A Name"}, "deal_crm"),
    ],
)
def test_settings_refuse_bad_blocks(bad: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as err:
        settings(**bad)
    assert where in err.value.messages


def test_settings_defaults() -> None:
    s = settings()
    assert s.poll_every == 60 and s.poll_overlap == 600 and s.profile == "trade_11"
    assert s.link[0]["by"] == "comment" and s.shipment_statuses == ("КОтгрузке",)
