"""One connector process per SQLite file: the second `connector run` is refused at start
with one line, and the lock goes with the process that held it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connector.storage.instance import AnotherInstance, hold_single_instance, lock_path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
storage: {{url: "sqlite:///{db}"}}
server: {{host: 127.0.0.1, port: 0}}
logging: {{level: WARNING}}
crms:
  b24:
    type: bitrix24
    webhook_url: "http://127.0.0.1:9/rest/1/abcdefgh12345678/"
    application_token: "single-instance-token"
    poll_every: 3600s
"""


def test_a_second_holder_of_the_same_file_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    first = hold_single_instance(url)
    assert first is not None and first.path == tmp_path / "c.db.lock"
    try:
        with pytest.raises(AnotherInstance, match=rf"pid {os.getpid()}.*one process per SQLite file"):
            hold_single_instance(url)
        other = hold_single_instance(f"sqlite:///{tmp_path / 'other.db'}")  # another file: its own lock
        assert other is not None
        other.release()
    finally:
        first.release()
    again = hold_single_instance(url)
    assert again is not None
    again.release()


def test_databases_without_a_file_need_no_lock() -> None:
    assert lock_path("sqlite://") is None and lock_path("sqlite:///:memory:") is None
    assert hold_single_instance("postgresql+psycopg://u@127.0.0.1:5432/db") is None


def _stop(process: subprocess.Popen[str]) -> None:
    """Terminate and join; a process that does not stop fails the test with every thread's
    stack (faulthandler, on SIGABRT) and what it printed."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        if os.name == "posix":
            process.send_signal(signal.SIGABRT)
        else:
            process.kill()
        output, _ = process.communicate(timeout=30)
        pytest.fail(f"connector run did not stop within 30 s of SIGTERM:\n{output}")


@pytest.mark.slow
def test_second_connector_run_on_one_sqlite_file_is_refused_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "c.db"), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    argv = [sys.executable, "-m", "connector.cli", "run", "--config", str(config)]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert first.stdout is not None
        line = first.stdout.readline()  # "listening on …" once it runs
        assert line.startswith("listening on"), line
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 4
        assert second.stdout == ""
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "already runs on" in lines[0] and f"pid {first.pid}" in lines[0], second.stderr
    finally:
        _stop(first)
    # The lock went with the first process: a new one starts.
    third = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert third.stdout is not None
        deadline = time.monotonic() + 60
        line = third.stdout.readline()
        assert line.startswith("listening on") and time.monotonic() < deadline, line
    finally:
        _stop(third)
