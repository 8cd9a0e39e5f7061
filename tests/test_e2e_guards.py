"""End to end on the Bitrix24 simulator: a stage guard returns a deal once, and stops."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from connector.config import load_config_text
from connector.runtime import Runtime
from connector.storage.models import InboxRow, OutboxRow
from domain import InboxStatus
from simulators import SimulatorServer
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import CONFIG, TOKEN, wait_for

pytestmark = pytest.mark.slow  # real threads and HTTP

RULE = """
  - name: protocol-before-invoice
    crm: b24
    on: [deal.stage_changed]
    once_per: event
    do:
      - guard_stage:
          stage: PREPAYMENT_INVOICE
          require: [UF_CRM_PROTOCOL]
          order: [NEW, PREPARATION, PREPAYMENT_INVOICE, EXECUTING]
          comment: "Возвращено на {{{{ guard.from }}}}: {{{{ guard.reason }}}}"
          task: {{title: "Оформите протокол встречи", responsible: responsible, due: 1 working day}}
  # Moving back is not exempt here (no order): the first guard's return would enter
  # PREPARATION without a brief, and the two would send the deal to and fro for ever.
  - name: brief-before-preparation
    crm: b24
    on: [deal.stage_changed]
    once_per: event
    do:
      - guard_stage:
          stage: PREPARATION
          require: [UF_CRM_BRIEF]
          comment: "Нет брифа"
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


def _settled(rt: Runtime) -> bool:
    with rt.store.sessions() as s:
        return not s.scalar(select(func.count(InboxRow.id)).where(InboxRow.status == InboxStatus.NEW))


def _moves(rt: Runtime) -> int:
    with rt.store.sessions() as s:
        return int(s.scalar(select(func.count(OutboxRow.id)).where(OutboxRow.command == "update_deal")) or 0)


def _comments(simulator: Bitrix24Simulator, deal_id: str) -> list[str]:
    return [c["COMMENT"] for c in simulator.comments.values() if c["ENTITY_ID"] == deal_id]


def test_a_stage_guard_returns_a_deal_once_and_stops(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    runtime.start()
    simulator.handler_url = f"{runtime.intake_url}/hooks/bitrix24/b24"
    # Created in PREPARATION (before any guard saw it), with neither a brief nor a protocol.
    deal = simulator.add_deal({"TITLE": "Завод", "CATEGORY_ID": "0", "STAGE_ID": "PREPARATION", "ASSIGNED_BY_ID": "2"})
    assert wait_for(lambda: _settled(runtime) and bool(runtime.store.snapshots.updated_at("b24", [deal])))
    simulator.update_deal(deal, {"STAGE_ID": "PREPAYMENT_INVOICE"})  # no meeting protocol yet

    assert wait_for(lambda: simulator.deals[deal]["STAGE_ID"] == "PREPARATION" and bool(_comments(simulator, deal)))
    # The next change the connector sees (the return's own echo, a poll, an edit) must not
    # read the return as a new move into PREPARATION.
    simulator.update_deal(deal, {"TITLE": "Завод (уточнено)"})
    time.sleep(1.5)
    assert wait_for(lambda: _settled(runtime))
    assert simulator.deals[deal]["STAGE_ID"] == "PREPARATION"
    (comment,) = _comments(simulator, deal)
    assert comment.startswith("Возвращено на PREPARATION: не заполнено: UF_CRM_PROTOCOL")
    assert len(simulator.tasks_for_deal(deal)) == 1
    assert _moves(runtime) == 1

    # Filled in, the move is allowed and the guard stays quiet.
    simulator.update_deal(deal, {"UF_CRM_PROTOCOL": "протокол от 02.12", "STAGE_ID": "PREPAYMENT_INVOICE"})
    time.sleep(1.0)
    assert wait_for(lambda: _settled(runtime))
    assert simulator.deals[deal]["STAGE_ID"] == "PREPAYMENT_INVOICE"
    assert len(_comments(simulator, deal)) == 1 and _moves(runtime) == 1
