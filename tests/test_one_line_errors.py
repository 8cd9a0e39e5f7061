"""Expected failures are one line an operator can act on (what failed, the cause, a hint):
every command, every scheduled job and loop; the traceback only with --traceback or at DEBUG."""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import responses
from click.testing import CliRunner

from connector.cli import EXIT_CRM, EXIT_DATABASE, EXIT_PORT, main
from connector.config import load_config
from connector.runtime import Runtime
from connector.storage.engine import DatabaseUnavailable
from connector.ticker import Ticker
from domain.errors import AdapterError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, url: str, *, extra: str = "") -> Path:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"""
storage: {{url: "sqlite:///{tmp_path / "c.db"}"}}
crms: {{b24: {{type: bitrix24, webhook_url: "{url}", application_token: "tok-12345678",
              poll_every: 5m, max_attempts: 1, timeout: 3s}}}}
{extra}
""",
        encoding="utf-8",
    )
    return config


def _one_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_dry_run_against_a_refusing_crm_is_one_line(tmp_path: Path) -> None:
    port = _closed_port()
    config = _config(tmp_path, f"http://127.0.0.1:{port}/rest/1/secret-code-1/")
    result = CliRunner().invoke(main, ["dry-run", "--config", str(config), "--since", "2026-01-01"])
    assert result.exit_code == EXIT_CRM, (result.output, result.exception)
    line = _one_line(result.output)
    assert line.startswith("b24: ConnectionError calling Bitrix24")
    assert f"127.0.0.1:{port} refused the connection" in line and "check crms.b24's URL" in line
    assert "secret-code-1" not in line


