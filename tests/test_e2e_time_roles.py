"""End to end on the Bitrix24 simulator: working-time conditions, org-chart targets, stale
deals found by a scheduled rule, and recurring work created once per occurrence."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connector.config import load_config_text
from connector.runtime import Runtime
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import TOKEN

MSK = ZoneInfo("Europe/Moscow")
HEAD = """
storage: {{url: "{db_url}"}}
calendar: {{country: RU, timezone: Europe/Moscow, work_hours: "09:00-18:00"}}
crms:
  b24: {{type: bitrix24, webhook_url: "{b24_url}", application_token: "${{B24_TOKEN}}", rate: 50}}
org:
  people: {{anna: 2, petr: 3, olga: 4, maria: 5, irina: 6}}
  teams:
    sales: {{name: Отдел продаж, lead: olga}}
    sales_msk: {{parent: sales, lead: petr, members: [petr, anna]}}
  roles: {{supervisor: [petr, olga], accountant: [maria, irina]}}
"""


class Clock:
    """The portal's and the connector's wall time, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def portal(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Bitrix24Simulator, str, Clock]]:
    clock = Clock(datetime(2026, 3, 6, 12, 0, tzinfo=MSK))  # a Friday
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50, clock=clock)
    for uid, name in (("2", "Анна"), ("3", "Пётр"), ("4", "Ольга"), ("5", "Мария"), ("6", "Ирина")):
        simulator.add_user(name, user_id=uid)
    server = simulator.serve()
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    yield simulator, server.base_url + simulator.webhook_base, clock
    server.stop()
    simulator.close()


def _runtime(db_url: str, b24_url: str, rules: str, clock: Clock) -> Runtime:
    return Runtime(load_config_text(HEAD.format(db_url=db_url, b24_url=b24_url) + rules), clock=clock)


def _drain(rt: Runtime) -> None:
    while rt.worker.tick():
        pass
    while rt.dispatcher.tick():
        pass


def _comments(simulator: Bitrix24Simulator, deal_id: str) -> list[str]:
    """The deal's comments without the connector's marker line."""
    return [c["COMMENT"].split("\n[crmc:")[0] for c in simulator.comments.values() if c["ENTITY_ID"] == deal_id]


