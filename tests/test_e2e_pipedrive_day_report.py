"""Seed 002's evening report end to end: examples/b2b-sales-pipedrive.yaml on the Pipedrive
simulator, on a fake clock in Kyiv. At the end of the working day each manager gets the day's
figures from Pipedrive in the seed's format (sales amount in UAH, sales, calls reached) and
the head of sales everyone's; a manager who does not send it (the task not marked done that
day) is named to the head of sales the next morning."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from connector.config import load_config_text
from connector.runtime import Runtime
from simulators import SimulatorServer
from simulators.pipedrive import PipedriveSimulator
from tests.example_world import EXAMPLES
from tests.helpers import Clock

KYIV = ZoneInfo("Europe/Kyiv")
TOKEN = "pd-day-report-token-0123456789"
PHONE = "a" * 36 + "0002"


@pytest.fixture
def world(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PipedriveSimulator, SimulatorServer, Runtime, Clock]]:
    monkeypatch.chdir(tmp_path)  # the example's reports write their CSV files under reports/
    clock = Clock(datetime(2026, 12, 2, 9, tzinfo=KYIV))  # a Wednesday
    simulator = PipedriveSimulator(api_token=TOKEN, burst_limit=80, clock=clock)
    for _ in range(32):  # ids 10001..10032: the example's 20, 31 and 32 become 10020, 10031, 10032
        simulator.add_user("user")
    simulator.add_deal_field("phone", "varchar", key=PHONE)
    server = simulator.serve()
    text = (EXAMPLES / "b2b-sales-pipedrive.yaml").read_text(encoding="utf-8")
    text = text.replace('storage: {url: "sqlite:///data/b2b-pipedrive.db"}', f'storage: {{url: "{db_url}"}}')
    text = text.replace("{head_of_sales: 20, m31: 31, m32: 32}", "{head_of_sales: 10020, m31: 10031, m32: 10032}")
    environ = {
        "PD_BASE_URL": server.base_url,
        "PD_API_TOKEN": TOKEN,
        "PD_WEBHOOK_USER": "hooks",
        "PD_WEBHOOK_PASSWORD": "hook-password",
        "TG_BOT_TOKEN": "7012345678:AAH-day-report-0123456789abcdef",
        "TG_SHARED_CHAT_ID": "-1001234567890",
        "TG_CARE_CHAT_ID": "-1001234567891",
    }
    rt = Runtime(load_config_text(text, environ), clock=clock)
    try:
        yield simulator, server, rt, clock
    finally:
        rt.stop()
        server.stop()
        simulator.close()


def _api(server: SimulatorServer, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = requests.request(method, server.base_url + path, json=body, headers={"x-api-token": TOKEN}, timeout=10)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def _call(server: SimulatorServer, owner: int, *, done: bool = True) -> None:
    _api(server, "POST", "/api/v2/activities", {"subject": "Звонок", "type": "call", "owner_id": owner, "done": done})


def _dispatch(rt: Runtime) -> None:
    while rt.dispatcher.tick():
        pass


def _reports(simulator: PipedriveSimulator, subject: str) -> dict[int, dict[str, Any]]:
    return {a["owner_id"]: a for a in simulator.activities.values() if a["subject"].startswith(subject)}


def test_evening_report_in_the_seed_format_and_a_missing_one_named_to_the_head(world) -> None:  # type: ignore[no-untyped-def]
    simulator, server, rt, clock = world
    paid = simulator.add_deal(
        {"title": "Футболки", "stage_id": 5, "owner_id": 10031, "value": 18000, "currency": "UAH", "pipeline_id": 1}
    )
    for _ in range(3):
        _call(server, 10031)
    _call(server, 10032)
    _call(server, 10032, done=False)  # a call planned, not made: not a call reached
    _api(server, "POST", "/api/v2/activities", {"subject": "Письмо", "type": "email", "owner_id": 10032, "done": True})
    clock.now = datetime(2026, 12, 2, 12, tzinfo=KYIV)
    simulator.update_deal(paid, {"status": "won"})

    clock.now = datetime(2026, 12, 2, 19, tzinfo=KYIV)  # the reports' schedule: 19:00 Kyiv
    assert rt.run_report("pd-day-report") == 2
    assert rt.run_report("pd-day-summary") == 1
    assert rt.run_report("pd-day-report") == 0  # once a day
    _dispatch(rt)

    mine = _reports(simulator, "Отчёт за день")
    assert set(mine) == {10031, 10032}
    assert mine[10031]["due_date"] == "2026-12-02" and mine[10031]["due_time"] == "17:00"  # 19:00 Kyiv, in UTC
    assert "✅Сумма продаж – 18000 грн\n✅Кол-во продаж – 1 шт\n✅Кол-во дозвонов – 3 шт.\nПлан на завтра:" in mine[
        10031
    ]["note"].replace("<br>", "\n")
    assert "✅Сумма продаж – 0 грн\n✅Кол-во продаж – 0 шт\n✅Кол-во дозвонов – 1 шт." in mine[10032]["note"].replace(
        "<br>", "\n"
    )
    summary = _reports(simulator, "Итоги дня отдела продаж 2026-12-02")
    assert list(summary) == [10020]
    assert "Менеджер 10031" in summary[10020]["note"] and "Всего: 18000 грн, 1 шт, 4 дозвонов" in summary[10020][
        "note"
    ].replace("<br>", "\n")

    # Manager 31 adds tomorrow's plan and marks the report done that evening; manager 32 never does.
    clock.now = datetime(2026, 12, 2, 20, 15, tzinfo=KYIV)
    _api(server, "PATCH", f"/api/v2/activities/{mine[10031]['id']}", {"done": True})

    clock.now = datetime(2026, 12, 3, 10, tzinfo=KYIV)
    assert rt.run_report("pd-daily-plan") == 3  # each manager's plan vs fact, and one task to the head
    _dispatch(rt)
    missed = _reports(simulator, "Дневной план 2026-12-02 не выполнен")
    assert list(missed) == [10020]
    note = missed[10020]["note"]
    assert "user 10032 (sales)" in note and "Отчёт за день сдан 1/0 (0%)" in note
    assert "user 10031" not in note  # sent, and no other plan was set for the day


def test_on_an_event_day_the_evening_report_comes_at_the_end_of_the_shift(world) -> None:  # type: ignore[no-untyped-def]
    """S002.3: on an online-event day the team works 15:00–23:00 (the calendar's `days:`); the
    evening report waits for 23:00 and counts the calls made after 19:00."""
    simulator, server, rt, clock = world
    clock.now = datetime(2026, 12, 10, 16, tzinfo=KYIV)  # the example's event day, a Thursday
    _call(server, 10031)
    clock.now = datetime(2026, 12, 10, 19, tzinfo=KYIV)
    assert rt.run_report("pd-day-report") == 0  # the shift runs until 23:00
    assert rt.run_report("pd-day-summary") == 0
    clock.now = datetime(2026, 12, 10, 21, tzinfo=KYIV)
    _call(server, 10031)
    _call(server, 10032)
    clock.now = datetime(2026, 12, 10, 23, tzinfo=KYIV)
    assert rt.run_report("pd-day-report") == 2
    assert rt.run_report("pd-day-summary") == 1
    _dispatch(rt)
    mine = _reports(simulator, "Отчёт за день")
    assert mine[10031]["due_date"] == "2026-12-10" and mine[10031]["due_time"] == "21:00"  # 23:00 Kyiv, in UTC
    assert "✅Кол-во дозвонов – 2 шт." in mine[10031]["note"].replace("<br>", "\n")
    assert "✅Кол-во дозвонов – 1 шт." in mine[10032]["note"].replace("<br>", "\n")

    # The next, ordinary day's report comes at 19:00 again.
    clock.now = datetime(2026, 12, 11, 19, tzinfo=KYIV)
    assert rt.run_report("pd-day-report") == 2
