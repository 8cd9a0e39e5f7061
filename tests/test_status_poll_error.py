"""A poll that fails is recorded, and `status` says why instead of only "never polled"."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import load_config
from connector.runtime import Runtime
from domain.bookmarks import Bookmark
from domain.clock import utcnow
from domain.errors import AdapterError


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"""
storage: {{url: "sqlite:///{tmp_path / "c.db"}"}}
crms: {{b24: {{type: bitrix24, webhook_url: "http://127.0.0.1:9/rest/1/secret-code/",
              application_token: "tok-12345678", poll_every: 5m, max_attempts: 1, timeout: 2s}}}}
""",
        encoding="utf-8",
    )
    return config


def test_status_says_the_last_poll_error_of_a_crm_never_polled(tmp_path: Path) -> None:
    config = _config(tmp_path)
    runtime = Runtime(load_config(config))
    try:
        with pytest.raises(AdapterError):
            runtime.poll("b24")
    finally:
        runtime.store.close()
        for adapter in runtime.adapters.values():
            adapter.close()
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if "b24: never polled" in x)
    assert "failed: ConnectionError calling Bitrix24" in line and "127.0.0.1:9 refused the connection" in line
    assert "secret-code" not in result.output


def test_a_poll_that_succeeds_later_clears_the_error(tmp_path: Path) -> None:
    config = _config(tmp_path)
    runtime = Runtime(load_config(config))
    try:
        with pytest.raises(AdapterError):
            runtime.poll("b24")
        now = utcnow()
        runtime.store.cursors.save_bookmark("b24", "deals", Bookmark(now), now)
    finally:
        runtime.store.close()
        for adapter in runtime.adapters.values():
            adapter.close()
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert "failed:" not in result.output
