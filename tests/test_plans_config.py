"""`check` and `connector plans load` on plans, indicators and plan-vs-fact reports."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import ConfigError, load_config_text

CONFIG = """
storage: {url: "sqlite:///@DB@"}
crms:
  pd: {type: pipedrive, company_domain: acme, api_token: token-123456, webhook_user: u, webhook_password: pass-12345}
  acc: {type: onec, base_url: "http://1c.local/base/odata/standard.odata/", username: u, password: p, deal_crm: pd}
indicators:
  calls: {count: activities, type: call}
  meetings: {count: activities, type: meeting}
  conversion: {ratio: [meetings, calls]}
org:
  people: {boss: 1, lena: 7, ivan: 11, oleg: 12}
  teams:
    dept: {lead: boss}
    north: {parent: dept, lead: lena, members: [ivan, oleg]}
reports:
  - name: monthly
    crm: pd
    schedule: "0 9 * * *"
    period: month
    by: 5
    to: head
    indicators: [calls, conversion]
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config_text(text, source="c.yaml")
    return [p.render("c.yaml") for p in err.value.problems]


def test_a_good_planning_config_loads() -> None:
    cfg = load_config_text(CONFIG)
    teams = cfg.teams_for("pd")
    assert teams.members == {"north": ("11", "12")}  # a department without members is no plan's team
    assert teams.leads == {"north": "7"} and teams.head == "1"  # the lead of the department above
    assert teams.people["ivan"] == "11"
    with_role = load_config_text(
        CONFIG.replace("to: head", "to: role(ceo)").replace("  teams:", "  roles: {ceo: [boss]}\n  teams:", 1)
    )
    assert with_role.teams_for("pd").roles == {"ceo": ("1",)}
    assert cfg.reports[0].indicators == ("calls", "conversion") and cfg.reports[0].by == 5
    assert cfg.indicators["conversion"].parts == ("meetings", "calls")


def test_check_catches_a_report_without_a_recipient() -> None:
    assert _problems(CONFIG.replace("    to: head\n", "")) == [
        "c.yaml:16: reports[0].to: the report has no recipient: "
        "give to (head, team_lead, person, role(NAME), a user id), file or missed"
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("parent: dept, ", "", "c.yaml:21: reports[0].to: head: org.teams gives no head over the teams"),
        ("[calls, conversion]", "[calls, visits]", "c.yaml:22: reports[0].indicators: no indicator named 'visits'"),
        ("crm: pd\n    schedule", "crm: acc\n    schedule", "c.yaml:17: reports[0].crm: 'acc' keeps no deals"),
        ("type: call}", "type: call, per: day}", "c.yaml:7: indicators.calls.per: unknown key(s) per; known: "),
        ("[meetings, calls]", "[meetings, visits]", "c.yaml:9: indicators.conversion.ratio: ratio: 'visits' is "),
        ("to: head", "to: head\n    missed: {title: x}", "c.yaml:22: reports[0].missed: a missed plan is a day "),
        (
            "    indicators: [calls, conversion]\n",
            "    text: x\n    title: y\n",
            "c.yaml:20: reports[0].by: only a plan-vs-fact",
        ),
        (
            "meetings: {count: activities, type: meeting}",
            "meetings: {count: stage_entries, where: {stage: MEETING}}",
            "c.yaml:22: reports[0].indicators: conversion: the CRM keeps no stage history",
        ),
        (
            "to: head",
            "to: head\n    title: '{{ deal.title }}'",
            "c.yaml:22: reports[0].title: cannot render '{{ deal.title }}'",
        ),
        ("to: head", "to: head\n    file: '{{ report }}-{{ month }}.csv'", "c.yaml:22: reports[0].file: cannot render"),
        ("to: head", "to: team_lead", None),
        ("to: head", "to: boss", None),  # a person of org.people
        ("to: head", "to: 42", None),  # a user id
        ("to: head", "to: boris", "c.yaml:21: reports[0].to: 'boris' is no person of org.people, no user id"),
        ("to: head", "to: role(ceo)", "c.yaml:21: reports[0].to: no role named 'ceo' with people under org.roles"),
        ("to: head", "to: team_lead_of(responsible)", "c.yaml:21: reports[0].to: team_lead_of(responsible): a report"),
        ("lead: lena, ", "", None),
        ("by: 5", "current: true", None),
        ("by: 5", "by: 5\n    current: true", "c.yaml:20: reports[0].by: a report on the running period is due on"),
        ("to: head", "to: head\n    targets: {calls: 40}", None),
        ("to: head", "to: head\n    calendar: default", None),
        ("to: head", "to: head\n    calendar: shifts", "c.yaml:22: reports[0].calendar: no calendar named 'shifts'"),
        ("to: head", "to: head\n    targets: {visits: 1}", "c.yaml:22: reports[0].targets: visits: not among the"),
        ("to: head", "to: head\n    text: '{{ rows[0].cells.calls.fact }}'", None),
        ("to: head", "to: head\n    text: '{{ rows[0].cells.visits.fact }}'", "c.yaml:22: reports[0].text: cannot"),
    ],
)
def test_check_names_each_planning_problem(old: str, new: str, expected: str | None) -> None:
    text = CONFIG.replace(old, new)
    assert text != CONFIG
    if expected is None:
        load_config_text(text)  # a team lead recipient with a lead; teams without leads for the head
        return
    problems = _problems(text)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


