"""The calls a connection test makes, answered by the simulators as the real APIs document them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from simulators.bitrix24 import Bitrix24Simulator
from simulators.onec import OneCSimulator
from simulators.pipedrive import PipedriveSimulator
from simulators.server import SimulatorServer


@pytest.fixture
def b24() -> Iterator[tuple[Bitrix24Simulator, str]]:
    sim = Bitrix24Simulator()
    server = sim.serve()
    yield sim, server.base_url + sim.webhook_base
    server.stop()
    sim.close()


def test_bitrix24_scope_lists_the_webhooks_scopes_or_all_with_full(b24: tuple[Bitrix24Simulator, str]) -> None:
    sim, url = b24
    body = requests.post(f"{url}scope.json", json={}, timeout=5).json()
    assert body["result"] == ["crm", "task", "user"] and "time" in body
    sim.scopes = ["crm"]
    assert requests.post(f"{url}scope.json", json={}, timeout=5).json()["result"] == ["crm"]
    full = requests.post(f"{url}scope.json", json={"full": "true"}, timeout=5).json()["result"]
    assert {"crm", "task", "user", "im", "bizproc"} <= set(full)


def test_bitrix24_deal_fields_describe_standard_and_user_fields(b24: tuple[Bitrix24Simulator, str]) -> None:
    sim, url = b24
    sim.add_deal_user_field("UF_CRM_ADDRESS", "Адрес")
    fields = requests.post(f"{url}crm.deal.fields.json", json={}, timeout=5).json()["result"]
    assert fields["TITLE"]["isRequired"] is True and fields["TITLE"]["title"] == "Name"
    assert fields["ID"] == {
        "type": "integer",
        "isRequired": False,
        "isReadOnly": True,
        "isImmutable": False,
        "isMultiple": False,
        "isDynamic": False,
        "title": "ID",
    }
    address = fields["UF_CRM_ADDRESS"]
    assert address["isDynamic"] is True and address["title"] == "UF_CRM_ADDRESS"
    assert address["listLabel"] == address["formLabel"] == "Адрес"


def test_bitrix24_stage_list_has_every_pipeline(b24: tuple[Bitrix24Simulator, str]) -> None:
    _, url = b24
    rows = requests.post(f"{url}crm.status.list.json", json={}, timeout=5).json()["result"]
    entities = {r["ENTITY_ID"] for r in rows}
    assert {"DEAL_STAGE", "DEAL_STAGE_1"} <= entities


def test_pipedrive_users_me_says_the_apps_access() -> None:
    sim = PipedriveSimulator(api_token="tok-long-enough")
    server = SimulatorServer(sim.app).start()
    try:
        me = requests.get(
            f"{server.base_url}/v1/users/me", headers={"x-api-token": "tok-long-enough"}, timeout=5
        ).json()["data"]
        assert me["id"] == sim.user_id and me["company_domain"] == "sim"
        assert me["access"] == [{"app": "sales", "admin": True, "permission_set_id": "sim-sales-admin"}]
    finally:
        server.stop()
        sim.close()


def test_onec_metadata_lists_the_entity_sets() -> None:
    from adapters.onec.adapter import entity_sets

    sim = OneCSimulator()
    server = sim.serve()
    try:
        import base64

        login = base64.b64encode("Интеграция:secret".encode()).decode()
        text = requests.get(
            f"{server.base_url}{sim.base_path}/$metadata", headers={"Authorization": f"Basic {login}"}, timeout=5
        ).text
        assert "Catalog_Контрагенты" in entity_sets(text)
    finally:
        server.stop()
