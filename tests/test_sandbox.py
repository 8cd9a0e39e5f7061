"""`connector sandbox`: config.example.yaml and every example run against it as they are, and a
taken port is one line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import load_config_text
from connector.demo.sandbox import B24_PEOPLE, SandboxOptions, export_lines, running_sandbox
from connector.runtime import Runtime
from tests.helpers import wait_for

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.yaml"
EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_every_example_passes_the_online_check_with_the_printed_variables_only(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The users, stages, pipelines and fields each example names exist in the sandbox, and the
    variables it prints (Telegram's too) are all an example reads."""
    options = SandboxOptions(bitrix24_port=0, pipedrive_port=0, onec_port=0, telegram_port=0)
    with running_sandbox(options) as sandbox:
        for name in [*sandbox.env, "TG_API_URL"]:
            monkeypatch.delenv(name, raising=False)
        assert {"TG_API_URL", "TG_BOT_TOKEN", "TG_SHARED_CHAT_ID", "TG_CARE_CHAT_ID"} <= set(sandbox.env)
        assert EXAMPLES
        for example in EXAMPLES:
            result = CliRunner().invoke(main, ["check", "--online", "--config", str(example)], env=sandbox.env)
            assert result.exit_code == 0, f"{example.name}: {result.output}"
            assert f"{example.name}: OK" in result.output


@pytest.mark.slow
def test_the_pipedrive_example_posts_to_the_sandbox_telegram(tmp_path: Path) -> None:
    """The Pipedrive example's chat messages reach the sandbox's Telegram stand-in, unedited."""
    options = SandboxOptions(bitrix24_port=0, pipedrive_port=0, onec_port=0, telegram_port=0)
    pipedrive = Path(__file__).resolve().parents[1] / "examples" / "b2b-sales-pipedrive.yaml"
    with running_sandbox(options) as sandbox:
        text = pipedrive.read_text(encoding="utf-8").replace(
            'storage: {url: "sqlite:///data/b2b-pipedrive.db"}',
            f'storage: {{url: "sqlite:///{tmp_path / "pd.db"}"}}\nserver: {{host: 127.0.0.1, port: 0}}',
        )
        runtime = Runtime(load_config_text(text, environ=sandbox.env))
        runtime.start()
        try:
            sandbox.pipedrive.add_webhook(
                f"{runtime.intake_url}/hooks/pipedrive/pd",
                event_action="*",
                event_object="deal",
                version="2.0",
                http_auth_user=sandbox.env["PD_WEBHOOK_USER"],
                http_auth_password=sandbox.env["PD_WEBHOOK_PASSWORD"],
            )
            deal = sandbox.pipedrive.add_deal({"title": "Футболки", "stage_id": 5, "owner_id": 31, "value": 100})
            sandbox.pipedrive.update_deal(deal, {"status": "won"})
            care = sandbox.env["TG_CARE_CHAT_ID"]
            assert wait_for(lambda: len(sandbox.telegram.texts(care)) == 1, timeout=30)
            assert sandbox.telegram.texts(care)[0].startswith("Новый клиент отдела заботы: Футболки")
        finally:
            runtime.stop()


def test_config_example_runs_against_the_sandbox_as_it_is(tmp_path: Path) -> None:
    options = SandboxOptions(bitrix24_port=0, pipedrive_port=0, onec_port=0)
    with running_sandbox(options) as sandbox:
        text = (
            EXAMPLE.read_text(encoding="utf-8")
            .replace("sqlite:///data/connector.db", f"sqlite:///{tmp_path / 'c.db'}")
            .replace("port: 8080", "port: 0")
            .replace("host: 0.0.0.0", "host: 127.0.0.1")
        )
        runtime = Runtime(load_config_text(text, environ=sandbox.env))
        runtime.start()
        try:
            sandbox.bitrix24.handler_url = f"{runtime.intake_url}/hooks/bitrix24/b24"
            deal = sandbox.bitrix24.add_deal(
                {
                    "TITLE": "Подключение",
                    "CATEGORY_ID": "1",
                    "STAGE_ID": "C1:NEW",
                    "UF_CRM_ADDRESS": "Казань, Советский район, ул. Академика Сахарова, 4",
                }
            )
            assert wait_for(lambda: len(sandbox.bitrix24.tasks_for_deal(deal)) == 1, timeout=30)
            task = sandbox.bitrix24.tasks_for_deal(deal)[0]
            assert task["RESPONSIBLE_ID"] == "17" and "17" in {str(k) for k in B24_PEOPLE}
            assert sandbox.bitrix24.deals[deal]["ASSIGNED_BY_ID"] == "17"
        finally:
            runtime.stop()


def test_export_lines_follow_the_platform() -> None:
    env = {"B24_APP_TOKEN": "sandbox-app-token"}
    assert export_lines(env, windows=False) == ["export B24_APP_TOKEN='sandbox-app-token'"]
    assert export_lines(env, windows=True) == ['$env:B24_APP_TOKEN = "sandbox-app-token"']


def test_a_taken_port_is_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["sandbox", "--pipedrive-port", str(port), "--bitrix24-port", "0"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.output and "--pipedrive-port" in result.output
