"""`Runtime.stop()` stops and joins every thread `start()` began: the intake's loop and its
workers, the scheduler's, the dispatcher's lanes; nothing fails in a thread on the way out."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import requests

from connector.config import load_config_text
from connector.runtime import Runtime
from tests.helpers import CONFIG, TOKEN


@pytest.mark.slow
def test_stop_joins_what_start_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    before = set(threading.enumerate())
    runtime = Runtime(
        load_config_text(CONFIG.format(db_url=f"sqlite:///{tmp_path / 'c.db'}", b24_url="http://127.0.0.1:9/rest/1/x/"))
    )
    runtime.start()
    url = runtime.intake_url
    port = int(url.rsplit(":", 1)[1])
    with requests.Session() as session:  # a kept-alive connection stays open in the intake's loop
        assert session.get(f"{url}/healthz", timeout=5).status_code == 200
        runtime.stop()
    # Granian's own Rust threads show up as "Dummy" once they run Python code; they are not ours to join.
    started = [t for t in threading.enumerate() if t not in before and not isinstance(t, threading._DummyThread)]
    assert started == [], f"still running after stop(): {[t.name for t in started]}"
    assert failures == [], [f"{f.thread.name if f.thread else '?'}: {f.exc_value!r}" for f in failures]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
