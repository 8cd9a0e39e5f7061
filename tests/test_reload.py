"""Reloading the config of a running connector: SIGHUP, `connector reload` (a request in the
database, for Windows too) and Runtime.reload; a refused config leaves the old one running."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import load_config
from connector.runtime import Runtime
from domain.events import Event, EventKind, EventSource
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import TOKEN, Clock

CONFIG = """
storage: {{url: "sqlite:///{db}"}}
calendar: {{country: RU, timezone: Europe/Moscow}}
crms:
  b24: {{type: bitrix24, webhook_url: "{url}", application_token: "${{B24_TOKEN}}", rate: 50}}
rules:
  - name: greet
    crm: b24
    enabled: {enabled}
    on: [deal.created]
    do:
      - create_task: {{title: "Позвонить: {{{{ deal.title }}}}", responsible: responsible}}
{extra}
"""

NIGHTLY = """
  - name: nightly
    crm: b24
    on: [schedule]
    schedule: "0 3 * * *"
    when: {outcome: won}
    do:
      - create_task: {title: "Проверить", responsible: responsible}
"""


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Bitrix24Simulator, Path, Runtime, Clock]]:
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50)
    simulator.add_user("Иван")
    server = simulator.serve()
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    config = tmp_path / "c.yaml"
    url = server.base_url + simulator.webhook_base
    config.write_text(CONFIG.format(db=tmp_path / "c.db", url=url, enabled="true", extra=""), encoding="utf-8")
    clock = Clock()
    runtime = Runtime(load_config(config), clock=clock)
    runtime.reload_check = 0.05
    runtime.start(serve=False, roles=["scheduler"])  # the worker and dispatcher are ticked here
    yield simulator, config, runtime, clock
    runtime.stop()
    server.stop()
    simulator.close()


def _rewrite(config: Path, simulator: Bitrix24Simulator, enabled: str, extra: str = "") -> None:
    text = config.read_text(encoding="utf-8")
    url = text.split('webhook_url: "', 1)[1].split('"', 1)[0]
    db = text.split("sqlite:///", 1)[1].split('"', 1)[0]
    config.write_text(CONFIG.format(db=db, url=url, enabled=enabled, extra=extra), encoding="utf-8")


def _new_deal(runtime: Runtime, simulator: Bitrix24Simulator, clock: Clock) -> str:
    deal = simulator.add_deal({"TITLE": "Заявка", "STAGE_ID": "NEW", "ASSIGNED_BY_ID": "1"})
    event = Event("b24", EventKind.DEAL_CREATED, deal, clock(), f"hook:{deal}", source=EventSource.WEBHOOK)
    assert runtime.store.inbox.add(event, clock())
    for _ in range(3):
        clock.now += timedelta(seconds=700)
        runtime.worker.tick()
        runtime.dispatcher.tick()
    return deal


def _wait(condition, seconds: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    done = threading.Event()
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        done.wait(0.05)
    return bool(condition())


def test_reload_switches_a_rule_off_and_adds_a_schedule(world) -> None:  # type: ignore[no-untyped-def]
    simulator, config, runtime, clock = world
    assert len(simulator.tasks_for_deal(_new_deal(runtime, simulator, clock))) == 1
    assert runtime.scheduler.get_job("schedule-nightly") is None

    _rewrite(config, simulator, enabled="false", extra=NIGHTLY)
    assert runtime.reload() is True

    assert simulator.tasks_for_deal(_new_deal(runtime, simulator, clock)) == []  # greet is off
    assert runtime.scheduler.get_job("schedule-nightly") is not None
    assert runtime.scheduler.get_job("reload") is not None and runtime.scheduler.get_job("leader") is not None


def test_an_invalid_config_is_refused_and_the_old_one_keeps_running(  # type: ignore[no-untyped-def]
    world, caplog: pytest.LogCaptureFixture
) -> None:
    simulator, config, runtime, clock = world
    before = runtime.config
    config.write_text(config.read_text(encoding="utf-8").replace("on: [deal.created]", "on: [deal.craeted]"))
    with caplog.at_level(logging.ERROR, logger="connector.runtime"):
        assert runtime.reload() is False
    assert runtime.config is before
    lines = [r.getMessage() for r in caplog.records]
    assert any("config reload refused" in line and "deal.craeted" in line for line in lines), lines
    assert len(simulator.tasks_for_deal(_new_deal(runtime, simulator, clock))) == 1  # greet still on


def test_a_crm_added_is_refused(world, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    simulator, config, runtime, clock = world
    text = config.read_text(encoding="utf-8").replace(
        "rules:",
        '  other: {type: bitrix24, webhook_url: "http://127.0.0.1:9/rest/1/abcdefgh1/", '
        'application_token: "tok-12345678"}\nrules:',
    )
    config.write_text(text, encoding="utf-8")
    before = runtime.config
    with caplog.at_level(logging.ERROR, logger="connector.runtime"):
        assert runtime.reload() is False
    assert runtime.config is before
    assert any("the CRMs changed (other added)" in r.getMessage() for r in caplog.records)


def test_connector_reload_asks_the_running_process_through_the_database(world) -> None:  # type: ignore[no-untyped-def]
    simulator, config, runtime, clock = world
    _rewrite(config, simulator, enabled="false")
    result = CliRunner().invoke(main, ["reload", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "reload requested" in result.output
    assert _wait(lambda: not runtime.config.rules[0].enabled)


def test_connector_reload_refuses_an_invalid_config_at_once(world) -> None:  # type: ignore[no-untyped-def]
    simulator, config, runtime, clock = world
    config.write_text(config.read_text(encoding="utf-8").replace("name: greet", "name: 'greet me!'"))
    result = CliRunner().invoke(main, ["reload", "--config", str(config)])
    assert result.exit_code == 2 and "config refused" in result.output


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGHUP on Windows: connector reload")
def test_sighup_reloads(world) -> None:  # type: ignore[no-untyped-def]
    simulator, config, runtime, clock = world
    _rewrite(config, simulator, enabled="false")
    previous = signal.signal(signal.SIGHUP, lambda *_: runtime.request_reload())
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert _wait(lambda: not runtime.config.rules[0].enabled)
    finally:
        signal.signal(signal.SIGHUP, previous)
