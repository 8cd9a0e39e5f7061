"""`why DEAL` shows the deal's inbox rows in any unfinished state with their errors, never
"nothing recorded" while a delivery for it is stuck."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from connector.cli import main
from connector.storage.models import InboxRow
from connector.storage.store import Store
from domain.clock import utcnow
from domain.events import Event, EventKind


def _config(tmp_path: Path) -> tuple[Path, str]:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    config = tmp_path / "c.yaml"
    config.write_text(
        f'storage: {{url: "{url}"}}\n'
        'crms: {b24: {type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/c/", '
        'application_token: "tok-12345678"}}\n',
        encoding="utf-8",
    )
    return config, url


def test_why_shows_new_failed_and_parked_inbox_rows_with_their_errors(tmp_path: Path) -> None:
    config, url = _config(tmp_path)
    store = Store(url)
    now = utcnow()
    for n, deal in enumerate(["1", "1", "1", "2"]):
        store.inbox.add(Event("b24", EventKind.DEAL_UPDATED, deal, now, f"u:{n}"), now + timedelta(seconds=n))
    with store.sessions() as session:
        rows = list(session.scalars(select(InboxRow).order_by(InboxRow.id)))
    store.inbox.fail([rows[1]], "ConnectionError calling Bitrix24: cannot resolve p.bitrix24.ru", final=False, now=now)
    store.inbox.park([rows[2]], "NotFoundError code=NOT_FOUND description='deal not found'", now)
    store.close()

    result = CliRunner().invoke(main, ["why", "1", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "nothing recorded" not in result.output
    out = result.output
    assert f"inbox {rows[0].id}" in out and f"inbox {rows[1].id}" in out and f"inbox {rows[2].id}" in out
    assert f"inbox {rows[3].id}" not in out  # another deal's
    assert "cannot resolve p.bitrix24.ru" in out and "deal not found" in out
    assert "parked" in out and "new" in out


def test_why_with_nothing_at_all_still_says_so(tmp_path: Path) -> None:
    config, url = _config(tmp_path)
    Store(url).close()
    result = CliRunner().invoke(main, ["why", "5", "--config", str(config)])
    assert result.exit_code == 1 and "nothing recorded for deal 5" in result.output
