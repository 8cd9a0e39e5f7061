"""Moving storage: the whole state copied to a new database, so switching to it redoes no work."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

from connector.cli import main
from connector.storage.models import CursorRow, InboxRow, OutboxRow
from connector.storage.outbox import Outbox
from connector.storage.store import Store
from domain import CreateTask, Event, EventKind
from domain.bookmarks import Bookmark
from domain.clock import utcnow

KEY = "rule:b24:7:task"


def _fill(store: Store) -> None:
    now = utcnow()
    store.inbox.add(Event("b24", EventKind.DEAL_CREATED, "7", now, "webhook-1"), now)
    store.cursors.save_bookmark("b24", "deals", Bookmark(now - timedelta(minutes=3)), now)
    with store.sessions() as s, s.begin():
        Outbox.stage(
            s,
            key=KEY,
            crm="b24",
            command=CreateTask("7", title="Проверить техвозможность", responsible_id="17"),
            rule="captain",
            now=now,
            trigger="deal.created",
        )


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"""
storage: {{url: "{url}"}}
crms: {{b24: {{type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/code/", application_token: "tok-12345678"}}}}
""",
        encoding="utf-8",
    )
    return path


def test_the_state_moves_and_a_decided_write_is_not_decided_again(tmp_path: Path, db_url: str) -> None:
    source_url = f"sqlite:///{tmp_path / 'old.db'}"
    source = Store(source_url)
    _fill(source)
    source.close()

    result = CliRunner().invoke(main, ["copy-storage", "--config", str(_config(tmp_path, source_url)), "--to", db_url])
    assert result.exit_code == 0, result.output
    assert "copied" in result.output and "outbox 1" in result.output and "inbox 1" in result.output

    target = Store(db_url)
    try:
        now = utcnow()
        with target.sessions() as s, s.begin():
            again = Outbox.stage(
                s,
                key=KEY,
                crm="b24",
                command=CreateTask("7", title="Проверить техвозможность", responsible_id="17"),
                rule="captain",
                now=now,
                trigger="deal.created",
            )
        assert again is False  # the idempotency key came along: no second task
        assert target.inbox.add(Event("b24", EventKind.DEAL_CREATED, "7", now, "webhook-1"), now) is False
        assert target.inbox.add(Event("b24", EventKind.DEAL_UPDATED, "7", now, "webhook-2"), now) is True
        with target.sessions() as s:
            assert s.scalar(select(func.count(InboxRow.id))) == 2  # new ids follow the copied ones
            assert s.scalar(select(func.count(OutboxRow.id))) == 1
            assert s.get(CursorRow, ("b24", "deals")) is not None
    finally:
        target.close()


def test_a_target_with_rows_is_refused(tmp_path: Path) -> None:
    source_url, target_url = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    for url in (source_url, target_url):
        store = Store(url)
        _fill(store)
        store.close()
    result = CliRunner().invoke(
        main, ["copy-storage", "--config", str(_config(tmp_path, source_url)), "--to", target_url]
    )
    assert result.exit_code == 1 and "already has rows in" in result.output
