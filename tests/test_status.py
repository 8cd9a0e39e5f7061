"""`connector status`, `replay` and `discard` from the command line, on a database with known rows."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from connector.cli import main
from connector.storage.audit import POLL_FAILED, Audit
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


def _dead_letter(store: Store, key: str = "k1") -> None:
    now = utcnow()
    with store.sessions() as s, s.begin():
        s.add(
            OutboxRow(
                idempotency_key=key,
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


def test_status_exit_code_follows_attention_and_replay_requeues(tmp_path: Path) -> None:
    config, store = _setup(tmp_path)
    now = utcnow()
    store.cursors.save_bookmark("b24", "deals", Bookmark(now), now)
    _dead_letter(store)
    runner = CliRunner()
    result = runner.invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert "dead letter" in result.output and "RESPONSIBLE_ID unknown" in result.output
    assert "secret-code" not in result.output and "tok-12345678" not in result.output

    assert runner.invoke(main, ["replay", "--config", str(config)]).exit_code == 2  # nothing chosen
    result = runner.invoke(main, ["replay", "--config", str(config), "--all", "--wait", "0.6"])
    assert "1 dead letter(s) queued again: 1" in result.output
    assert "still pending 1" in result.output  # no connector runs here to resend it
    assert result.exit_code == 1  # the wait ended before the resend: not a success
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


def test_replay_and_discard_exit_non_zero_when_nothing_matched(tmp_path: Path) -> None:
    config, store = _setup(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["replay", "--config", str(config), "--id", "17"])
    assert result.exit_code == 1 and "0 dead letter(s) queued again" in result.output
    result = runner.invoke(main, ["discard", "--config", str(config), "--id", "17", "--reason", "gone"])
    assert result.exit_code == 1 and "0 dead letter(s) discarded" in result.output
    store.close()


def test_discard_silences_an_unfixable_dead_letter_and_records_why(tmp_path: Path) -> None:
    config, store = _setup(tmp_path)
    now = utcnow()
    store.cursors.save_bookmark("b24", "deals", Bookmark(now), now)
    _dead_letter(store)
    runner = CliRunner()
    assert runner.invoke(main, ["status", "--config", str(config)]).exit_code == 1
    assert runner.invoke(main, ["discard", "--config", str(config), "--id", "1"]).exit_code == 2  # no reason
    result = runner.invoke(main, ["discard", "--config", str(config), "--id", "1", "--reason", "user 17 deleted"])
    assert result.exit_code == 0 and "1 dead letter(s) discarded: 1" in result.output
    result = runner.invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 0 and "all well" in result.output
    with store.sessions() as s:
        row = s.get(OutboxRow, 1)
        assert row is not None and row.status == "discarded"
    trail = store.audit.for_deal("b24", "7")
    assert any("discarded by" in r.message and "user 17 deleted" in r.message for r in trail)
    # a discarded row is no longer a dead letter: replay does not bring it back
    assert runner.invoke(main, ["replay", "--config", str(config), "--id", "1"]).exit_code == 1
    store.close()


def test_never_polled_is_no_problem_during_the_first_period_after_a_start(tmp_path: Path) -> None:
    config, store = _setup(tmp_path)  # poll_every 5m
    started = utcnow()
    store.cursors.started("host:1", started)
    runner = CliRunner()
    result = runner.invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 0 and "never polled" not in result.output, result.output
    assert "first poll since the start pending" in result.output
    # a first poll that failed is reported at once, grace or not
    with store.sessions() as s, s.begin():
        Audit.record(s, at=utcnow(), crm="b24", action=POLL_FAILED, message="b24: DNS failed")
    result = runner.invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 1 and "DNS failed" in result.output
    store.close()


def test_never_polled_is_a_problem_once_the_first_period_has_passed(tmp_path: Path) -> None:
    config, store = _setup(tmp_path)
    store.cursors.started("host:1", utcnow() - timedelta(minutes=7))
    store.close()
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 1 and "b24: never polled" in result.output
