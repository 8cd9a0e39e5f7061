"""Alerts to the admins by e-mail: a paused CRM, dead letters rising, a deadline breached, a
database that cannot store; each once, resolved once, rate-limited; kept when SMTP fails."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import responses

from connector.alerts import Alerter, EmailSender
from connector.config import ConfigError, load_config_text
from connector.runtime import Runtime
from connector.storage.engine import DatabaseUnavailable
from connector.storage.models import BreachRow, OutboxRow
from connector.storage.store import Store
from domain.clock import utcnow
from domain.statuses import OutboxStatus
from tests.helpers import Clock
from tests.smtp_sink import SmtpSink


def _settings(port: int, min_interval: float = 600.0) -> dict:  # type: ignore[type-arg]
    email = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "username": "",
        "password": "",
        "sender": "connector@example.ru",
        "to": ["admins@example.ru"],
        "timeout": 5.0,
    }
    return {"email": email, "every": 60.0, "min_interval": min_interval}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'a.db'}")
    yield s
    s.close()


def _dead_letter(store: Store, n: int, now: datetime) -> None:
    with store.sessions() as session, session.begin():
        session.add(
            OutboxRow(
                idempotency_key=f"k{n}",
                crm="b24",
                deal_id=str(n),
                rule="greet",
                command="create_task",
                payload={},
                status=OutboxStatus.DEAD,
                attempts=5,
                next_try_at=now,
                last_error="NotFoundError user 17",
                correlation_id="c",
                created_at=now,
                updated_at=now,
            )
        )


def _breach(store: Store, deal: str, now: datetime) -> None:
    with store.sessions() as session, session.begin():
        session.add(
            BreachRow(crm="b24", deal_id=deal, deadline="first-call", responsible_id="7", due_at=now, breached_at=now)
        )


def _bodies(sink: SmtpSink) -> list[str]:
    return [m.get_payload(decode=True).decode() for m in sink.messages]  # type: ignore[union-attr]


def test_each_condition_is_told_once_and_resolved_once(store: Store) -> None:
    clock = Clock()
    with SmtpSink() as sink:
        settings = _settings(sink.port, min_interval=0)
        alerter = Alerter(store, settings, EmailSender(settings["email"]), clock, "Europe/Moscow")
        _breach(store, "1", clock())  # before the first look: not news
        assert alerter.check() == 0

        store.cursors.pause("b24", "paused: b24 refused our credentials (AuthError)", clock())
        _dead_letter(store, 1, clock())
        _breach(store, "42", clock())
        assert alerter.check() == 3
        assert alerter.check() == 0  # nothing new: nothing sent again
        store.cursors.resume("b24")
        with store.sessions() as session, session.begin():
            session.query(OutboxRow).delete()
        assert alerter.check() == 2

    assert len(sink.messages) == 2
    first, second = _bodies(sink)
    assert sink.messages[0]["Subject"] == "[crm-connector] 3 alert(s), 0 resolved"
    assert sink.messages[0]["To"] == "admins@example.ru"
    assert "ALERT b24 paused since" in first and "refused our credentials" in first
    assert "ALERT dead letters: 1 (was 0)" in first
    assert "ALERT deadline first-call breached on b24 deal 42 (responsible 7)" in first
    assert "deal 1 " not in first
    assert "RESOLVED b24 is processed again" in second and "RESOLVED no dead letters left" in second


def test_messages_are_rate_limited_and_what_waits_goes_into_the_next(store: Store) -> None:
    clock = Clock()
    with SmtpSink() as sink:
        settings = _settings(sink.port, min_interval=600)
        alerter = Alerter(store, settings, EmailSender(settings["email"]), clock)
        _dead_letter(store, 1, clock())
        assert alerter.check() == 1
        _dead_letter(store, 2, clock())
        clock.now += timedelta(seconds=60)
        assert alerter.check() == 0  # within min_interval: waits
        _dead_letter(store, 3, clock())
        clock.now += timedelta(seconds=60)
        assert alerter.check() == 0
        clock.now += timedelta(seconds=600)
        assert alerter.check() == 2  # both rises, in one message
    assert len(sink.messages) == 2
    second = _bodies(sink)[1]
    assert "dead letters: 2 (was 1)" in second and "dead letters: 3 (was 2)" in second


def test_a_database_that_cannot_store_is_told_and_resolved(tmp_path: Path) -> None:
    clock = Clock()
    good = Store(f"sqlite:///{tmp_path / 'a.db'}")
    with SmtpSink() as sink:
        settings = _settings(sink.port, min_interval=0)
        alerter = Alerter(good, settings, EmailSender(settings["email"]), clock)
        assert alerter.check() == 0
        broken = Store.__new__(Store)  # a store whose database refuses every session

        def refusing():  # type: ignore[no-untyped-def]
            raise DatabaseUnavailable("database postgresql://u:***@127.0.0.1:5432/x unavailable: connection refused")

        broken.sessions = refusing  # type: ignore[assignment]
        alerter.store = broken
        assert alerter.check() == 1
        assert alerter.check() == 0
        alerter.store = good
        assert alerter.check() == 1
    good.close()
    first, second = _bodies(sink)
    assert "ALERT the connector cannot store: database postgresql://u:***@127.0.0.1:5432/x unavailable" in first
    assert "RESOLVED the connector stores again" in second


def test_an_smtp_server_that_is_down_keeps_the_alert_for_the_next_try(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    settings = _settings(closed, min_interval=0)
    alerter = Alerter(store, settings, EmailSender(settings["email"]), clock)
    _dead_letter(store, 1, clock())
    assert alerter.check() == 0
    assert any("alert not sent (kept for the next try)" in r.getMessage() for r in caplog.records)
    with SmtpSink() as sink:
        alerter.sender = EmailSender({**settings["email"], "port": sink.port})
        assert alerter.check() == 1
    assert "dead letters: 1 (was 0)" in _bodies(sink)[0]


def test_the_runtime_runs_the_alerts_as_a_leader_job(tmp_path: Path) -> None:
    config = load_config_text(
        f"""
