"""``connector check --online`` against the simulators: what the config names must exist in the CRM.

Each simulator is served on a loopback port and a config points at it with one wrong stage,
one unknown user and one misspelt field: the command prints exactly those three problems with
their file:line:key, and exits 2. A correct config passes and prints the webhook URL to give.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from simulators.bitrix24 import Bitrix24Simulator
from simulators.onec import OneCSimulator
from simulators.pipedrive import PipedriveSimulator
from simulators.server import SimulatorServer

B24_CONFIG = """\
server: {{host: 127.0.0.1, port: 8080}}
crms:
  b24:
    type: bitrix24
    webhook_url: "{url}"
    application_token: "simtoken-long"
    max_attempts: 1
territories:
  - {{match: {{city: Казань}}, captain: {captain}}}
rules:
  - name: route
    crm: b24
    on: [deal.stage_changed]
    when: {{stage: "{stage}", field: {field}, equals: agent}}
    do:
      - assign_captain: {{fallback: 1}}
      - create_task: {{title: "Маршрут: {{{{ deal.title }}}}", responsible: captain, due: 24h}}
"""


@pytest.fixture
def b24() -> Iterator[tuple[Bitrix24Simulator, SimulatorServer]]:
    sim = Bitrix24Simulator(application_token="simtoken-long", rate=50, burst=50)
    sim.add_user("Иван", "Петров")
    sim.add_deal_user_field("UF_CRM_SOURCE", "Источник")
    server = sim.serve()
    yield sim, server
    server.stop()
    sim.close()


def _run(tmp_path: Path, text: str, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--online", "--config", str(path), *args])
    return result.exit_code, result.stdout, result.stderr


def _problem_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if line.startswith("  ")]


def test_bitrix24_right_config_passes_and_says_the_webhook_url(
    tmp_path: Path, b24: tuple[Bitrix24Simulator, SimulatorServer]
) -> None:
    sim, server = b24
    user = next(u for u, row in sim.users.items() if row["NAME"] == "Иван")
    text = B24_CONFIG.format(
        url=server.base_url + sim.webhook_base, captain=user, stage="C1:NEW", field="UF_CRM_SOURCE"
    )
    code, out, err = _run(tmp_path, text)
    assert code == 0, err
    assert "b24 (bitrix24): connected as user 1" in out
    assert "permissions: crm, task, user" in out
    assert "give the CRM this webhook URL: http://127.0.0.1:8080/hooks/bitrix24/b24" in out
    assert "ONCRMDEALUPDATE" in out


def test_bitrix24_wrong_stage_user_and_field_are_three_lines(
    tmp_path: Path, b24: tuple[Bitrix24Simulator, SimulatorServer]
) -> None:
    sim, server = b24
    text = B24_CONFIG.format(url=server.base_url + sim.webhook_base, captain=77, stage="C1:NEWW", field="UF_CRM_SORCE")
    code, _, err = _run(tmp_path, text)
    assert code == 2
    lines = _problem_lines(err)
    path = tmp_path / "c.yaml"
    assert lines == [
        f"{path}:9: territories[0].captain: no user 77 in b24: give the id of an existing user (the CRM's user list)",
        f"{path}:14: rules[0].when.stage: no stage 'C1:NEWW' in b24; did you mean 'C1:NEW'?",
        f"{path}:14: rules[0].when.field: no deal field 'UF_CRM_SORCE' in b24; did you mean 'UF_CRM_SOURCE'?",
    ]


def test_bitrix24_missing_scope_and_lost_stage_are_reported(
    tmp_path: Path, b24: tuple[Bitrix24Simulator, SimulatorServer]
) -> None:
    sim, server = b24
    sim.scopes = ["crm", "user"]
    text = B24_CONFIG.format(
        url=server.base_url + sim.webhook_base, captain=1, stage="C1:NEW", field="UF_CRM_SOURCE"
    ).replace("    max_attempts: 1\n", '    max_attempts: 1\n    lost_stage: {"1": "C1:LOST"}\n')
    code, _, err = _run(tmp_path, text)
    assert code == 2
    lines = _problem_lines(err)
    assert any("crms.b24: the credentials lack task" in line for line in lines), lines
    assert any("crms.b24.lost_stage.1: no stage 'C1:LOST' in pipeline 1" in line for line in lines), lines


def test_an_unreachable_crm_is_one_line(tmp_path: Path) -> None:
    text = B24_CONFIG.format(
        url="http://127.0.0.1:9/rest/1/x/", captain=1, stage="C1:NEW", field="UF_CRM_SOURCE"
    ).replace("max_attempts: 1", "max_attempts: 1\n    timeout: 2s")
    code, _, err = _run(tmp_path, text)
    assert code == 2
    lines = _problem_lines(err)
    assert len(lines) == 1 and "crms.b24: cannot read b24" in lines[0], lines
    assert "127.0.0.1:9 refused the connection" in lines[0]
    assert "Traceback" not in err


PD_CONFIG = """\
crms:
  pd:
    type: pipedrive
    base_url: "{url}"
    api_token: "simtoken-long-enough"
    webhook_user: connector
    webhook_password: "hook-password"
    max_attempts: 1
