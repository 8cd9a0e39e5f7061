"""End to end on the Bitrix24 simulator: a repeat client found by phone, a mistyped phone flagged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector.config import load_config_text
from connector.runtime import Runtime
from simulators import SimulatorServer
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import CONFIG, TOKEN, wait_for

pytestmark = pytest.mark.slow  # real threads and HTTP

RULE = """
  - name: repeat-client
    crm: b24
    on: [deal.created]
    when: {{pipeline: "0"}}
    do:
      - find_duplicates:
          phone: UF_CRM_PHONE
          comment: "Повторный клиент: {{% for d in duplicates %}}{{{{ d.kind }}}} {{{{ d.id }}}} {{% endfor %}}"
          task: {{title: "Проверить дубль: {{{{ deal.title }}}}", responsible: responsible, due: 1 working day}}
          invalid:
            comment: "Ошибка в телефоне: {{{{ invalid | join('; ') }}}}"
"""


@pytest.fixture
def sim() -> Iterator[tuple[Bitrix24Simulator, SimulatorServer]]:
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50)
    simulator.add_user("Иван")
    server = simulator.serve()
    yield simulator, server
    server.stop()
    simulator.close()


@pytest.fixture
def runtime(sim, db_url, monkeypatch) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    simulator, server = sim
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    text = (CONFIG + RULE).format(db_url=db_url, b24_url=server.base_url + simulator.webhook_base)
    rt = Runtime(load_config_text(text))
    yield rt
    rt.stop()


def _comments(simulator: Bitrix24Simulator, deal_id: str) -> list[str]:
    return [c["COMMENT"] for c in simulator.comments.values() if c["ENTITY_ID"] == deal_id]


def test_a_repeat_client_is_found_by_phone_and_a_wrong_phone_flagged(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    contact = simulator.add_client("CONTACT", "Иван Петров", phones=("+7 916 123-45-67",))
    earlier = simulator.add_deal({"TITLE": "Ромашка, весна", "CATEGORY_ID": "0", "CONTACT_ID": contact})
    simulator.add_client("CONTACT", "Однофамилец", phones=("+7 916 765-43-21",))
    runtime.start()
    simulator.handler_url = f"{runtime.intake_url}/hooks/bitrix24/b24"
    repeat = simulator.add_deal(
        {"TITLE": "Ромашка, зима", "CATEGORY_ID": "0", "ASSIGNED_BY_ID": "2", "UF_CRM_PHONE": "8 (916) 123-45-67"}
    )
    typo = simulator.add_deal(
        {"TITLE": "Новая заявка", "CATEGORY_ID": "0", "ASSIGNED_BY_ID": "2", "UF_CRM_PHONE": "8 (916) 123-45-6"}
    )
    assert wait_for(lambda: bool(_comments(simulator, repeat) and _comments(simulator, typo)))
    assert wait_for(lambda: len(simulator.tasks_for_deal(repeat)) == 1)
    (comment,) = _comments(simulator, repeat)
    assert comment.startswith(f"Повторный клиент: contact {contact} deal {earlier}\n")  # then the write's marker
    assert simulator.tasks_for_deal(repeat)[0]["TITLE"] == "Проверить дубль: Ромашка, зима"
    (flagged,) = _comments(simulator, typo)
    assert flagged.startswith("Ошибка в телефоне: «8 (916) 123-45-6» is not a valid phone number: no such number\n")
    assert simulator.tasks_for_deal(typo) == []  # nothing found for a number that is not one
    assert simulator.calls["crm.duplicate.findbycomm"] == 1  # only the valid number was searched