storage: {{url: "sqlite:///{tmp_path / "r.db"}"}}
crms:
  b24: {{type: bitrix24, webhook_url: "http://127.0.0.1:9/rest/1/abcdefgh1/", application_token: "tok-12345678"}}
alerts:
  email: {{host: 127.0.0.1, port: 2525, security: none, from: c@example.ru, to: [a@example.ru]}}
  every: 30s
"""
    )
    runtime = Runtime(config)
    try:
        runtime.start(serve=False, roles=["scheduler"])
        job = runtime.scheduler.get_job("alerts")
        assert job is not None and job.trigger.interval == timedelta(seconds=30)
        assert runtime.alerter is not None and runtime.alerter.settings["min_interval"] == 600.0
    finally:
        runtime.stop()


CHANNEL_CONFIG = """
storage: {{url: "sqlite:///{db}"}}
crms:
  b24: {{type: bitrix24, webhook_url: "http://127.0.0.1:9/rest/1/abcdefgh1/", application_token: "tok-12345678"}}
channels:
  admins: {{type: telegram, token: "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ", chat_id: -1001234567890,
            api_url: "https://tg.example"}}
alerts: {{channel: {channel}, min_interval: 0}}
"""


@responses.activate
def test_alerts_go_to_the_admins_chat_channel(tmp_path: Path) -> None:
    posted = responses.add(
        responses.POST,
        re.compile(r"https://tg\.example/bot.*/sendMessage"),
        json={"ok": True, "result": {"message_id": 7}},
    )
    runtime = Runtime(load_config_text(CHANNEL_CONFIG.format(db=tmp_path / "r.db", channel="admins")))
    try:
        assert runtime.alerter is not None
        runtime.alerter.check()
        _dead_letter(runtime.store, 1, utcnow())
        assert runtime.alerter.check() == 1
    finally:
        runtime.stop()
    assert posted.call_count == 1
    sent = json.loads(posted.calls[0].request.body or "{}")
    assert sent["chat_id"] in (-1001234567890, "-1001234567890")
    assert (
        sent["text"].startswith("[crm-connector] 1 alert(s), 0 resolved") and "dead letters: 1 (was 0)" in sent["text"]
    )


def test_an_alert_channel_that_is_not_configured_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config_text(CHANNEL_CONFIG.format(db=tmp_path / "r.db", channel="admns"))
    assert "alerts.channel: no channel named 'admns' under channels" in str(refused.value)


def test_alerts_need_a_channel_or_an_email(tmp_path: Path) -> None:
    text = CHANNEL_CONFIG.format(db=tmp_path / "r.db", channel="admins").replace("channel: admins, ", "")
    with pytest.raises(ConfigError) as refused:
        load_config_text(text)
    assert "say where alerts go" in str(refused.value)
