"""`connector status` and `connector replay` from the command line, on a database with known rows."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from connector.cli import main
from connector.storage.models import OutboxRow
from connector.storage.store import Store
from domain.bookmarks import Bookmark
from domain.clock import utcnow


def _setup(tmp_path: Path) -> tuple[Path, Store]:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"""
storage: {{url: "{url}"}}
crms: {{b24: {{type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/secret-code/",
              application_token: "tok-12345678", poll_every: 5m}}}}
""",
        encoding="utf-8",
    )
    return config, Store(url)


def test_status_exit_code_follows_attention_and_replay_requeues(tmp_path: Path) -> None:
    config, store = _setup(tmp_path)
    now = utcnow()
    store.cursors.save_bookmark("b24", "deals", Bookmark(now), now)
    with store.sessions() as s, s.begin():
        s.add(
            OutboxRow(
                idempotency_key="k1",
                crm="b24",
                deal_id="7",
                rule="r",
                command="create_task",
                payload={},
                status="dead",
                attempts=8,
                next_try_at=now,
                last_error="FatalError: RESPONSIBLE_ID unknown",
                correlation_id="c1",
                created_at=now - timedelta(hours=1),
                updated_at=now,
            )
        )
    runner = CliRunner()
    result = runner.invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert "dead letter" in result.output and "RESPONSIBLE_ID unknown" in result.output
    assert "secret-code" not in result.output and "tok-12345678" not in result.output

    assert runner.invoke(main, ["replay", "--config", str(config)]).exit_code == 2  # nothing chosen
    result = runner.invoke(main, ["replay", "--config", str(config), "--all", "--wait", "0.6"])
    assert result.exit_code == 0 and "1 dead letter(s) queued again: 1" in result.output
    assert "still pending 1" in result.output  # no connector runs here to resend it
    with store.sessions() as s:
        row = s.get(OutboxRow, 1)
        assert row is not None and (row.status, row.attempts) == ("pending", 1)

    result = runner.invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "all well" in result.output
    store.close()


def test_status_flags_a_crm_never_polled(tmp_path: Path) -> None:
    config, store = _setup(tmp_path)
    store.close()
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 1 and "b24: never polled" in result.output
