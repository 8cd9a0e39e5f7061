"""Config loading: env substitution, every problem reported with path and line, no secrets shown."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import ConfigError, load_config_text

GOOD = """
crms:
  b24: {type: bitrix24, webhook_url: "${B24_URL}", application_token: "${B24_TOKEN}"}
territories:
  - {match: {city: Казань}, captain: 17}
rules:
  - name: r1
    crm: b24
    on: [deal.created]
    do: [{create_task: {title: "Задача {{ deal.title }}", responsible: 5, due: 3 working days}}]
"""
ENV = {"B24_URL": "https://x.bitrix24.ru/rest/1/secretcode/", "B24_TOKEN": "app-token-secret"}


def test_good_config_loads_with_env_secrets() -> None:
    cfg = load_config_text(GOOD, ENV)
    assert cfg.crms["b24"].webhook_url == ENV["B24_URL"]  # type: ignore[attr-defined]
    assert cfg.rules[0].triggers == frozenset({"deal.created"})  # `on:` is not YAML's True
    assert cfg.territories[0].captain == "17"
    assert ENV["B24_TOKEN"] in cfg.secrets


def test_missing_env_var_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        load_config_text(GOOD, {"B24_URL": ENV["B24_URL"]})
    assert "B24_TOKEN is not set" in str(err.value)
    assert "crms.b24.application_token" in str(err.value)


def test_every_problem_reported_with_path_and_line() -> None:
    bad = (
        GOOD.replace("deal.created", "deal.bogus")
        .replace("captain: 17", "captain: [1]")
        .replace("due: 3 working days", "due: soon")
    )
    with pytest.raises(ConfigError) as err:
        load_config_text(bad, ENV, source="c.yaml")
    text = str(err.value)
    assert "c.yaml:9: rules[0].on[0]" in text
    assert "territories[0].captain" in text
    assert "rules[0].do[0].create_task.due" in text
    assert len(err.value.problems) == 3


def test_unknown_crm_type_and_rule_crm() -> None:
    bad = GOOD.replace("type: bitrix24", "type: amo").replace("crm: b24", "crm: nope")
    with pytest.raises(ConfigError) as err:
        load_config_text(bad, ENV)
    assert "unknown CRM type 'amo'" in str(err.value)
    assert "no CRM named 'nope'" in str(err.value)


def test_cross_checks_still_run_when_another_key_is_wrong() -> None:
    # A wrong value elsewhere must not hide that a valid rule names an unknown CRM:
    # the admin gets every problem in one run, not one stage at a time.
    bad = (
        GOOD.replace("captain: 17", "captain: [1]")
        + """
  - name: r1
    crm: nope
    on: [deal.created]
    do: [{add_comment: {text: "x"}}]
  - name: r3
    crm: b24
    on: [deal.created]
    do: [{start_deadline: missing}]
"""
    )
    with pytest.raises(ConfigError) as err:
        load_config_text(bad, ENV, source="c.yaml")
    text = str(err.value)
    assert "territories[0].captain" in text
    assert "rules[1].crm: no CRM named 'nope'" in text
    assert "rules[1].name: rule name 'r1' is used twice" in text
    assert "no deadline named 'missing'" in text


def test_check_command_exits_nonzero_and_prints_no_secret(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.yaml"
    path.write_text(GOOD.replace('webhook_url: "${B24_URL}"', 'webhook_url: "${B24_TOKEN}"'), encoding="utf-8")
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 2
    assert "crms.b24.webhook_url" in result.output
    assert ENV["B24_TOKEN"] not in result.output


def test_check_command_ok(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.yaml"
    path.write_text(GOOD, encoding="utf-8")
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
