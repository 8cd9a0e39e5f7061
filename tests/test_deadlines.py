"""Deadlines end to end with the clock moved forward (no sleeping): started, reminded,
breached and escalated with a breach record; met before the reminder and stopped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from connector.config import load_config_text
from connector.runtime import Runtime
from connector.storage.models import AuditRow, BreachRow, TimerRow
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import TOKEN, Clock

CONFIG = """
storage: {{url: "{db_url}"}}
calendar: {{country: RU, timezone: Europe/Moscow, work_hours: "09:00-18:00"}}
crms:
  b24:
    type: bitrix24
    webhook_url: "{b24_url}"
    application_token: "${{B24_TOKEN}}"
    backoff_initial: 0.05s
    rate: 50
deadlines:
  connection:
    due: 3 working days
    start_from: created
    remind_before: 4 working hours
    done_when: {{stage: ["C1:WON"]}}
    rearm_on: [UF_CRM_VISIT_DATE]
rules:
  - name: connection-deadline
    crm: b24
    on: [deal.created]
    when: {{pipeline: "1"}}
    do: [{{start_deadline: connection}}]
  - name: connection-reminder
    crm: b24
    on: [deadline.reminder]
    when: {{deadline: connection}}
    once_per: event
    do:
      - create_task: {{title: "Напоминание: подключить {{{{ deal.title }}}}", responsible: responsible}}
  - name: connection-escalation
    crm: b24
    on: [deadline.breached]
    when: {{deadline: connection}}
    once_per: event
    do:
      - escalate:
          to: 1
          title: "Просрочено подключение: {{{{ deal.title }}}}"
          comment: "Срок подключения нарушен (до {{{{ event.data.due_at }}}})"
"""


@pytest.fixture
def world(db_url, monkeypatch) -> Iterator[tuple[Bitrix24Simulator, Runtime, Clock]]:  # type: ignore[no-untyped-def]
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50)
    for name in ("Иван", "Олег"):
        simulator.add_user(name)
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


def _run(rt: Runtime) -> None:
    """One pass of everything the scheduler would run."""
    rt.poll("b24")
    rt.fire_timers()
    while rt.worker.tick():
        pass
    while rt.dispatcher.tick():
        pass


def _timer(rt: Runtime, deal_id: str) -> TimerRow:
    with rt.store.sessions() as s:
        timer = s.scalar(select(TimerRow).where(TimerRow.deal_id == deal_id))
        assert timer is not None
        return timer


def test_started_reminded_breached_escalated_and_met(world) -> None:  # type: ignore[no-untyped-def]
    simulator, rt, clock = world
    late = simulator.add_deal({"TITLE": "Опоздание", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "ASSIGNED_BY_ID": "2"})
    met = simulator.add_deal({"TITLE": "Вовремя", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "ASSIGNED_BY_ID": "3"})
    _run(rt)

    timer = _timer(rt, late)
    assert timer.status == "open"
    created = datetime.fromisoformat(simulator.deals[late]["DATE_CREATE"])
    due = rt.calendar.add(created, "3 working days")
    assert timer.due_at == due
    assert timer.fire_at == rt.calendar.subtract(due, "4 working hours")  # the reminder comes first

    # The second deal is connected in time: the deadline stops, nothing more happens for it.
    simulator.update_deal(met, {"STAGE_ID": "C1:WON"})
    _run(rt)
    assert _timer(rt, met).status == "done"

    clock.now = timer.fire_at - timedelta(minutes=1)
    _run(rt)
    assert simulator.tasks_for_deal(late) == []  # not yet

    clock.now = timer.fire_at + timedelta(minutes=1)
    _run(rt)
    [reminder] = simulator.tasks_for_deal(late)
    assert reminder["TITLE"] == "Напоминание: подключить Опоздание" and reminder["RESPONSIBLE_ID"] == "2"
    assert _timer(rt, late).status == "reminded"

    clock.now = due + timedelta(minutes=1)
    _run(rt)
    _run(rt)  # a second scan fires nothing twice
    tasks = simulator.tasks_for_deal(late)
    assert len(tasks) == 2
    escalation = next(t for t in tasks if t["TITLE"].startswith("Просрочено"))
    assert escalation["RESPONSIBLE_ID"] == "1" and escalation["PRIORITY"] == "2"
    comments = [c["COMMENT"] for c in simulator.comments.values() if str(c["ENTITY_ID"]) == late]
    assert len(comments) == 1 and comments[0].startswith("Срок подключения нарушен")
    assert _timer(rt, late).status == "breached"
    with rt.store.sessions() as s:
        breaches = s.scalars(select(BreachRow)).all()
        assert [(b.deal_id, b.deadline, b.responsible_id, b.due_at) for b in breaches] == [
            (late, "connection", "2", due)
        ]
        actions = [a.action for a in s.scalars(select(AuditRow).where(AuditRow.deal_id == late).order_by(AuditRow.id))]
    assert actions.count("start_deadline") == 1 and actions.count("record_breach") == 1
    assert simulator.tasks_for_deal(met) == []


def test_rearmed_when_the_named_field_changes(world) -> None:  # type: ignore[no-untyped-def]
    simulator, rt, clock = world
    deal = simulator.add_deal({"TITLE": "Перенос", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "ASSIGNED_BY_ID": "2"})
    _run(rt)
    first = _timer(rt, deal).due_at
    clock.now = clock.now + timedelta(days=1)
    simulator.update_deal(deal, {"UF_CRM_VISIT_DATE": "2026-12-01T10:00:00+03:00"})
    _run(rt)
    timer = _timer(rt, deal)
    assert timer.status == "open" and timer.due_at == rt.calendar.add(clock.now, "3 working days") > first


def test_one_scan_whatever_the_number_of_open_deadlines(world) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import event

    _, rt, clock = world
    now = clock.now
    with rt.store.sessions() as s, s.begin():
        for i in range(1000):
            s.add(
                TimerRow(
                    key=f"b24|{i}|connection",
                    crm="b24",
                    deal_id=str(i),
                    rule="r",
                    name="connection",
                    due_at=now + timedelta(days=3),
                    fire_at=now + timedelta(days=2),
                    status="open",
                    payload={},
                    created_at=now,
                    updated_at=now,
                )
            )
    statements: list[str] = []
    event.listen(rt.store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert rt.fire_timers() == 0
    assert len([q for q in statements if q.lstrip().upper().startswith("SELECT")]) == 1


def test_a_restart_loses_no_deadline(world, db_url) -> None:  # type: ignore[no-untyped-def]
    simulator, rt, clock = world
    deal = simulator.add_deal({"TITLE": "Рестарт", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "ASSIGNED_BY_ID": "2"})
    _run(rt)
    timer = _timer(rt, deal)
    rt.stop()  # the process goes away; a new one starts on the same database
    again = Runtime(rt.config, clock=clock)
    try:
        clock.now = timer.fire_at + timedelta(minutes=1)
        _run(again)
        [reminder] = simulator.tasks_for_deal(deal)
        assert reminder["TITLE"] == "Напоминание: подключить Рестарт"
    finally:
        again.stop()
