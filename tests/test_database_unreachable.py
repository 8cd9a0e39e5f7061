"""A database that cannot be reached at start: each command says so in one line and exits 3,
with no traceback and no password."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import EXIT_DATABASE, main

CONFIG = """
storage: {{url: "{url}", connect_timeout: 2s}}
crms:
  b24:
    type: bitrix24
    webhook_url: "http://127.0.0.1:9/rest/1/abcdefgh12345678/"
    application_token: "unreachable-token"
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


COMMANDS = [
    ["run"],
    ["status"],
    ["why", "42"],
    ["replay", "--all"],
    ["init-db"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_postgresql_refusing_at_start_is_one_line_and_exit_3(tmp_path: Path, command: list[str]) -> None:
    url = f"postgresql+psycopg://connector:hunter2secret@127.0.0.1:{_closed_port()}/connector"
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(url=url), encoding="utf-8")
    result = CliRunner().invoke(main, [*command, "--config", str(config)])
    assert result.exit_code == EXIT_DATABASE, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("database postgresql+psycopg://connector:***@127.0.0.1:")
    assert "unavailable" in lines[0] and "refused" in lines[0].lower()
    assert "Traceback" not in result.output and "hunter2secret" not in result.output


@pytest.mark.parametrize("command", [["run"], ["status"], ["init-db"]], ids=lambda c: c[0])
def test_sqlite_file_that_cannot_be_made_is_one_line_and_exit_3(tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database's folder should be")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(url=f"sqlite:///{blocker / 'sub' / 'c.db'}"), encoding="utf-8")
    result = CliRunner().invoke(main, [*command, "--config", str(config)])
    assert result.exit_code == EXIT_DATABASE, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "unavailable" in lines[0], result.output
