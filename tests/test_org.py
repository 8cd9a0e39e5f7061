"""The org chart (``org:``) and named calendars (``calendars:``): loading, resolving targets,
and what ``check`` says about names that do not exist."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from connector.config import ConfigError, load_config_text
from rules.org import OrgRef, parse_ref

CONFIG = """
crms:
  b24: {type: bitrix24, webhook_url: "https://x.bitrix24.ru/rest/1/abc/", application_token: app-token-1}
  pd:
    type: pipedrive
    base_url: "http://127.0.0.1:9"
    api_token: "pd-api-token-secret-1"
    webhook_user: hooks
    webhook_password: "pd-hook-password-1"
calendar: {country: RU, timezone: Europe/Moscow, work_hours: "09:00-18:00"}
calendars:
  ua_remote:
    country: UA
    timezone: Europe/Kyiv
    work_hours: "10:00-19:00"
    shifts: {event_day: "15:00-23:00"}
    days:
      - {date: 2026-03-12, shift: event_day, name: "Онлайн-вебинар"}
      - {date: 2026-03-13, off: true, name: "Отгул после вебинара"}
org:
  people:
    olga: 10
    petr: {ids: {b24: "11", pd: "211"}, name: Пётр}
    anna: 12
    taras: 13
    oksana: 14
    maria: 15
    irina: 16
    boss: 1
  teams:
    sales:
      name: Отдел продаж
      lead: olga
    sales_msk: {parent: sales, lead: petr, members: [petr, anna]}
    sales_ua: {parent: sales, lead: oksana, members: [taras, oksana], calendar: ua_remote}
  roles:
    accountant: [maria, irina]
    marketing: [anna]
  fallback: boss
rules:
  - name: esc
    crm: b24
    on: [deal.created]
    do:
      - escalate: {to: team_lead_of(responsible), title: "Просрочка {{ deal.title }}"}
      - create_task: {title: "Закрывающие документы", responsible: {role: accountant}}
