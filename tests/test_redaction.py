"""Secrets never reach a log line or a printed error: one redactor masks each configured
secret and Bitrix24's webhook code in every record (ours and every library's, at DEBUG,
tracebacks included) and in what the CLI prints."""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.config import load_config_text
from connector.observability import JsonFormatter, TextFormatter
from connector.redaction import MASK, RedactingStream, Redactor, configure, install_log_redaction
from connector.runtime import Runtime
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
CODE = "k7pq2x9v1m3n8b4c"
TOKEN = "redaction-app-token-42"
CONFIG = """
storage: {{url: "{db_url}"}}
server: {{host: 127.0.0.1, port: 0}}
logging: {{level: DEBUG}}
crms:
  b24:
    type: bitrix24
    webhook_url: "${{B24_URL}}"
    application_token: "${{B24_TOKEN}}"
    poll_every: {poll_every}
    max_attempts: 2
    backoff_initial: 0.01s
    timeout: 2s
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redactor_masks_secrets_their_url_forms_and_any_webhook_code() -> None:
    redact = Redactor(["s3cr3t/value", f"https://portal.example/rest/7/{CODE}/", "abc"])
    assert redact("token s3cr3t/value and s3cr3t%2Fvalue") == f"token {MASK} and {MASK}"
    assert redact(f"POST /rest/7/{CODE}/crm.deal.get.json") == f"POST /rest/7/{MASK}/crm.deal.get.json"
    assert redact(f"the code {CODE} alone") == f"the code {MASK} alone"  # taken from the URL secret
    assert redact("url: /rest/1/anothercode99/x") == f"url: /rest/1/{MASK}/x"  # a code never configured
    assert redact("/rest/crm.deal.list and abc") == "/rest/crm.deal.list and abc"  # no code; too short to mask


def test_records_are_masked_when_made_whatever_handler_writes_them() -> None:
    configure([TOKEN])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # a library's own handler and formatter
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    log = logging.getLogger("some.library")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.debug("GET %s %s", f"/rest/1/{CODE}/user.get.json", {"auth": TOKEN})
        try:
            raise ConnectionError(f"Max retries exceeded with url: /rest/1/{CODE}/crm.deal.list.json")
        except ConnectionError:
            log.exception("poll failed with %s", TOKEN)
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert CODE not in text and TOKEN not in text
    assert f"/rest/1/{MASK}/crm.deal.list.json" in text and "Traceback" in text


def test_printed_text_is_masked() -> None:
    configure([TOKEN])
    out = io.StringIO()
    RedactingStream(out).write(f"error: {TOKEN} at /rest/1/{CODE}/\n")
    assert out.getvalue() == f"error: {MASK} at /rest/1/{MASK}/\n"


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """Every record of the process at DEBUG, as text lines and as JSON lines."""
    install_log_redaction()
    stream = io.StringIO()
    handlers = [logging.StreamHandler(stream), logging.StreamHandler(stream)]
    handlers[0].setFormatter(TextFormatter())
    handlers[1].setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    quiet = {name: logging.getLogger(name).level for name in ("apscheduler.executors", "urllib3", "werkzeug")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.setLevel(logging.DEBUG)
    for h in handlers:
        root.addHandler(h)
    try:
        yield stream
    finally:
        for h in handlers:
            root.removeHandler(h)
        root.setLevel(level)
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)


@pytest.mark.slow
def test_a_debug_log_through_failures_and_a_dry_run_hold_no_secret(tmp_path, monkeypatch, debug_log) -> None:  # type: ignore[no-untyped-def]
    sim = Bitrix24Simulator(webhook_code=CODE, application_token=TOKEN, rate=100, burst=100)
    sim.faults.error_rate = 0.5  # retries
    sim.add_user("Иван")
    for n in range(5):
        sim.add_deal({"TITLE": f"Заявка {n}", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW"})
    server = sim.serve()
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    printed = ""
    try:
        # Answers with faults: retried calls, their request lines at DEBUG.
        monkeypatch.setenv("B24_URL", server.base_url + sim.webhook_base)
        rt = Runtime(load_config_text(CONFIG.format(db_url=f"sqlite:///{tmp_path / 'a.db'}", poll_every="3600s")))
        try:
            for _ in range(3):
                try:
                    rt.poll("b24")
                except Exception:  # noqa: BLE001 - a poll that ran out of attempts
                    logging.getLogger("test").exception("poll failed")
        finally:
            rt.stop()
        # A CRM that refuses connections: the scheduler's poll fails with a traceback.
        monkeypatch.setenv("B24_URL", f"http://127.0.0.1:{_closed_port()}{sim.webhook_base}")
        config_text = CONFIG.format(db_url=f"sqlite:///{tmp_path / 'b.db'}", poll_every="0.3s")
        rt = Runtime(load_config_text(config_text))
        try:
            rt.start(serve=False, roles=["scheduler"])
            assert wait_for(lambda: "Traceback" in debug_log.getvalue() and "Max retries" in debug_log.getvalue())
        finally:
            rt.stop()
        # The dry-run's own output and errors, as a person sees them.
        config = tmp_path / "c.yaml"
        config.write_text(config_text, encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-m", "connector.cli", "dry-run", "--config", str(config), "--since", "2026-01-01"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        printed += done.stdout + done.stderr
    finally:
        server.stop()
        sim.close()
    logged = debug_log.getvalue()
    assert f"/rest/1/{MASK}/" in logged  # the lines that would carry the code were seen, masked
    assert '"POST /rest/1/***/' in logged or "POST /rest/1/***/" in logged  # urllib3's request lines
    for text in (logged, printed):
        assert CODE not in text and TOKEN not in text
    assert printed.strip(), "the dry-run printed something to scan"
