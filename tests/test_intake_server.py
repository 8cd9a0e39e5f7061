"""The embedded intake's HTTP server: slow clients do not starve good ones, connections stay
open between deliveries, stop is at once, and a SIGKILL mid-burst loses no acknowledged delivery."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from connector.config import load_config_text
from connector.runtime import Runtime
from tests.helpers import CONFIG, TOKEN
from tests.test_intake_security import _valid

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str) -> Runtime:
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    config = CONFIG.format(db_url=f"sqlite:///{tmp_path / 'c.db'}", b24_url="http://127.0.0.1:9/rest/1/x/").replace(
        "server: {host: 127.0.0.1, port: 0}", f"server: {{host: 127.0.0.1, port: 0, engine: {engine}}}"
    )
    return Runtime(load_config_text(config))


@pytest.fixture
def slow_clients() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["waitress", "granian"])
def test_slow_clients_do_not_starve_good_ones(tmp_path, monkeypatch, slow_clients, engine) -> None:  # type: ignore[no-untyped-def]
    rt = _runtime(tmp_path, monkeypatch, engine)
    rt.start(roles=["intake"])
    try:
        port = int(rt.intake_url.rsplit(":", 1)[1])
        for i in range(300):  # half trickle their headers, half their body: neither ends
            sock = socket.create_connection(("127.0.0.1", port))
            start = b"POST /hooks/bitrix24/b24 HTTP/1.1\r\nHost: x\r\n"
            if i % 2:
                start += b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 5000\r\n\r\nevent="
            sock.sendall(start)
            slow_clients.append(sock)
        began = time.monotonic()
        with requests.Session() as good:
            for deal in range(1, 21):
                resp = good.post(f"{rt.intake_url}/hooks/bitrix24/b24", data=_valid(deal=str(deal)), headers=FORM)
                assert resp.status_code == 200, resp.text
        assert time.monotonic() - began < 5.0
    finally:
        rt.stop()


@pytest.mark.parametrize("engine", ["waitress", "granian"])
def test_kept_alive_connections_and_stop_at_once(tmp_path, monkeypatch, engine) -> None:  # type: ignore[no-untyped-def]
    rt = _runtime(tmp_path, monkeypatch, engine)
    before = set(threading.enumerate())
    rt.start(roles=["intake"])
    url = rt.intake_url
    port = int(url.rsplit(":", 1)[1])
    with requests.Session() as session:
        for deal in ("1", "2", "3"):
            resp = session.post(f"{url}/hooks/bitrix24/b24", data=_valid(deal=deal), headers=FORM, timeout=5)
            assert resp.status_code == 200 and resp.json()["stored"] == 1
            assert resp.headers.get("Connection", "").lower() != "close"
        began = time.monotonic()
        rt.stop()  # with the session's connection still open
        # A kept-alive connection must not hold the stop for its idle timeout (tens of seconds);
        # the bound leaves room for a loaded machine.
        assert time.monotonic() - began < 5.0
    # Granian's own Rust threads show up as "Dummy" once they run Python code; they are not ours to join.
    started = [t for t in threading.enumerate() if t not in before and not isinstance(t, threading._DummyThread)]
    assert [t.name for t in started] == []
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_granian_answers_plain_deliveries_in_its_loop_and_the_rest_on_threads(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A plain delivery needs no thread of the app's pool (its only wait, the commit, is a
    future); other routes still run the WSGI app on the pool. Behind a proxy, the loop's
    path checks the client address the proxy forwarded, as the WSGI path does."""
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    config = CONFIG.format(db_url=f"sqlite:///{tmp_path / 'c.db'}", b24_url="http://127.0.0.1:9/rest/1/x/").replace(
        "server: {host: 127.0.0.1, port: 0}",
        'server: {host: 127.0.0.1, port: 0, engine: granian, allow_from: ["10.1.0.0/16"], behind_proxy: true}',
    )
    rt = Runtime(load_config_text(config))
    rt.start(roles=["intake"])

    def pool_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("intake_")]

    try:
        url = f"{rt.intake_url}/hooks/bitrix24/b24"
        with requests.Session() as session:
            for deal in ("1", "2"):
                ok = session.post(url, data=_valid(deal=deal), headers={**FORM, "X-Forwarded-For": "10.1.2.3"})
                assert ok.status_code == 200 and ok.json()["stored"] == 1
                assert ok.headers["Content-Type"] == "application/json"
            outside = session.post(url, data=_valid(deal="3"), headers={**FORM, "X-Forwarded-For": "192.0.2.1"})
            assert outside.status_code == 403
            assert pool_threads() == []
            assert session.get(f"{rt.intake_url}/healthz").status_code == 200
            assert pool_threads() != []
    finally:
        rt.stop()


BURST_CONFIG = """
storage: {{url: "sqlite:///{db}"}}
server: {{host: 127.0.0.1, port: {port}, engine: {engine}}}
logging: {{level: WARNING}}
crms:
  b24:
    type: bitrix24
    webhook_url: "http://127.0.0.1:9/rest/1/x/"
    application_token: "${{B24_TOKEN}}"
rules: []
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("engine", ["waitress", "granian"])
def test_sigkill_mid_burst_loses_no_acknowledged_delivery(tmp_path, engine) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    db = tmp_path / "c.db"
    config = tmp_path / "c.yaml"
    config.write_text(BURST_CONFIG.format(db=db, port=port, engine=engine))
    env = {**os.environ, "B24_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "run", "--config", str(config), "--roles", "intake"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/hooks/bitrix24/b24"
    acknowledged: list[int] = []
    lock = threading.Lock()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the intake did not start"
                time.sleep(0.1)

        def sender(first: int) -> None:
            with requests.Session() as session:
                for deal in range(first, first + 100_000, 8):
                    try:
                        resp = session.post(url, data=_valid(deal=str(deal)), headers=FORM, timeout=5)
                    except requests.RequestException:
                        return  # the intake is gone
                    if resp.status_code == 200:
                        with lock:
                            acknowledged.append(deal)

        with ThreadPoolExecutor(8) as pool:
            for first in range(1, 9):
                pool.submit(sender, first)
            while len(acknowledged) < 300:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    engine_ = create_engine(f"sqlite:///{db}")
    with engine_.connect() as conn:
        stored = {int(d) for (d,) in conn.execute(text("SELECT deal_id FROM inbox"))}
    engine_.dispose()
    missing = set(acknowledged) - stored
    assert len(acknowledged) >= 300 and not missing, f"{len(missing)} acknowledged deliveries lost"
