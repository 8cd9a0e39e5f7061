"""The chaos run in its short form: real connector processes killed with SIGKILL and
restarted while the simulator injects 20 % faults and drops webhooks; nothing may be
lost, left unprocessed, missing or duplicated, and the queues drain. The long form:
`python bench/chaos.py --events 10000`."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and gunicorn are POSIX"),
]

BENCH = Path(__file__).resolve().parent.parent / "bench" / "chaos.py"


def _chaos():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("chaos", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_single_process_on_sqlite_loses_and_duplicates_nothing() -> None:
    figures = _chaos().run_chaos(200, shape="single", min_kills=3, kill_every=(1.0, 3.0), settle=150, verbose=False)
    assert figures.kills >= 3 and sum(figures.faults.values()) > 0 and figures.acknowledged > 0
    assert figures.drained, figures
    assert (figures.lost, figures.unprocessed, figures.missing, figures.duplicated, figures.wrong_captain) == (
        (0, 0, 0, 0, 0)
    ), figures


def test_several_processes_on_postgresql_lose_and_duplicate_nothing() -> None:
    url = os.environ.get("CONNECTOR_TEST_PG_URL")
    if not url:
        pytest.skip("CONNECTOR_TEST_PG_URL is not set: no PostgreSQL server to test against")
    pytest.importorskip("gunicorn", reason="the production shape runs the intake under gunicorn")
    figures = _chaos().run_chaos(
        200, db=url, shape="multi", min_kills=4, kill_every=(1.0, 3.0), settle=150, verbose=False
    )
    assert figures.kills >= 4 and sum(figures.faults.values()) > 0 and figures.acknowledged > 0
    assert figures.drained, figures
    assert (figures.lost, figures.unprocessed, figures.missing, figures.duplicated, figures.wrong_captain) == (
        (0, 0, 0, 0, 0)
    ), figures
