"""Scheduled rules over loopback: reactivation before holidays, once per holiday, clock moved."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from connector.config import load_config_text
from connector.runtime import Runtime
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import TOKEN

MSK = ZoneInfo("Europe/Moscow")
CONFIG = """
storage: {{url: "{db_url}"}}
calendar: {{country: RU, timezone: Europe/Moscow}}
crms:
  b24: {{type: bitrix24, webhook_url: "{b24_url}", application_token: "${{B24_TOKEN}}", rate: 50}}
rules:
  - name: reactivation
    crm: b24
    on: [schedule]
    schedule: "0 10 * * mon-fri"
    when: {{outcome: won, holiday_within: 7}}
    once_per: holiday
    do:
      - create_task:
          title: "Поздравить с праздником «{{{{ holiday.name }}}}»: {{{{ deal.title }}}}"
          responsible: responsible
"""


class Clock:
    now = datetime.now(MSK)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(db_url, monkeypatch) -> Iterator[tuple[Bitrix24Simulator, Runtime, Clock]]:  # type: ignore[no-untyped-def]
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50)
    simulator.add_user("Иван")
    server = simulator.serve()
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    clock = Clock()
    rt = Runtime(
        load_config_text(CONFIG.format(db_url=db_url, b24_url=server.base_url + simulator.webhook_base)), clock=clock
    )
    yield simulator, rt, clock
    rt.stop()
    server.stop()
    simulator.close()


def _drain(rt: Runtime) -> None:
    while rt.worker.tick():
        pass
    while rt.dispatcher.tick():
        pass


def test_reactivation_before_holiday_once_per_holiday(world) -> None:  # type: ignore[no-untyped-def]
    simulator, rt, clock = world
    client = simulator.add_deal({"TITLE": "Постоянный клиент", "STAGE_ID": "WON", "ASSIGNED_BY_ID": "2"})
    prospect = simulator.add_deal({"TITLE": "Новый лид", "STAGE_ID": "NEW", "ASSIGNED_BY_ID": "2"})
    rt.poll("b24")
    _drain(rt)  # the connector now knows both deals

    clock.now = datetime(2026, 12, 14, 10, 0, tzinfo=MSK)  # no holiday within a week
    assert rt.run_schedule("reactivation") == 0  # the condition, on what the connector knows, holds for none
    _drain(rt)
    assert simulator.tasks_for_deal(client) == []

    clock.now = datetime(2026, 12, 28, 10, 0, tzinfo=MSK)  # New Year holidays within a week
    assert rt.run_schedule("reactivation") == 1  # only the won deal is a candidate
    assert rt.run_schedule("reactivation") == 0  # the same run twice queues nothing
    _drain(rt)
    clock.now = datetime(2026, 12, 29, 10, 0, tzinfo=MSK)  # the next day's run: same holiday
    rt.run_schedule("reactivation")
    _drain(rt)
    [task] = simulator.tasks_for_deal(client)
    assert task["TITLE"] == "Поздравить с праздником «Новогодние каникулы»: Постоянный клиент"
    assert simulator.tasks_for_deal(prospect) == []


def test_schedule_needs_a_valid_cron(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from connector.config import ConfigError

    monkeypatch.setenv("B24_TOKEN", TOKEN)
    bad = CONFIG.format(db_url="sqlite://", b24_url="https://p.bitrix24.ru/rest/1/c/").replace(
        '"0 10 * * mon-fri"', '"every morning"'
    )
    with pytest.raises(ConfigError, match="schedule: not a cron expression"):
        load_config_text(bad)


REPORT = """
reports:
  - name: daily
    crm: b24
    schedule: "0 19 * * mon-fri"
    to: responsible
    title: "Итоги дня {{{{ now | date('%d.%m.%Y') }}}}"
    text: >-
      Новых: {{{{ stats.new }}}}; продаж: {{{{ stats.won }}}} на {{{{ stats.won_amount }}}};
      в работе: {{{{ stats.open }}}}
"""


def test_daily_report_per_manager_once_a_day(db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50)
    for name in ("Иван", "Олег"):
        simulator.add_user(name)
    server = simulator.serve()
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    text = CONFIG.format(db_url=db_url, b24_url=server.base_url + simulator.webhook_base).split("rules:")[0]
    rt = Runtime(load_config_text(text + REPORT.format()))
    try:
        simulator.add_deal({"TITLE": "A", "STAGE_ID": "NEW", "ASSIGNED_BY_ID": "2", "OPPORTUNITY": "100"})
        simulator.add_deal({"TITLE": "B", "STAGE_ID": "WON", "ASSIGNED_BY_ID": "2", "OPPORTUNITY": "2500.50"})
        simulator.add_deal({"TITLE": "C", "STAGE_ID": "NEW", "ASSIGNED_BY_ID": "3"})
        rt.poll("b24")
        _drain(rt)
        assert rt.run_report("daily") == 2
        assert rt.run_report("daily") == 0  # once a day
        _drain(rt)
        reports = {t["RESPONSIBLE_ID"]: t for t in simulator.tasks.values() if t["TITLE"].startswith("Итоги дня")}
        assert set(reports) == {"2", "3"}
        assert reports["2"]["DESCRIPTION"].startswith("Новых: 2; продаж: 1 на 2500.50; в работе: 1")
        assert reports["3"]["DESCRIPTION"].startswith("Новых: 1; продаж: 0 на 0; в работе: 1")
        assert not reports["2"].get("UF_CRM_TASK")  # bound to no deal
    finally:
        rt.stop()
        server.stop()
        simulator.close()
