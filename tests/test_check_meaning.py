"""``check`` refuses what would fail or misbehave in production, one line per mistake with a hint.

Each case is one mistake from an operator's first try (issue 15); each is refused by
``check`` with file:line:key and a hint, and by ``dry-run`` before anything is replayed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import ConfigError, load_config_text

GOOD = """\
crms:
  b24:
    type: bitrix24
    webhook_url: "${B24_URL}"
    application_token: "${B24_TOKEN}"
    stages: ["C1:NEW", "C1:ROUTE", "C1:WON", "C1:LOSE"]
territories:
  - {match: {city: Казань}, captain: 17, backup: 23}
deadlines:
  connection: {due: 3 working days}
rules:
  - name: captain
    crm: b24
    on: [deal.created]
    when: {stage: "C1:NEW"}
    do:
      - assign_captain: {fallback: 1}
      - create_task: {title: "Проверить: {{ deal.title }}", responsible: captain, due: 24h}
  - name: late
    crm: b24
    on: [deadline.breached]
    when: {deadline: connection}
    do:
      - escalate: {to: 7, title: "Просрочено: {{ deal.title }} {{ deal.fields.UF_CRM_ADDRESS }}"}
"""
ENV = {"B24_URL": "https://x.bitrix24.ru/rest/1/secretcode/", "B24_TOKEN": "app-token-secret"}

# (what is wrong, replace this, with this, line, key path, words of the message and hint)
MISTAKES = [
    ("deadline-in-condition", "{deadline: connection}", "{deadline: conection}", 22, "rules[1].when.deadline",
     ["no deadline named 'conection'", "never holds", "did you mean 'connection'?"]),
    ("captain-a-name", "captain: 17,", "captain: Ivan,", 8, "territories[0].captain",
     ["'Ivan' is not a user id", "digits"]),
    ("escalate-to-a-word", "to: 7,", "to: boss,", 24, "rules[1].do[0].escalate.to",
     ["'boss' is not a user", "user id (digits)", "'responsible'"]),
    ("responsible-misspelt", "responsible: captain,", "responsible: captian,", 18,
     "rules[0].do[1].create_task.responsible", ["'captian' is not a user", "did you mean 'captain'?"]),
    ("template-attribute", "{{ deal.title }} {{", "{{ deal.titel }} {{", 24, "rules[1].do[0].escalate.title",
     ["unknown attribute deal.titel", "did you mean 'title'?"]),
    ("stage-misspelt", 'when: {stage: "C1:NEW"}', 'when: {stage: "C1:NEWW"}', 15, "rules[0].when.stage",
     ["no stage 'C1:NEWW' in crms.b24.stages", "did you mean 'C1:NEW'?"]),
    ("fallback-a-name", "fallback: 1", "fallback: boss", 17, "rules[0].do[0].assign_captain.fallback",
     ["'boss' is not a user"]),
    ("captain-without-assign-captain", "      - assign_captain: {fallback: 1}\n", "", 17,
     "rules[0].do[0].create_task.responsible", ["'captain' is set by a assign_captain step earlier"]),
    ("unknown-action", "- escalate:", "- escalte:", 24, "rules[1].do[0]",
     ["unknown action 'escalte'", "did you mean 'escalate'?"]),
    ("unknown-parameter", "due: 24h}", "deu: 24h}", 18, "rules[0].do[1].create_task.deu",
     ["unknown parameter 'deu'", "did you mean 'due'?"]),
    ("unknown-key", "  - {match: {city: Казань}", "  - {macth: {city: Казань}", 8, "territories[0].macth",
     ["unknown key 'macth'", "did you mean 'match'?"]),
    ("unknown-trigger", "on: [deal.created]", "on: [deal.craeted]", 14, "rules[0].on[0]",
     ["'deal.craeted' is not allowed", "did you mean 'deal.created'?"]),
    ("unknown-template-name", "{{ deal.title }} {{", "{{ dael.title }} {{", 24, "rules[1].do[0].escalate.title",
     ["unknown name 'dael'", "did you mean 'deal'?"]),
    ("rule-crm-misspelt", "    crm: b24\n    on: [deadline.breached]", "    crm: b42\n    on: [deadline.breached]",
     20, "rules[1].crm", ["no CRM named 'b42'", "did you mean 'b24'?"]),
]  # fmt: skip


def _refused(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config_text(text, ENV if env is None else env, source="c.yaml")
    return [p.render("c.yaml") for p in err.value.problems]


def test_the_good_config_passes() -> None:
    cfg = load_config_text(GOOD, ENV)
    assert [r.name for r in cfg.rules] == ["captain", "late"]


@pytest.mark.parametrize(("what", "old", "new", "line", "key", "words"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_one_line_with_its_place_and_a_hint(
    what: str, old: str, new: str, line: int, key: str, words: list[str]
) -> None:
    assert old in GOOD
    lines = _refused(GOOD.replace(old, new, 1))
    assert len(lines) == 1, lines  # one root cause, one message
    assert lines[0].startswith(f"c.yaml:{line}: {key}: "), lines[0]
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize(("what", "old", "new", "line", "key", "words"), MISTAKES[:7], ids=[m[0] for m in MISTAKES[:7]])
def test_dry_run_refuses_them_before_replaying(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    what: str,
    old: str,
    new: str,
    line: int,
    key: str,
    words: list[str],
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "c.yaml"
    config.write_text(GOOD.replace(old, new, 1), encoding="utf-8")
    history = tmp_path / "h.jsonl"
    history.write_text("", encoding="utf-8")
    result = CliRunner().invoke(
        main, ["dry-run", "--config", str(config), "--since", "2026-01-01", "--source", str(history)]
    )
    assert result.exit_code == 2
    assert f"{config}:{line}: {key}" in result.output
    assert "Traceback" not in result.output


def test_empty_crms_is_one_problem_not_one_per_rule() -> None:
    text = GOOD.split("crms:")[0] + "crms: {}\n" + GOOD.split("territories:")[1].join(["territories:", ""])
    lines = _refused("crms: {}\n" + "territories:" + GOOD.split("territories:")[1])
    assert len(lines) == 1, lines
    assert "c.yaml:1: crms: no CRM is configured" in lines[0]
    assert text  # the split kept the rules


def test_a_missing_variable_is_one_message() -> None:
    lines = _refused(GOOD, {"B24_TOKEN": ENV["B24_TOKEN"]})
    assert lines == ["c.yaml:4: crms.b24.webhook_url: environment variable B24_URL is not set"]


def test_a_missing_onec_user_says_only_that() -> None:
    text = GOOD.replace(
        "territories:",
        '  onec:\n    type: onec\n    base_url: http://1c/base\n    username: "${ONEC_USER}"\n'
        "    password: secret-pass\n    deal_crm: b24\n    profile: trade_11\nterritories:",
    )
    text += (
        "  - name: counterparty\n    crm: b24\n    on: [deal.created]\n"
        "    do: [{create_counterparty: {in: onec, name: '{{ deal.title }}'}}]\n"
    )
    assert load_config_text(text, {**ENV, "ONEC_USER": "u"})
    lines = _refused(text)
    assert lines == ["c.yaml:10: crms.onec.username: environment variable ONEC_USER is not set"]


def test_templates_see_the_results_of_earlier_steps_and_loop_names() -> None:
    text = GOOD.replace(
        'title: "Проверить: {{ deal.title }}"',
        'title: "{{ captain }} {% for k in deal.fields %}{{ k }}{% endfor %} {{ changes.stage.before }}"',
    )
    assert load_config_text(text, ENV)


def test_report_templates_are_checked_against_the_report_names() -> None:
    report = (
        "reports:\n  - name: daily\n    crm: b24\n    schedule: '0 19 * * *'\n"
        "    title: 'Итоги {{ day }}'\n    text: '{{ stats.won }} {{ stats.wno }}'\n"
    )
    lines = _refused(GOOD + report)
    assert len(lines) == 1 and "reports[0].text: unknown attribute stats.wno" in lines[0]
    assert "did you mean 'won'?" in lines[0]


def test_check_command_prints_them_and_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "c.yaml"
    path.write_text(GOOD.replace("{{ deal.title }} {{", "{{ deal.titel }} {{"), encoding="utf-8")
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 2
    assert "did you mean 'title'?" in result.output


def test_a_method_call_is_not_an_attribute_and_get_reads_a_field() -> None:
    from connector.config.loader import load_raw
    from connector.config.meaning import Reference, check_meaning

    text = GOOD.replace(
        "{{ deal.fields.UF_CRM_ADDRESS }}", "{{ deal.title.upper() }} {{ deal.fields.get('UF_CRM_INN', '') }}"
    )
    cfg = load_config_text(text, ENV)
    from adapters.registry import configured

    meaning = check_meaning(
        load_raw(text, ENV), list(enumerate(cfg.rules)), [], list(enumerate(cfg.territories)), configured(cfg.crms)
    )
    fields = {r.value for r in meaning.references if isinstance(r, Reference) and r.kind == "field"}
    assert fields == {"UF_CRM_INN"}
    lines = _refused(text.replace("deal.title.upper()", "deal.titel.upper()"))
    assert len(lines) == 1 and "unknown attribute deal.titel" in lines[0]


def test_marshmallow_messages_get_a_hint_and_never_the_value() -> None:
    text = GOOD.replace("crms:", "server: {port: '${B24_TOKEN}'}\ncrms:").replace(
        "      - escalate: {to: 7,", "      - escalate: {"
    )
    lines = _refused(text)
    assert any("server.port: must be an integer" in line for line in lines), lines
    assert any("escalate.to: 'to' is required here: add it" in line for line in lines), lines
    assert not any(ENV["B24_TOKEN"] in line for line in lines)


def test_a_misspelt_condition_is_placed_at_its_own_key() -> None:
    lines = _refused(GOOD.replace('when: {stage: "C1:NEW"}', 'when: {stge: "C1:NEW"}'))
    assert lines == ["c.yaml:15: rules[0].when.stge: unknown condition 'stge'; did you mean 'stage'?"]


def test_a_misspelt_field_test_says_the_closest_one() -> None:
    text = GOOD.replace('when: {stage: "C1:NEW"}', "when: {field: UF_CRM_SOURCE, equls: agent}")
    lines = _refused(text)
    assert lines == ["c.yaml:15: rules[0].when.equls: unknown field test 'equls'; did you mean 'equals'?"]
