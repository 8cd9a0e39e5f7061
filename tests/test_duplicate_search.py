"""The CRMs' duplicate searches against their documented envelopes (``responses``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import responses

from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.client import Bitrix24Client
from adapters.bitrix24.settings import Bitrix24Settings
from adapters.contracts import DuplicateSearch
from adapters.pipedrive.adapter import PipedriveAdapter
from adapters.pipedrive.client import PipedriveClient
from adapters.pipedrive.settings import PipedriveSettings
from domain import Deal
from domain.duplicates import Duplicate

PAYLOADS = Path(__file__).parent / "payloads"
B24 = "https://x.bitrix24.ru/rest/1/code/"
PD = "https://acme.pipedrive.com"


def _payload(path: str) -> Any:
    return json.loads((PAYLOADS / path).read_text(encoding="utf-8"))


def _b24() -> Bitrix24Adapter:
    client = Bitrix24Client(B24, rate=1000, burst=1000, backoff_initial=0.001, backoff_max=0.01)  # type: ignore[arg-type]
    return Bitrix24Adapter("b24", Bitrix24Settings(webhook_url=B24, application_token="t" * 8), client=client)


def _pd() -> PipedriveAdapter:
    client = PipedriveClient(PD, "secret-api-token-42", rate=1000, burst=1000, backoff_initial=0.001, backoff_max=5)
    settings = PipedriveSettings(
        base_url=PD, api_token="secret-api-token-42", webhook_user="h", webhook_password="p" * 8
    )
    return PipedriveAdapter("pd", settings, client=client)


def test_both_crms_can_search_duplicates() -> None:
    assert issubclass(Bitrix24Adapter, DuplicateSearch) and issubclass(PipedriveAdapter, DuplicateSearch)


@responses.activate
def test_bitrix24_finds_clients_by_phone_then_their_other_deals() -> None:
    responses.post(B24 + "crm.duplicate.findbycomm.json", json=_payload("bitrix24/duplicate_findbycomm.json"))
    responses.post(
        B24 + "crm.deal.list.json",
        json={"result": [{"ID": "7", "CONTACT_ID": "15"}, {"ID": "3", "CONTACT_ID": "12"}], "total": 2},
    )
    responses.post(B24 + "crm.deal.list.json", json={"result": [{"ID": "9", "COMPANY_ID": "4"}], "total": 1})
    deal = Deal(crm="b24", id="7", title="x", stage="NEW", fields={"CONTACT_ID": "15", "COMPANY_ID": "0"})
    found = _b24().find_duplicates(deal, "phone", ["+79161234567"])
    assert found == [
        Duplicate("contact", "12", "phone", "+79161234567"),  # 15 is the deal's own contact
        Duplicate("company", "4", "phone", "+79161234567"),
        Duplicate("deal", "3", "phone", "+79161234567"),  # the deal itself is left out
        Duplicate("deal", "9", "phone", "+79161234567"),
    ]
    sent = json.loads(responses.calls[0].request.body or b"{}")
    assert sent == {"type": "PHONE", "values": ["+79161234567"]}
    assert json.loads(responses.calls[1].request.body or b"{}")["filter"] == {"CONTACT_ID": ["12"]}


@responses.activate
def test_bitrix24_reads_nothing_found_as_an_empty_array() -> None:
    responses.post(B24 + "crm.duplicate.findbycomm.json", json=_payload("bitrix24/duplicate_findbycomm_none.json"))
    deal = Deal(crm="b24", id="7", title="x", stage="NEW")
    assert _b24().find_duplicates(deal, "email", ["ivan@romashka.ru"]) == []
    assert len(responses.calls) == 1


@responses.activate
def test_bitrix24_finds_an_inn_in_the_requisites() -> None:
    responses.post(
        B24 + "crm.requisite.list.json",
        json={
            "result": [
                {"ID": "1", "ENTITY_TYPE_ID": "4", "ENTITY_ID": "8"},
                {"ID": "2", "ENTITY_TYPE_ID": "3", "ENTITY_ID": "2"},
            ],
            "total": 2,
        },
    )
    responses.post(B24 + "crm.deal.list.json", json={"result": [], "total": 0})
    responses.post(B24 + "crm.deal.list.json", json={"result": [], "total": 0})
    deal = Deal(crm="b24", id="7", title="x", stage="NEW")
    assert _b24().find_duplicates(deal, "inn", ["7707083893"]) == [
        Duplicate("company", "8", "inn", "7707083893"),
        Duplicate("contact", "2", "inn", "7707083893"),
    ]
    assert json.loads(responses.calls[0].request.body or b"{}")["filter"] == {"RQ_INN": "7707083893"}


@responses.activate
def test_pipedrive_searches_persons_by_national_digits_and_keeps_the_same_number_only() -> None:
    responses.get(PD + "/api/v2/persons/search", json=_payload("pipedrive/persons_search.json"))
    responses.get(
        PD + "/api/v2/deals",
        json={"success": True, "data": [{"id": 5}, {"id": 11}], "additional_data": {"next_cursor": None}},
    )
    deal = Deal(crm="pd", id="11", title="x", stage="1", fields={"person_id": 40})
    found = _pd().find_duplicates(deal, "phone", ["+79161234567"])
    assert found == [
        Duplicate("person", "31", "phone", "+79161234567"),
        Duplicate("deal", "5", "phone", "+79161234567"),
    ]
    query = parse_qs(urlparse(responses.calls[0].request.url or "").query)
    assert query["term"] == ["9161234567"] and query["fields"] == ["phone"] and query["exact_match"] == ["false"]
    assert parse_qs(urlparse(responses.calls[1].request.url or "").query)["person_id"] == ["31"]


@responses.activate
def test_pipedrive_finds_an_inn_in_organizations_custom_fields() -> None:
    item = {
        "id": 7,
        "type": "organization",
        "name": "Ромашка",
        "address": None,
        "visible_to": 3,
        "owner": {"id": 1},
        "custom_fields": ["7707083893"],
    }
    responses.get(
        PD + "/api/v2/organizations/search",
        json={
            "success": True,
            "data": {"items": [{"result_score": 1, "item": item}]},
            "additional_data": {"next_cursor": None},
        },
    )
    responses.get(PD + "/api/v2/deals", json={"success": True, "data": [], "additional_data": {"next_cursor": None}})
    deal = Deal(crm="pd", id="11", title="x", stage="1", fields={"org_id": 9})
    assert _pd().find_duplicates(deal, "inn", ["7707083893"]) == [Duplicate("organization", "7", "inn", "7707083893")]
    query = parse_qs(urlparse(responses.calls[0].request.url or "").query)
    assert query["fields"] == ["custom_fields"] and query["exact_match"] == ["true"]


# --- the simulators answer the same calls -------------------------------------------------------


def test_the_bitrix24_simulator_finds_by_normalised_phone_and_answers_none_as_an_array() -> None:
    from simulators.bitrix24 import Bitrix24Simulator

    sim = Bitrix24Simulator()
    contact = sim.add_client("CONTACT", "Иван", phones=("+7 (916) 123-45-67",), emails=("Ivan@Romashka.ru",))
    company = sim.add_client("COMPANY", "Ромашка", inn="7707083893")
    web = sim.app.test_client()
    url = sim.webhook_base + "crm.duplicate.findbycomm.json"
    found = web.post(url, json={"type": "PHONE", "values": ["89161234567"]}).get_json()
    assert found["result"] == {"CONTACT": [int(contact)]}
    by_mail = web.post(url, json={"type": "EMAIL", "values": ["ivan@romashka.ru"]}).get_json()
    assert by_mail["result"] == {"CONTACT": [int(contact)]}
    assert web.post(url, json={"type": "PHONE", "values": ["+79990000000"]}).get_json()["result"] == []
    refused = web.post(url, json={"type": "FAX", "values": ["1"]})
    assert refused.status_code == 400 and refused.get_json()["error"] == "ERROR_ARGUMENT"
    rows = web.post(
        sim.webhook_base + "crm.requisite.list.json", json={"filter": {"RQ_INN": "7707083893"}, "select": ["ENTITY_ID"]}
    ).get_json()["result"]
    assert rows == [{"ID": "1", "ENTITY_ID": company}]


def test_the_pipedrive_simulator_searches_persons_and_organizations() -> None:
    from simulators.pipedrive import PipedriveSimulator

    sim = PipedriveSimulator(api_token="pd-token-0123456789")
    person = sim.add_person("Иван", phones=("8 (916) 123-45-67",), emails=("ivan@romashka.ru",))
    org = sim.add_organization("Ромашка", {"a" * 40: "7707083893"})
    web = sim.app.test_client()
    headers = {"x-api-token": "pd-token-0123456789"}
    hit = web.get("/api/v2/persons/search?term=9161234567&fields=phone", headers=headers).get_json()
    assert [i["item"]["id"] for i in hit["data"]["items"]] == [person]
    orgs = web.get(
        "/api/v2/organizations/search?term=7707083893&fields=custom_fields&exact_match=true", headers=headers
    ).get_json()
    assert [i["item"]["id"] for i in orgs["data"]["items"]] == [org]
    short = web.get("/api/v2/persons/search?term=9", headers=headers)
    assert short.status_code == 400