"""


def test_config_loads_org_and_calendars() -> None:
    config = load_config_text(CONFIG)
    assert config.calendars is not None
    assert config.calendars.names == {"default", "ua_remote"}
    ua = config.calendars.get("ua_remote")
    assert ua.country == "UA" and ua.tz.key == "Europe/Kyiv"
    # the event day is worked 15:00-23:00 Kyiv time, the day after it is off
    assert ua.is_working_time(datetime(2026, 3, 12, 20, 0, tzinfo=ua.tz))
    assert not ua.is_working_time(datetime(2026, 3, 12, 11, 0, tzinfo=ua.tz))
    assert not ua.is_working_day(date(2026, 3, 13))
    assert config.org.teams["sales_ua"].calendar == "ua_remote"
    assert config.org.roles["accountant"] == ("maria", "irina")


@pytest.mark.parametrize(
    ("ref", "crm", "responsible", "expected", "how"),
    [
        ("team_lead_of(responsible)", "b24", "12", ("11",), "team lead of anna"),  # anna -> petr
        ("team_lead_of(responsible)", "pd", "12", ("211",), "team lead of anna"),  # petr's Pipedrive id
        ("team_lead_of(responsible)", "b24", "11", ("10",), "team lead of petr"),  # the lead's lead
        ("team_lead_of(responsible)", "b24", "10", ("1",), "org.fallback"),  # the top has nobody above
        ("team_lead_of(responsible)", "b24", "999", ("1",), "org.fallback"),  # unmapped manager
        ("team_lead_of(taras)", "b24", None, ("14",), "team lead of taras"),
        ("head_of(team)", "b24", "13", ("10",), "head over sales_ua"),
        ("head_of(responsible)", "b24", "12", ("10",), "head over sales_msk"),
        ("head_of(sales_ua)", "b24", None, ("10",), "head over sales_ua"),
        ("head_of(team)", "b24", "999", ("1",), "org.fallback"),
        ("role(accountant)", "b24", None, ("15", "16"), "role accountant"),
    ],
)
def test_targets_resolve(ref: str, crm: str, responsible: str | None, expected: tuple[str, ...], how: str) -> None:
    org = load_config_text(CONFIG).org
    parsed = parse_ref(ref)
    assert parsed is not None
    found = org.resolve(parsed, crm, responsible)
    assert found.user_ids == expected
    assert found.how == how


def test_without_fallback_nobody_is_found_and_nothing_raises() -> None:
    org = load_config_text(CONFIG.replace("  fallback: boss\n", "")).org
    found = org.resolve(OrgRef("team_lead_of", "responsible", "team_lead_of(responsible)"), "b24", "999")
    assert found.user_ids == ()
    assert "nobody found for user 999" in found.how


def test_team_calendar_is_found_through_membership() -> None:
    org = load_config_text(CONFIG).org
    assert org.team_calendar("b24", "13") == "ua_remote"
    assert org.team_calendar("b24", "12") is None


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (("{role: accountant}", "{role: acountant}"), "rules[0].do[1].create_task.responsible", "no role named"),
        (
            ("team_lead_of(responsible)", "head_of(sales_kz)"),
            "rules[0].do[0].escalate.to",
            "no team named 'sales_kz'",
        ),
        (("team_lead_of(responsible)", "team_lead_of(bob)"), "rules[0].do[0].escalate.to", "no person named 'bob'"),
        (("team_lead_of(responsible)", "team_lead(responsible)"), "rules[0].do[0].escalate.to", "write team_lead_of"),
        (("calendar: ua_remote", "calendar: ua"), "org.teams.sales_ua.calendar", "no calendar named 'ua'"),
        (("members: [taras, oksana]", "members: [taras, ostap]"), "org.teams.sales_ua.members[1]", "no person"),
        (("parent: sales, lead: petr", "parent: salez, lead: petr"), "org.teams.sales_msk.parent", "no team"),
        (("accountant: [maria, irina]", "accountant: [maria, ira]"), "org.roles.accountant[1]", "no person"),
        (("country: UA", "country: XX"), "calendars.ua_remote.country", "no calendar for 'XX'"),
        (("shift: event_day", "shift: event"), "calendars.ua_remote.days[0].shift", "no shift named 'event'"),
        (("    on: [deal.created]\n", "    on: [deal.created]\n    calendar: kz\n"), "rules[0].calendar", "'kz'"),
        (
            ("    on: [deal.created]\n", "    on: [deal.created]\n    when: {working_time: false, calendar: kz}\n"),
            "rules[0].when.calendar",
            "no calendar named 'kz'",
        ),
        (("  ua_remote:\n", "  default:\n"), "calendars.default", "top-level calendar"),
    ],
)
def test_check_names_what_does_not_exist(change: tuple[str, str], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config_text(CONFIG.replace(*change), source="c.yaml")
    text = str(err.value)
    assert where in text, text
    assert message in text, text


def test_default_calendar_stays_the_top_level_block() -> None:
    config = load_config_text(CONFIG)
    assert config.calendars is not None
    default = config.calendars.get(None)
    assert default.country == "RU"
    assert default.is_working_time(datetime(2026, 3, 12, 7, 0, tzinfo=UTC))  # 10:00 Moscow


def test_check_command_names_a_wrong_role_and_an_unknown_calendar(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from connector.cli import main

    path = tmp_path / "c.yaml"
    text = CONFIG.replace("{role: accountant}", "{role: acountant}").replace(
        "    on: [deal.created]\n", "    on: [deal.created]\n    calendar: ua\n"
    )
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 2
    lines = [line.strip() for line in result.output.splitlines()]
    assert any(
        line.startswith(f"{path}:47: rules[0].do[1].create_task.responsible: no role named 'acountant'")
        for line in lines
    ), result.output
    assert any(
        line.startswith(f"{path}:44: rules[0].calendar: no calendar named 'ua'; known: default, ua_remote")
        for line in lines
    ), result.output
    assert "Traceback" not in result.output


def test_a_failing_rule_does_not_take_the_others_down() -> None:
    """The issue's workaround: a Jinja lookup table in `to:` fails for an unmapped manager;
    that rule is reported as not applied, the next rule still acts."""
    from connector.dryrun.history import HistoryItem
    from connector.dryrun.replay import Replay
    from connector.runtime import build_calendar
    from domain import Deal, EventKind

    text = (
        CONFIG.split("rules:")[0]
        + """rules:
  - name: lookup
    crm: b24
    on: [deal.created]
    do: [{escalate: {to: "{{ {'1': '10', '12': '11'}[deal.responsible_id] }}", title: t}}]
  - name: comment
    crm: b24
    on: [deal.created]
    do: [{add_comment: {text: ok}}]
"""
    )
    config = load_config_text(text)
    moment = datetime(2026, 3, 6, 12, tzinfo=UTC)
    deal = Deal(crm="b24", id="1", responsible_id="999", created_at=moment, updated_at=moment)
    result = Replay(config, build_calendar(config)).run([HistoryItem(moment, EventKind.DEAL_CREATED, deal)])
    shown = {(o.rule, o.action): o.detail for o in result.outcomes}
    assert "999" in shown[("lookup", "rule_error")]
    assert ("comment", "add_comment") in shown


def test_the_commented_example_in_config_example_loads_when_uncommented() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "config.example.yaml").read_text(encoding="utf-8")
    block = text[text.index("# calendars:") : text.index("\nworker:")]
    uncommented = "\n".join(line[2:] if line.startswith("# ") else line for line in block.splitlines())
    env = {"B24_WEBHOOK_URL": "https://x.bitrix24.ru/rest/1/abc/", "B24_APP_TOKEN": "example-token"}
    config = load_config_text(text.replace(block, uncommented), env)
    assert config.calendars is not None and "ua_remote" in config.calendars
    assert config.org.roles["supervisor"] == ("elena",)
    assert [r.name for r in config.recurring] == ["planning-meeting"]
