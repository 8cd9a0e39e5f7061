"""One leader per database runs the scheduled jobs; /readyz says whether one is alive."""

from __future__ import annotations

from datetime import timedelta

from connector.config import load_config_text
from connector.leader import Leadership, leader_seen
from connector.runtime import Runtime
from connector.storage.store import Store
from domain.clock import utcnow
from tests.helpers import CONFIG, TOKEN


def test_one_leader_at_a_time_and_a_successor(db_url: str) -> None:
    first_store, second_store = Store(db_url), Store(db_url)
    first, second = Leadership(first_store, "a"), Leadership(second_store, "b")
    now = utcnow()
    try:
        assert first.held(now)
        if first_store.engine.dialect.name == "sqlite":
            return  # one process per SQLite file: it always leads
        assert not second.held(now)
        assert first.held(now)  # confirmed, not re-acquired
        first.release()  # the leader's process ends: its connection closes
        assert second.held(now) and not first.held(now)
        assert leader_seen(second_store, now, timedelta(seconds=60))[0] == "b"
    finally:
        first.release()
        second.release()
        first_store.close()
        second_store.close()


def test_readyz_needs_a_live_leader(db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    rt = Runtime(load_config_text(CONFIG.format(db_url=db_url, b24_url="http://127.0.0.1:9/rest/1/x/")))
    try:
        client = rt.app.test_client()
        answer = client.get("/readyz")
        assert answer.status_code == 503 and answer.get_json()["leader"] is None
        rt.start(serve=False, roles=["scheduler"])  # leads at once, and beats
        from tests.helpers import wait_for

        assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout=10)
        assert client.get("/readyz").get_json()["database"] == "ok"
    finally:
        rt.stop()


def test_roles_are_checked(db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pytest

    monkeypatch.setenv("B24_TOKEN", TOKEN)
    rt = Runtime(load_config_text(CONFIG.format(db_url=db_url, b24_url="http://127.0.0.1:9/rest/1/x/")))
    try:
        with pytest.raises(ValueError, match="unknown role"):
            rt.start(roles=["intake", "poller"])
    finally:
        rt.stop()