def test_dry_run_against_a_host_that_does_not_resolve_names_the_host(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://portal.invalid/rest/1/secret-code-1/")
    result = CliRunner().invoke(main, ["dry-run", "--config", str(config), "--since", "2026-01-01"])
    assert result.exit_code == EXIT_CRM, (result.output, result.exception)
    assert "cannot resolve portal.invalid" in _one_line(result.output)


@responses.activate
def test_a_wrong_token_is_one_line_with_the_hint(tmp_path: Path) -> None:
    url = "https://portal.example/rest/1/wrong-code-1/"
    responses.add(
        responses.POST,
        re.compile(re.escape(url) + ".*"),
        status=401,
        json={"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"},
    )
    config = _config(tmp_path, url)
    result = CliRunner().invoke(main, ["dry-run", "--config", str(config), "--since", "2026-01-01"])
    assert result.exit_code == EXIT_CRM, (result.output, result.exception)
    line = _one_line(result.output)
    assert "INVALID_CREDENTIALS" in line and "check crms.b24's credentials" in line
    assert "wrong-code-1" not in line


def test_traceback_flag_shows_the_traceback(tmp_path: Path) -> None:
    config = _config(tmp_path, f"http://127.0.0.1:{_closed_port()}/rest/1/secret-code-1/")
    result = CliRunner().invoke(main, ["--traceback", "dry-run", "--config", str(config), "--since", "2026-01-01"])
    assert result.exit_code != 0
    assert isinstance(result.exception, AdapterError)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """`connector run` configures the process's logging: put it back for the tests after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("engine", ["waitress", "granian"])
@pytest.mark.usefixtures("root_logging")
def test_run_with_the_port_in_use_is_one_line_and_exit_6(tmp_path: Path, engine: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = _config(
            tmp_path,
            f"http://127.0.0.1:{_closed_port()}/rest/1/secret-code-1/",
            extra=f"server: {{host: 127.0.0.1, port: {port}, engine: {engine}}}",
        )
        result = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert result.exit_code == EXIT_PORT, (result.output, result.exception)
    info = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ INFO ")  # start-up log lines, as every run prints
    line = _one_line("\n".join(x for x in result.output.splitlines() if not info.match(x)))
    assert line.startswith(f"cannot listen on 127.0.0.1:{port}: the port is in use")


def test_a_database_that_refuses_a_command_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    url = f"postgresql+psycopg://u:pw-secret-1@127.0.0.1:{_closed_port()}/x"
    config.write_text(
        f'storage: {{url: "{url}", connect_timeout: 2s}}\n'
        'crms: {b24: {type: bitrix24, webhook_url: "http://127.0.0.1:9/rest/1/abcdefgh1/", '
        'application_token: "tok-12345678"}}\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == EXIT_DATABASE
    assert "refused" in _one_line(result.output).lower()


def test_a_failed_scheduled_poll_is_one_log_line_naming_the_cause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = _closed_port()
    runtime = Runtime(load_config(_config(tmp_path, f"http://127.0.0.1:{port}/rest/1/secret-code-1/")))
    try:
        with caplog.at_level(logging.INFO):
            assert runtime._as_leader(runtime.poll, "b24") == 0
    finally:
        runtime.stop()
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 1, [r.getMessage() for r in caplog.records]
    message = failed[0].getMessage()
    assert message.startswith("poll b24 failed: b24: ConnectionError calling Bitrix24")
    assert f"127.0.0.1:{port} refused the connection" in message
    assert failed[0].exc_info is None and "secret-code-1" not in message


def test_a_failed_scheduled_poll_keeps_its_traceback_at_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runtime = Runtime(load_config(_config(tmp_path, f"http://127.0.0.1:{_closed_port()}/rest/1/secret-code-1/")))
    try:
        with caplog.at_level(logging.DEBUG, logger="connector.runtime"):
            runtime._as_leader(runtime.poll, "b24")
    finally:
        runtime.stop()
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)


def test_a_loop_tick_that_fails_expectedly_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    again = threading.Event()
    calls = []

    def tick() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise DatabaseUnavailable("database sqlite:///x.db unavailable: disk I/O error")
        again.set()
        return 0

    loop = Ticker("worker", tick, 0.01)
    with caplog.at_level(logging.INFO, logger="connector.ticker"):
        loop.start()
        assert again.wait(5)
        loop.stop()
    lines = [r for r in caplog.records if "tick failed" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert lines[0].getMessage() == "worker tick failed: database sqlite:///x.db unavailable: disk I/O error"


def test_the_adapter_error_itself_names_the_host(tmp_path: Path) -> None:
    """Worker and dispatcher lines print the error: it carries the host and the reason."""
    from adapters.registry import build_adapter

    cfg = load_config(_config(tmp_path, "http://portal.invalid/rest/1/secret-code-1/"))
    adapter = build_adapter("b24", cfg.crms["b24"])
    try:
        with pytest.raises(AdapterError) as caught:
            adapter.get_deals(["1"])  # type: ignore[attr-defined]
    finally:
        adapter.close()
    assert "ConnectionError calling Bitrix24: cannot resolve portal.invalid" in str(caught.value)


def test_a_row_the_database_drops_is_one_worker_line(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import OperationalError

    from connector.config import load_config_text
    from connector.storage.store import Store
    from connector.worker import Worker
    from domain.clock import utcnow
    from domain.events import Event, EventKind
    from tests.test_dispatcher import CONFIG as PLAIN_CONFIG
    from tests.test_worker_faults import OneDeal

    store = Store("sqlite://")
    now = utcnow()
    store.inbox.add(Event("b24", EventKind.DEAL_UPDATED, "7", now, "k1"), now)
    worker = Worker(load_config_text(PLAIN_CONFIG), store, {"b24": OneDeal()}, clock=lambda: now)

    def dropped(*args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        raise OperationalError("UPDATE inbox", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(worker, "_process_row_now", dropped)
    with caplog.at_level(logging.INFO, logger="connector.worker"):
        worker.tick()
    store.close()
    failed = [r for r in caplog.records if r.getMessage().startswith("worker failed")]
    assert len(failed) == 1 and failed[0].exc_info is None
    assert "server closed the connection unexpectedly" in failed[0].getMessage()