rules:
  - name: proposal
    crm: pd
    on: [deal.stage_changed]
    when: {{stage: "{stage}", field: {field}, empty: false}}
    do:
      - create_task: {{title: "Proposal: {{{{ deal.title }}}}", responsible: {user}, due: 24h}}
"""


@pytest.fixture
def pd() -> Iterator[tuple[PipedriveSimulator, SimulatorServer, str]]:
    sim = PipedriveSimulator(api_token="simtoken-long-enough")
    key = sim.add_deal_field("Source")
    server = SimulatorServer(sim.app).start()
    yield sim, server, key
    server.stop()
    sim.close()


def test_pipedrive_wrong_stage_user_and_field_are_three_lines(
    tmp_path: Path, pd: tuple[PipedriveSimulator, SimulatorServer, str]
) -> None:
    sim, server, key = pd
    good = PD_CONFIG.format(url=server.base_url, stage=4, field=key, user=sim.user_id)
    code, out, err = _run(tmp_path, good)
    assert code == 0, err
    assert "pd (pipedrive): connected as user" in out and "sales (admin)" in out
    assert "/hooks/pipedrive/pd" in out

    bad = PD_CONFIG.format(url=server.base_url, stage=44, field=key[:-1] + "x", user=99)
    code, _, err = _run(tmp_path, bad)
    assert code == 2
    lines = _problem_lines(err)
    assert len(lines) == 3, lines
    assert ":13: rules[0].when.stage: no stage '44' in pd; it has: 1, 2, 3, 4, 5" in lines[0]
    assert ":13: rules[0].when.field: no deal field" in lines[1]
    assert ":15: rules[0].do[0].create_task.responsible: no user 99 in pd" in lines[2]


ONEC_CONFIG = """\
crms:
  b24:
    type: bitrix24
    webhook_url: "{b24_url}"
    application_token: "simtoken-long"
    max_attempts: 1
  onec:
    type: onec
    base_url: "{onec_url}"
    username: Интеграция
    password: secret
    deal_crm: b24
    profile: trade_11
    max_attempts: 1
{entities}rules:
  - name: invoice
    crm: b24
    on: [invoice.issued]
    when: {{stage: {stage}}}
    do:
      - update_fields: {{{field}: "{{{{ event.data.number }}}}"}}
      - add_comment: {{text: "Счёт {{{{ event.data.number }}}}"}}
      - escalate: {{to: {user}, title: "Счёт"}}
"""


def test_onec_and_its_deals_crm_wrong_entity_stage_user_field(
    tmp_path: Path, b24: tuple[Bitrix24Simulator, SimulatorServer]
) -> None:
    b24_sim, b24_server = b24
    onec = OneCSimulator()
    onec_server = onec.serve()
    try:
        urls = {
            "b24_url": b24_server.base_url + b24_sim.webhook_base,
            "onec_url": onec_server.base_url + onec.base_path,
        }
        good = ONEC_CONFIG.format(**urls, entities="", stage="PREPAYMENT_INVOICE", field="UF_CRM_SOURCE", user=1)
        code, out, err = _run(tmp_path, good)
        assert code == 0, err
        assert "onec (onec): connected as Интеграция" in out

        bad = ONEC_CONFIG.format(
            **urls,
            entities="    entities: {invoice: {set: Document_СчётНаОплату}}\n",
            stage="PREPAYMENT",
            field="UF_CRM_INVOCE",
            user=55,
        )
        code, _, err = _run(tmp_path, bad)
        assert code == 2
        lines = _problem_lines(err)
        assert len(lines) == 4, lines
        assert "crms.onec.entities.invoice: entity set 'Document_СчётНаОплату' is not published" in lines[0]
        assert "rules[0].when.stage: no stage 'PREPAYMENT' in b24" in lines[1]
        assert "rules[0].do[0].update_fields.UF_CRM_INVOCE: no deal field 'UF_CRM_INVOCE' in b24" in lines[2]
        assert "rules[0].do[2].escalate.to: no user 55 in b24" in lines[3]
    finally:
        onec_server.stop()


def test_the_example_configs_pass_the_connection_test_against_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    from connector.demo.sandbox import SandboxOptions, running_sandbox

    root = Path(__file__).resolve().parents[1]
    with running_sandbox(SandboxOptions(bitrix24_port=0, pipedrive_port=0, onec_port=0)) as sandbox:
        for name, value in sandbox.env.items():
            monkeypatch.setenv(name, value)
        for config in (root / "config.example.yaml", root / "examples" / "money-in-1c.yaml"):
            result = CliRunner().invoke(main, ["check", "--online", "--config", str(config)])
            assert result.exit_code == 0, result.stderr
            assert "b24 (bitrix24): connected as user 1" in result.stdout