def _deadline(task: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(task["DEADLINE"])


AFTER_HOURS = """
rules:
  - name: after-hours-lead
    crm: b24
    on: [deal.created]
    when: {working_time: false}
    do:
      - add_comment: {text: "Заявка пришла в нерабочее время; менеджер перезвонит утром"}
      - create_task:
          title: "Перезвонить утром: {{ deal.title }}"
          responsible: responsible
          due: 1 working hour
"""


def test_after_hours_lead_gets_a_comment_and_a_next_morning_task(db_url: str, portal: Any) -> None:
    simulator, url, clock = portal
    rt = _runtime(db_url, url, AFTER_HOURS, clock)
    try:
        clock.now = datetime(2026, 3, 6, 11, 0, tzinfo=MSK)  # Friday, in work hours
        in_hours = simulator.add_deal({"TITLE": "Днём", "ASSIGNED_BY_ID": "2"})
        rt.poll("b24")
        _drain(rt)
        clock.now = datetime(2026, 3, 7, 22, 30, tzinfo=MSK)  # Saturday night
        late = simulator.add_deal({"TITLE": "Ночной лид", "ASSIGNED_BY_ID": "2"})
        rt.poll("b24")
        _drain(rt)

        assert simulator.tasks_for_deal(in_hours) == [] and _comments(simulator, in_hours) == []
        assert _comments(simulator, late) == ["Заявка пришла в нерабочее время; менеджер перезвонит утром"]
        [task] = simulator.tasks_for_deal(late)
        assert task["TITLE"] == "Перезвонить утром: Ночной лид"
        assert task["RESPONSIBLE_ID"] == "2"
        # Monday 9 March is a day off (8 March moved); the next morning is Tuesday's
        assert _deadline(task) == datetime(2026, 3, 10, 10, 0, tzinfo=MSK)
    finally:
        rt.stop()


ESCALATION = """
deadlines:
  first-callback:
    due: 4 working hours
    remind_before: 2 working hours
    done_when: {stage: [PREPARATION, WON, LOSE]}
rules:
  - name: start-callback
    crm: b24
    on: [deal.created]
    do: [{start_deadline: first-callback}]
  - name: callback-late-team-lead
    crm: b24
    on: [deadline.reminder]
    when: {deadline: first-callback}
    do:
      - escalate: {to: team_lead_of(responsible), title: "Клиенту не перезвонили: {{ deal.title }}"}
  - name: callback-missed-head
    crm: b24
    on: [deadline.breached]
    when: {deadline: first-callback}
    do:
      - escalate:
          to: head_of(team)
          title: "Срыв обратного звонка: {{ deal.title }}"
          comment: "Эскалировано руководителю отдела"
  - name: closing-documents
    crm: b24
    on: [deal.stage_changed]
    when: {outcome: won}
    do:
      - create_task: {title: "Закрывающие документы: {{ deal.title }}", responsible: {role: accountant}}
"""


def test_escalation_to_team_lead_then_head_and_a_task_per_accountant(db_url: str, portal: Any) -> None:
    simulator, url, clock = portal
    rt = _runtime(db_url, url, ESCALATION, clock)
    try:
        clock.now = datetime(2026, 3, 6, 10, 0, tzinfo=MSK)  # Friday 10:00: due 14:00, reminder 12:00
        deal = simulator.add_deal({"TITLE": "Кирпич", "ASSIGNED_BY_ID": "2"})
        orphan = simulator.add_deal({"TITLE": "Без команды", "ASSIGNED_BY_ID": "1"})  # in no team
        rt.poll("b24")
        _drain(rt)

        clock.now = datetime(2026, 3, 6, 12, 1, tzinfo=MSK)
        rt.fire_timers()
        _drain(rt)
        [reminder] = simulator.tasks_for_deal(deal)
        assert (reminder["TITLE"], reminder["RESPONSIBLE_ID"]) == ("Клиенту не перезвонили: Кирпич", "3")  # petr
        # a responsible in no team: the lead cannot be found, nor the head, and there is no
        # fallback -- an audit note, no task, and the other deal's escalation still went out
        assert simulator.tasks_for_deal(orphan) == []

        clock.now = datetime(2026, 3, 6, 14, 1, tzinfo=MSK)
        rt.fire_timers()
        _drain(rt)
        titles = {t["TITLE"]: t["RESPONSIBLE_ID"] for t in simulator.tasks_for_deal(deal)}
        assert titles["Срыв обратного звонка: Кирпич"] == "4"  # olga, head of the department
        assert _comments(simulator, deal) == ["Эскалировано руководителю отдела"]

        simulator.update_deal(deal, {"STAGE_ID": "WON"})
        rt.poll("b24")
        _drain(rt)
        docs = sorted(t["RESPONSIBLE_ID"] for t in simulator.tasks_for_deal(deal) if t["TITLE"].startswith("Закрыв"))
        assert docs == ["5", "6"]  # one task per accountant
    finally:
        rt.stop()
    with rt.store.sessions() as session:
        from sqlalchemy import select

        from connector.storage.models import AuditRow

        notes = [a.message for a in session.scalars(select(AuditRow).where(AuditRow.deal_id == orphan))]
    assert any("nobody found for user 1" in n for n in notes), notes


STALE = """
rules:
  - name: stalled-proposal
    crm: b24
    on: [schedule]
    schedule: "0 10 * * mon-fri"
    once_per: run
    when:
      all:
        - {stage: PROPOSAL}
        - {field: updated_at, older_than: 5 working days}
        - {field: amount, gt: 1000}
    do:
      - create_task: {title: "КП без движения 5 рабочих дней: {{ deal.title }}", responsible: responsible}
"""


def test_stale_deal_rule_fires_live(db_url: str, portal: Any) -> None:
    simulator, url, clock = portal
    rt = _runtime(db_url, url, STALE, clock)
    try:
        clock.now = datetime(2026, 3, 2, 11, 0, tzinfo=MSK)  # Monday
        stale = simulator.add_deal({"TITLE": "КП", "STAGE_ID": "PROPOSAL", "ASSIGNED_BY_ID": "2", "OPPORTUNITY": 5000})
        small = simulator.add_deal(
            {"TITLE": "Мелкое", "STAGE_ID": "PROPOSAL", "ASSIGNED_BY_ID": "2", "OPPORTUNITY": 10}
        )
        rt.poll("b24")  # a first poll reads back only a short window
        _drain(rt)
        clock.now = datetime(2026, 3, 5, 11, 0, tzinfo=MSK)
        fresh = simulator.add_deal(
            {"TITLE": "Свежее", "STAGE_ID": "PROPOSAL", "ASSIGNED_BY_ID": "2", "OPPORTUNITY": 5000}
        )
        rt.poll("b24")
        _drain(rt)

        clock.now = datetime(2026, 3, 10, 10, 0, tzinfo=MSK)  # 4 working days after Monday (9 March off)
        assert rt.run_schedule("stalled-proposal") == 0
        clock.now = datetime(2026, 3, 11, 10, 0, tzinfo=MSK)  # Mar 2 11:00 + 5 wd = Mar 10 11:00: stale
        assert rt.run_schedule("stalled-proposal") == 1  # the pre-filter saw updated_at and amount
        _drain(rt)
        [task] = simulator.tasks_for_deal(stale)
        assert task["TITLE"] == "КП без движения 5 рабочих дней: КП"
        assert simulator.tasks_for_deal(small) == [] and simulator.tasks_for_deal(fresh) == []
    finally:
        rt.stop()


RECURRING = """
rules: []
recurring:
  - name: planning-meeting
    crm: b24
    schedule: "0 10 * * mon,thu"
    to: role(supervisor)
    title: "Планёрка {{ occurrence | date('%d.%m %H:%M') }}"
    due: 2h
  - name: site-update
    crm: b24
    schedule: "0 11 * * fri"
    to: [maria, head_of(sales_msk)]
    title: "Обновить сайт и соцсети: тарифы, адреса"
    due: 1 working day
"""


def _meeting_tasks(simulator: Bitrix24Simulator, prefix: str) -> list[tuple[str, str]]:
    return sorted((t["TITLE"], t["RESPONSIBLE_ID"]) for t in simulator.tasks.values() if t["TITLE"].startswith(prefix))


def test_recurring_meeting_once_per_occurrence_across_a_restart(db_url: str, portal: Any) -> None:
    from tests.helpers import wait_for

    simulator, url, clock = portal
    clock.now = datetime(2026, 3, 5, 10, 0, 5, tzinfo=MSK)  # Thursday, just after the 10:00 occurrence
    rt = _runtime(db_url, url, RECURRING, clock)
    try:
        assert rt.run_recurring("planning-meeting") == 2  # petr and olga, the supervisors
        assert rt.run_recurring("planning-meeting") == 0
        # stopped before the dispatcher carried the tasks out
    finally:
        rt.stop()

    clock.now = datetime(2026, 3, 5, 10, 20, tzinfo=MSK)
    rt = _runtime(db_url, url, RECURRING, clock)
    try:
        rt.start(serve=False, roles=["scheduler"])  # the start-up catch-up runs every item once
        assert wait_for(lambda: rt.scheduler.get_job("recurring-planning-meeting-catch-up") is None)
        assert wait_for(lambda: rt.scheduler.get_job("recurring-site-update-catch-up") is None)
        thursday = [("Планёрка 05.03 10:00", "3"), ("Планёрка 05.03 10:00", "4")]
        # the catch-up may still be finishing on the scheduler's thread: drain until the tasks are out

        def drained() -> list[tuple[str, str]]:
            _drain(rt)
            return _meeting_tasks(simulator, "Планёрка")

        assert wait_for(lambda: drained() == thursday)
        rt.scheduler.shutdown(wait=True)
        _drain(rt)
        assert _meeting_tasks(simulator, "Планёрка") == thursday
        assert [t for t in simulator.tasks.values() if t["TITLE"].startswith("Планёрка") and t.get("UF_CRM_TASK")] == []

        clock.now = datetime(2026, 3, 6, 11, 0, tzinfo=MSK)  # Friday: the weekly site update
        assert rt.run_recurring("site-update") == 2
        clock.now = datetime(2026, 3, 9, 10, 0, tzinfo=MSK)  # Monday 9 March is a day off: no meeting
        assert rt.run_recurring("planning-meeting") == 0
        clock.now = datetime(2026, 3, 12, 10, 0, tzinfo=MSK)  # the next Thursday
        assert rt.run_recurring("planning-meeting") == 2
        _drain(rt)
        assert len(_meeting_tasks(simulator, "Планёрка")) == 4
        updates = _meeting_tasks(simulator, "Обновить сайт")
        assert [user for _, user in updates] == ["4", "5"]  # olga, head over sales_msk, and maria
        [task] = [
            t for t in simulator.tasks.values() if t["TITLE"] == "Планёрка 12.03 10:00" and t["RESPONSIBLE_ID"] == "3"
        ]
        assert _deadline(task) == datetime(2026, 3, 12, 12, 0, tzinfo=MSK)
    finally:
        rt.stop()


def test_org_import_reads_the_portal_departments(portal: Any, tmp_path: Any) -> None:
    import yaml
    from click.testing import CliRunner

    from connector.cli import main
    from rules.org import OrgRef

    simulator, url, _ = portal
    simulator.departments["1"]["UF_HEAD"] = "1"  # the company's director
    simulator.add_department("Отдел продаж", head="4", dept_id="3")
    simulator.add_department("Группа Москва", parent="3", head="3", dept_id="7")
    for uid, dept in (("2", [7]), ("3", [7]), ("4", [3]), ("5", [1]), ("6", [1])):
        simulator.users[uid]["UF_DEPARTMENT"] = dept
    path = tmp_path / "c.yaml"
    path.write_text(HEAD.format(db_url="sqlite://", b24_url=url).split("org:")[0], encoding="utf-8")

    result = CliRunner().invoke(main, ["org-import", "--config", str(path), "--crm", "b24"])
    assert result.exit_code == 0, result.output
    block = yaml.safe_load(result.output)["org"]
    assert block["teams"]["dept7"] == {
        "name": "Группа Москва",
        "parent": "dept3",
        "lead": "user3",
        "members": ["user2", "user3"],
    }
    assert block["people"]["user3"] == {"ids": {"b24": "3"}, "name": "Пётр"}

    # the block, pasted into the config, resolves the escalation targets
    path.write_text(
        path.read_text(encoding="utf-8") + yaml.safe_dump(yaml.safe_load(result.output), allow_unicode=True)
    )
    org = load_config_text(path.read_text(encoding="utf-8")).org
    lead = org.resolve(OrgRef("team_lead_of", "responsible", "team_lead_of(responsible)"), "b24", "2")
    head = org.resolve(OrgRef("head_of", "team", "head_of(team)"), "b24", "2")
    # without a head: marked, the head over a team is the lead of the topmost department
    assert (lead.user_ids, head.user_ids) == (("3",), ("1",))

    refused = CliRunner().invoke(main, ["org-import", "--config", str(path), "--crm", "nope"])
    assert refused.exit_code != 0 and "no CRM named 'nope'" in refused.output


PD_UA = """
storage: {{url: "{db_url}"}}
calendar: {{country: RU, timezone: Europe/Moscow, work_hours: "09:00-18:00"}}
calendars:
  ua_remote:
    country: UA
    timezone: Europe/Kyiv
    work_hours: "10:00-19:00"
    shifts: {{event_day: "15:00-23:00"}}
    days: [{{date: 2026-03-12, shift: event_day, name: "Онлайн-вебинар"}}]
crms:
  pd: {{type: pipedrive, base_url: "{pd_url}", api_token: "pd-test-token-0123456789", webhook_user: hooks,
       webhook_password: "hook-password-123"}}
org:
  people: {{taras: {{ids: {{pd: "{taras}"}}}}}}
  teams: {{sales_ua: {{members: [taras], calendar: ua_remote}}}}
rules:
  - name: after-hours-lead
    crm: pd
    on: [deal.created]
    when: {{working_time: false}}           # on the responsible's team's calendar
    do:
      - add_comment: {{text: "Лид пришёл в нерабочее время"}}
      - create_task: {{title: "Связаться утром: {{{{ deal.title }}}}", responsible: responsible, due: 1 working hour}}
"""


def test_after_hours_on_the_ukrainian_teams_calendar_in_pipedrive(db_url: str) -> None:
    """Seed 002: a remote team in Ukraine on Pipedrive, event days worked 15:00-23:00."""
    from datetime import UTC

    from simulators.pipedrive import PipedriveSimulator

    kyiv = ZoneInfo("Europe/Kyiv")
    clock = Clock(datetime(2026, 3, 12, 20, 0, tzinfo=kyiv))  # Thursday, the event day: in the shift
    simulator = PipedriveSimulator(api_token="pd-test-token-0123456789", clock=clock)
    taras = simulator.add_user("Тарас")
    server = simulator.serve()
    text = PD_UA.format(db_url=db_url, pd_url=server.base_url, taras=taras)
    rt = Runtime(load_config_text(text), clock=clock)
    try:
        during_event = simulator.add_deal({"title": "Вебинар", "owner_id": taras})
        rt.poll("pd")
        _drain(rt)
        clock.now = datetime(2026, 3, 13, 20, 0, tzinfo=kyiv)  # Friday after 19:00 Kyiv
        late = simulator.add_deal({"title": "Вечерний лид", "owner_id": taras})
        rt.poll("pd")
        _drain(rt)

        assert simulator.activities_for_deal(during_event) == []
        [activity] = simulator.activities_for_deal(late)
        assert activity["subject"] == "Связаться утром: Вечерний лид"
        assert activity["owner_id"] == taras
        due = datetime.fromisoformat(f"{activity['due_date']}T{activity['due_time']}").replace(tzinfo=UTC)
        assert due.astimezone(kyiv) == datetime(2026, 3, 16, 11, 0, tzinfo=kyiv)  # Monday 10:00 + 1 h, Kyiv
        notes = [n["content"] for n in simulator.notes.values() if n["deal_id"] == late]
        assert len(notes) == 1 and notes[0].startswith("Лид пришёл в нерабочее время")
    finally:
        rt.stop()
        server.stop()
        simulator.close()


def test_the_scheduler_prefilters_on_the_rules_own_calendar(db_url: str, portal: Any) -> None:
    """No day off on 9 March in Ukraine: on the rule's UA calendar the proposal is stale a
    day earlier than on the default Russian one, and the scheduler's first pass agrees."""
    simulator, url, clock = portal
    rules = STALE.replace("    once_per: run\n", "    once_per: run\n    calendar: ua\n")
    ua = '\ncalendars: {ua: {country: UA, timezone: Europe/Kyiv, work_hours: "10:00-19:00"}}\n'
    rt = _runtime(db_url, url, ua + rules, clock)
    try:
        clock.now = datetime(2026, 3, 2, 11, 0, tzinfo=MSK)  # 10:00 in Kyiv
        stale = simulator.add_deal({"TITLE": "КП", "STAGE_ID": "PROPOSAL", "ASSIGNED_BY_ID": "2", "OPPORTUNITY": 5000})
        rt.poll("b24")
        _drain(rt)
        clock.now = datetime(2026, 3, 10, 10, 0, tzinfo=MSK)  # Kyiv: 5 working days were up on 9 March
        assert rt.run_schedule("stalled-proposal") == 1
        _drain(rt)
        assert len(simulator.tasks_for_deal(stale)) == 1
    finally:
        rt.stop()