AHEAD = "period: month\n    by: 5\n    to: head\n    indicators: [calls, conversion]"


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        ("period: day\n    ahead: true\n    indicators: [calls, meetings]\n    missed: {title: x, to: person}", None),
        (
            "period: day\n    ahead: true\n    indicators: [calls]\n    missed: {title: x, to: boss}",
            "c.yaml:22: reports[0].missed.to: a missed plan goes to team_lead",
        ),
        (
            "period: week\n    ahead: true\n    to: head\n    indicators: [calls]",
            "c.yaml:20: reports[0].ahead: ahead reports on the day just begun",
        ),
        (
            "period: day\n    ahead: true\n    to: head\n    indicators: [calls, conversion]",
            "c.yaml:22: reports[0].indicators: conversion: an ahead report counts activities planned",
        ),
        ("ahead: true\n    title: x\n    text: y", "c.yaml:19: reports[0].ahead: only a plan-vs-fact report"),
    ],
)
def test_check_names_each_problem_of_a_start_of_day_report(new: str, expected: str | None) -> None:
    text = CONFIG.replace(AHEAD, new)
    assert text != CONFIG
    if expected is None:
        report = load_config_text(text).reports[0]
        assert report.ahead and report.missed is not None and report.missed.to == "person"
        return
    problems = _problems(text)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_start_of_day_report_needs_a_crm_that_reads_planned_activities(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.pipedrive.adapter import PipedriveAdapter

    text = CONFIG.replace(AHEAD, "period: day\n    ahead: true\n    to: head\n    indicators: [calls]")
    load_config_text(text)
    monkeypatch.setattr(PipedriveAdapter, "planned_activities", False)
    assert _problems(text) == ["c.yaml:20: reports[0].ahead: 'pd' reads no planned activities (type pipedrive)"]


def test_team_lead_recipient_needs_a_team_with_a_lead() -> None:
    text = CONFIG.replace("to: head", "to: team_lead").replace("lead: lena, ", "")
    assert _problems(text) == ["c.yaml:21: reports[0].to: team_lead: no team with members under org.teams has a lead"]


PLANS = "period,person,team,indicator,plan\n2026-04,ivan,,calls,800\n2026-04,,north,meetings,40\n"


def test_plans_load_stores_refuses_and_only_raises(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("@DB@", str(tmp_path / "c.db")), encoding="utf-8")
    plans = tmp_path / "plans.csv"
    runner = CliRunner()

    plans.write_text(PLANS, encoding="utf-8")
    result = runner.invoke(main, ["plans", "load", str(plans), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "2 plan(s) read: 2 added, 0 changed" in result.output

    plans.write_text(PLANS.replace("800", "700") + "2026-04,13,,calls,x\n", encoding="utf-8")
    result = runner.invoke(main, ["plans", "load", str(plans), "--config", str(config)])
    assert result.exit_code == 2
    assert f"{plans}:4: plan 'x' is not a number of zero or more" in result.output
    assert "Traceback" not in result.output

    plans.write_text(PLANS.replace("800", "700").replace("40", "45"), encoding="utf-8")
    result = runner.invoke(main, ["plans", "load", str(plans), "--config", str(config)])
    assert result.exit_code == 2
    assert f"{plans}:2: person 11 calls 2026-04: plan lowered from 800 to 700" in result.output

    result = runner.invoke(main, ["plans", "load", str(plans), "--config", str(config), "--allow-lower"])
    assert result.exit_code == 0, result.output
    assert "2 plan(s) read: 0 added, 2 changed" in result.output

    # April's 700 (loaded before) is more than the quarter given now: a warning, not a refusal.
    plans.write_text("period,person,team,indicator,plan\n2026-Q2,ivan,,calls,600\n", encoding="utf-8")
    result = runner.invoke(main, ["plans", "load", str(plans), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert f"{plans}:2: warning: person 11 calls: the month plans inside 2026-Q2 add up to 700, more than its 600" in (
        result.output
    )

    result = runner.invoke(main, ["plans", "show", "--config", str(config), "--period", "2026-04-01"])
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.replace("│", " ").split()) for line in result.output.splitlines()]
    # 700 calls over April's 22 working days; the team's 45 meetings likewise.
    assert "user 11 (north) calls 31.82" in lines and "team north meetings 2.05" in lines
    result = runner.invoke(main, ["plans", "show", "--config", str(config), "--period", "April"])
    assert result.exit_code == 2 and "not a period" in result.output
