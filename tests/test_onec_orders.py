"""Customer orders written to 1C (seed 004: the order is created from the deal's card, not
retyped): the adapter against the 1C simulator, its OData service served over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest

from adapters.onec.adapter import OneCAdapter
from adapters.onec.settings import OneCSettings, OneCSettingsSchema
from domain import CreateOrder, command_from_payload
from domain.errors import FatalError
from simulators.onec import OneCSimulator

LOGIN, PASSWORD = "Интеграция", "secret"
ORDERS = "Document_ЗаказКлиента"
PARTIES = "Catalog_Контрагенты"
PARTNER = "5b1e2d3c-0c30-11ef-8b8e-00155d010a01"
MARKER = "crmc:0123456789abcdef"


@pytest.fixture
def world() -> Iterator[tuple[OneCSimulator, OneCAdapter]]:
    sim = OneCSimulator(clock=lambda: datetime(2026, 11, 25, 10, 0))
    server = sim.serve()
    settings = OneCSettingsSchema().load_settings(
        {
            "type": "onec",
            "base_url": f"{server.base_url}{sim.base_path}/",
            "username": LOGIN,
            "password": PASSWORD,
            "deal_crm": "b24",
            "backoff_initial": "1ms",
            "max_attempts": 2,
        }
    )
    assert isinstance(settings, OneCSettings)
    adapter = OneCAdapter("onec", settings)
    yield sim, adapter
    adapter.close()
    server.stop()


def order(**extra: str) -> CreateOrder:
    values = {
        "target": "onec",
        "inn": "7701234567",
        "counterparty": "Ромашка ООО",
        "amount": "120000.00",
        "ship_by": "2026-12-01",
        "comment": "Сделка #42: Кирпич. Город доставки: Тверь.",
        **extra,
    }
    return CreateOrder(deal_id="42", **values)


def test_order_names_the_client_by_inn_with_its_partner_and_carries_the_card(world) -> None:  # type: ignore[no-untyped-def]
    sim, adapter = world
    party = sim.insert(PARTIES, {"Description": "Ромашка ООО", "ИНН": "7701234567", "Партнер_Key": PARTNER})
    sim.insert(PARTIES, {"Description": "Ромашка ООО (старая)", "ИНН": "7701234567", "DeletionMark": True})
    result = adapter.execute(order(), MARKER)
    [made] = sim.data[ORDERS].values()
    assert result.remote_id == made["Ref_Key"]
    assert made["Контрагент_Key"] == party["Ref_Key"] and made["Партнер_Key"] == PARTNER
    assert made["СуммаДокумента"] == 120000 and str(made["ЖелаемаяДатаОтгрузки"]).startswith("2026-12-01T00:00:00")
    assert made["Комментарий"] == f"Сделка #42: Кирпич. Город доставки: Тверь.\n[{MARKER}]"
    assert not made["Posted"]  # agreeing and posting the order stays 1C's work
    # A retry after a lost answer finds this order by its marker instead of writing a second.
    found = adapter.find_written(order(), MARKER)
    assert found is not None and found.reconciled and found.remote_id == made["Ref_Key"]
    assert adapter.find_written(order(), "crmc:ffffffffffffffff") is None


def test_order_finds_the_client_by_name_when_the_card_has_no_inn(world) -> None:  # type: ignore[no-untyped-def]
    sim, adapter = world
    party = sim.insert(PARTIES, {"Description": "Ромашка ООО"})
    adapter.execute(order(inn="", amount="1 500,50", ship_by=""), MARKER)
    [made] = sim.data[ORDERS].values()
    assert made["Контрагент_Key"] == party["Ref_Key"] and made["СуммаДокумента"] == 1500.5


def test_order_without_its_client_in_1c_or_with_no_sum_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    sim, adapter = world
    with pytest.raises(FatalError, match="create it first"):
        adapter.execute(order(), MARKER)
    sim.insert(PARTIES, {"Description": "Ромашка ООО", "ИНН": "7701234567"})
    with pytest.raises(FatalError, match="not a number"):
        adapter.execute(order(amount="договорная"), MARKER)
    assert not sim.data[ORDERS]


def test_order_command_round_trips_through_the_outbox_payload() -> None:
    assert command_from_payload("create_order", order().to_payload()) == order()
    assert OneCAdapter.accepts(CreateOrder)


def test_create_order_must_name_a_base_that_takes_orders() -> None:
    from connector.config import ConfigError, load_config_text
    from tests.test_catalogue import ENV, EXAMPLES

    text = (EXAMPLES / "money-in-1c.yaml").read_text(encoding="utf-8")
    assert text.count("      - create_order:\n          in: onec\n") == 1
    with pytest.raises(ConfigError, match="cannot carry out create_order"):
        load_config_text(
            text.replace("      - create_order:\n          in: onec\n", "      - create_order:\n          in: b24\n"),
            ENV,
        )
