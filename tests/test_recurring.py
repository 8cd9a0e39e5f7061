"""Recurring work (``recurring:``): occurrences, days off, catch-up, keys, `check`; and the
dry-run showing scheduled rules' runs and recurring work."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connector.config import ConfigError, load_config_text
from connector.dryrun.history import HistoryItem
from connector.dryrun.replay import Replay
from connector.runtime import build_calendar
from domain import Deal, EventKind
from rules.recurring import latest_occurrence, plan_occurrence

MSK = ZoneInfo("Europe/Moscow")
CONFIG = """
crms:
  b24: {type: bitrix24, webhook_url: "https://x.bitrix24.ru/rest/1/abc/", application_token: app-token-1}
org:
  people: {petr: 3, olga: 4, maria: 5}
  teams:
    sales: {lead: olga}
    sales_msk: {parent: sales, lead: petr, members: [petr]}
  roles: {supervisor: [petr, olga], marketing: [maria]}
recurring:
  - name: planning-meeting
    crm: b24
    schedule: "0 10 * * mon,thu"
    to: role(supervisor)
    title: "Планёрка {{ occurrence | date('%d.%m') }}"
    due: 2h
  - name: site-update
    crm: b24
    schedule: "0 11 * * fri"
    to: [maria, "7"]
    on_days_off: run
    catch_up: 3 days
    title: "Обновить сайт"
rules:
  - name: stalled
    crm: b24
    on: [schedule]
    schedule: "0 10 * * *"
    once_per: run
    when: {field: updated_at, older_than: 2 working days}
    do: [{create_task: {title: "Без движения: {{ deal.title }}", responsible: responsible}}]
"""


def _config(text: str = CONFIG) -> Any:
    return load_config_text(text)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 3, 5, 10, 0, tzinfo=MSK), datetime(2026, 3, 5, 10, 0, tzinfo=MSK)),  # on the moment
        (datetime(2026, 3, 5, 21, 59, tzinfo=MSK), datetime(2026, 3, 5, 10, 0, tzinfo=MSK)),  # within 12h
        (datetime(2026, 3, 5, 22, 1, tzinfo=MSK), None),  # past the catch-up window
        (datetime(2026, 3, 5, 9, 59, tzinfo=MSK), None),  # Monday's is long past
    ],
)
def test_latest_occurrence_within_catch_up(now: datetime, expected: datetime | None) -> None:
    item = _config().recurring[0]
    calendar = _config().calendars.default
    assert latest_occurrence(item, now, calendar) == expected


def test_an_occurrence_on_a_day_off_is_skipped_with_a_note_or_run_when_told() -> None:
    config = _config()
    meeting, site = config.recurring
    calendar = config.calendars.default
    monday_off = datetime(2026, 3, 9, 10, 0, tzinfo=MSK)  # 8 March moved to Monday
    tasks, notes = plan_occurrence(meeting, monday_off, calendar, config.org)
    assert tasks == [] and notes == ["2026-03-09T10:00:00+03:00 is a day off: skipped"]
    saturday = datetime(2026, 3, 7, 11, 0, tzinfo=MSK)
    tasks, _ = plan_occurrence(site, saturday, calendar, config.org)
    assert [t.task.responsible_id for t in tasks] == ["5", "7"]  # a person's id, then a plain id


def test_tasks_are_keyed_by_occurrence_and_person() -> None:
    config = _config()
    meeting = config.recurring[0]
    thursday = datetime(2026, 3, 5, 10, 0, tzinfo=MSK)
    tasks, notes = plan_occurrence(meeting, thursday, config.calendars.default, config.org)
    assert notes == []
    assert [(t.task.responsible_id, t.task.title, t.task.deal_id) for t in tasks] == [
        ("3", "Планёрка 05.03", ""),
        ("4", "Планёрка 05.03", ""),
    ]
    assert tasks[0].task.deadline == thursday + timedelta(hours=2)
    again, _ = plan_occurrence(meeting, thursday, config.calendars.default, config.org)
    assert [t.key for t in again] == [t.key for t in tasks]  # the same occurrence, the same keys
    later, _ = plan_occurrence(meeting, thursday + timedelta(days=4), config.calendars.default, config.org)
    assert not {t.key for t in later} & {t.key for t in tasks}


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (("to: role(supervisor)", "to: role(supervisors)"), "recurring[0].to[0]", "no role named 'supervisors'"),
        (("to: role(supervisor)", "to: team_lead_of(responsible)"), "recurring[0].to", "has no deal"),
        (('schedule: "0 11 * * fri"', 'schedule: "fridays"'), "recurring[1].schedule", "not a cron expression"),
        (("catch_up: 3 days", "catch_up: 3 working days"), "recurring[1].catch_up", "plain time"),
        (
            ('    crm: b24\n    schedule: "0 10 * * mon,thu"', '    crm: amo\n    schedule: "0 10 * * mon,thu"'),
            "recurring[0].crm",
            "no CRM named 'amo'",
        ),
        (
            ("    on_days_off: run\n", "    on_days_off: run\n    calendar: ua\n"),
            "recurring[1].calendar",
            "no calendar named 'ua'",
        ),
        (("    on_days_off: run\n", "    on_days_off: sometimes\n"), "recurring[1].on_days_off", "one of skip, run"),
        (('title: "Обновить сайт"', 'title: "Обновить {{ deal.title }}"'), "recurring[1].title", "has no deal"),
    ],
)
def test_check_refuses_bad_recurring_work(change: tuple[str, str], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config_text(CONFIG.replace(*change), source="c.yaml")
    text = str(err.value)
    assert where in text and message in text, text


def test_dry_run_shows_scheduled_runs_and_recurring_work() -> None:
    config = _config()
    created = datetime(2026, 3, 2, 12, 0, tzinfo=MSK)  # Monday
    deal = Deal(crm="b24", id="7", title="КП", stage="NEW", responsible_id="3", created_at=created, updated_at=created)
    items = [HistoryItem(created, EventKind.DEAL_CREATED, deal)]
    since = datetime(2026, 3, 2, 0, 0, tzinfo=MSK)
    result = Replay(config, build_calendar(config)).run(
        items, since=since, until=datetime(2026, 3, 9, 23, 0, tzinfo=MSK)
    )
    shown = [(o.at, o.rule, o.deal_id, o.action, o.detail) for o in result.outcomes]
    meetings = [s for s in shown if s[1] == "recurring:planning-meeting" and s[3] == "create_task"]
    # Monday 2 March's 10:00 meeting is after `since`; Thursday 5 March's; Monday 9 March is a day off
    assert [(s[0].day, s[4].split(" for user ")[1][:1]) for s in meetings] == [(2, "3"), (2, "4"), (5, "3"), (5, "4")]
    assert ("recurring:planning-meeting", "note") in {(s[1], s[3]) for s in shown}
    assert [s[0].day for s in shown if s[1] == "recurring:site-update"] == [6, 6]
    # the scheduled rule ran daily over the deal seen so far, and fired once the deal was stale
    stalled = [s for s in shown if s[1] == "stalled" and s[3] == "create_task"]
    assert [(s[0].day, s[2]) for s in stalled] == [(5, "7"), (6, "7"), (7, "7"), (8, "7"), (9, "7")]
    assert result.recurring_tasks == 2 + 2 + 2  # two meetings for two supervisors, one site update for two
    assert result.schedule_events == 7  # daily runs 3..9 March over the one deal (2 March's came before it)
