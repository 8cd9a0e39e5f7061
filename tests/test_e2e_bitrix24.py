"""End to end over loopback HTTP: Bitrix24 simulator -> intake -> worker -> dispatcher -> simulator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select

from connector.config import load_config_text
from connector.dispatcher import Dispatcher
from connector.runtime import Runtime
from connector.status import gather
from connector.storage.models import InboxRow, OutboxRow
from domain.clock import utcnow
from simulators import SimulatorServer
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import CONFIG, TOKEN, wait_for

# End to end against the simulators in real threads: the full suite runs them, the fast tier does not.
pytestmark = pytest.mark.slow


class Crash(BaseException):
    """Stands for the process dying between the CRM call and its commit."""


@pytest.fixture
def sim() -> Iterator[tuple[Bitrix24Simulator, SimulatorServer]]:
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50)
    for name in ("Иван", "Олег", "Анна", "Рустам"):
        simulator.add_user(name)
    server = simulator.serve()
    yield simulator, server
    server.stop()
    simulator.close()


@pytest.fixture
def runtime(sim, db_url, monkeypatch) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    simulator, server = sim
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    cfg = load_config_text(CONFIG.format(db_url=db_url, b24_url=server.base_url + simulator.webhook_base))
    rt = Runtime(cfg)
    yield rt
    rt.stop()


def _inbox_count(rt: Runtime) -> int:
    with rt.store.sessions() as s:
        return int(s.scalar(select(func.count(InboxRow.id))) or 0)


def test_captain_assigned_and_one_task(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    runtime.start()
    simulator.handler_url = f"{runtime.intake_url}/hooks/bitrix24/b24"
    deal_id = simulator.add_deal(
        {
            "TITLE": "Заявка",
            "CATEGORY_ID": "1",
            "STAGE_ID": "C1:NEW",
            "ASSIGNED_BY_ID": "1",
            "UF_CRM_ADDRESS": "Казань, Советский район, ул. Мира, 1",
        }
    )
    assert wait_for(
        lambda: len(simulator.tasks_for_deal(deal_id)) == 1 and simulator.deals[deal_id]["ASSIGNED_BY_ID"] == "2"
    )
    task = simulator.tasks_for_deal(deal_id)[0]
    assert task["TITLE"] == "Проверить техническую возможность: Заявка"
    assert task["RESPONSIBLE_ID"] == "2"
    assert task["UF_CRM_TASK"] == [f"D_{deal_id}"]
    audit = runtime.store.audit.for_deal("b24", deal_id)
    assert any("territory" in a.message for a in audit)


def test_triple_delivery_and_crash_between_call_and_commit_leave_one_task(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    simulator.faults.duplicate_webhooks = 3
    # The scheduled dispatcher is replaced by one that "dies" right after its first CRM call.
    crashed: list[int] = []

    def die_once(row, result):  # type: ignore[no-untyped-def]
        if not crashed and row.command == "create_task":
            crashed.append(row.id)
            raise Crash()

    runtime.dispatcher.after_call = die_once
    real_tick = runtime.dispatcher.tick

    def tick() -> int:
        try:
            return real_tick()
        except Crash:
            return 0

    runtime.dispatcher.tick = tick  # type: ignore[method-assign]
    runtime.start()
    simulator.handler_url = f"{runtime.intake_url}/hooks/bitrix24/b24"
    deal_id = simulator.add_deal(
        {
            "TITLE": "Дубль",
            "CATEGORY_ID": "1",
            "STAGE_ID": "C1:NEW",
            "ASSIGNED_BY_ID": "1",
            "UF_CRM_ADDRESS": "Казань, ул. Гвардейская, 8, 420111",
        }
    )
    assert wait_for(lambda: bool(crashed))
    assert len(simulator.tasks_for_deal(deal_id)) == 1  # the call went through before the "crash"
    # A new dispatcher, after the crashed one's lease ran out, must find the task, not add another.
    later = Dispatcher(runtime.config, runtime.store, runtime.adapters, clock=lambda: utcnow() + timedelta(seconds=5))
    assert wait_for(lambda: later.tick() >= 0 and _outbox_states(runtime) == {"done"}, timeout=10)
    assert len(simulator.tasks_for_deal(deal_id)) == 1
    with runtime.store.sessions() as s:
        task_row = s.scalars(select(OutboxRow).where(OutboxRow.command == "create_task")).one()
    assert task_row.remote_id == simulator.tasks_for_deal(deal_id)[0]["ID"]
    assert any(a.detail and a.detail.get("reconciled") for a in runtime.store.audit.for_deal("b24", deal_id))


def _outbox_states(rt: Runtime) -> set[str]:
    with rt.store.sessions() as s:
        return set(s.scalars(select(OutboxRow.status)))


def test_forged_token_403_and_nothing_stored(runtime: Runtime) -> None:
    runtime.start(serve=True)
    url = f"{runtime.intake_url}/hooks/bitrix24/b24"
    body = {
        "event": "ONCRMDEALUPDATE",
        "data[FIELDS][ID]": "5",
        "ts": str(int(time.time())),
        "auth[application_token]": "forged-token-xxxxxx",
    }
    resp = requests.post(url, data=body, timeout=5)
    assert resp.status_code == 403
    assert _inbox_count(runtime) == 0


@pytest.mark.parametrize(
    "body, content_type",
    [
        ("event=ONCRMDEALUPDATE&data[FIELDS][ID]=abc&auth[application_token]=" + TOKEN, None),
        ("event=ONCRMDEALUPDATE&auth[application_token]=" + TOKEN, None),
        ("data[FIELDS][ID]=5&auth[application_token]=" + TOKEN, None),
        ("a]]]=1&auth[application_token]=" + TOKEN, None),
        ('{"event": "ONCRMDEALUPDATE"}', "application/json"),
        ("\xff\xfe garbage", None),
        ("event=ONCRMDEALUPDATE&data[FIELDS][ID]=5&x=\udcff\udcfe&auth[application_token]=" + TOKEN, None),  # not UTF-8
    ],
)
def test_malformed_body_is_4xx_never_500(runtime: Runtime, body: str, content_type: str | None) -> None:
    runtime.start()
    headers = {"Content-Type": content_type or "application/x-www-form-urlencoded"}
    resp = requests.post(
        f"{runtime.intake_url}/hooks/bitrix24/b24",
        data=body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body,
        headers=headers,
        timeout=5,
    )
    assert 400 <= resp.status_code < 500, resp.text
    assert _inbox_count(runtime) == 0


def test_body_that_is_not_utf8_is_a_warning_not_a_traceback(runtime: Runtime, caplog) -> None:  # type: ignore[no-untyped-def]
    body = b"event=ONCRMDEALUPDATE&data[FIELDS][ID]=5&x=\xff&auth[application_token]=" + TOKEN.encode()
    with caplog.at_level("WARNING"):
        resp = runtime.app.test_client().post(
            "/hooks/bitrix24/b24", data=body, content_type="application/x-www-form-urlencoded"
        )
    assert resp.status_code == 400
    refused = [r for r in caplog.records if "webhook refused" in r.getMessage()]
    assert refused and not any(r.exc_info for r in caplog.records)
    assert _inbox_count(runtime) == 0


def test_unknown_crm_404_and_duplicate_acknowledged(runtime: Runtime) -> None:
    runtime.start()
    assert requests.post(f"{runtime.intake_url}/hooks/bitrix24/other", data={"a": "1"}, timeout=5).status_code == 404
    body = {
        "event": "ONCRMDEALUPDATE",
        "data[FIELDS][ID]": "5",
        "ts": str(int(time.time())),
        "auth[application_token]": TOKEN,
    }
    first = requests.post(f"{runtime.intake_url}/hooks/bitrix24/b24", data=body, timeout=5)
    second = requests.post(f"{runtime.intake_url}/hooks/bitrix24/b24", data=body, timeout=5)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json()["stored"], second.json()["duplicates"]) == (1, 1)
    assert _inbox_count(runtime) == 1


def test_poller_recovers_dropped_webhooks(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    simulator.faults.drop_webhook_rate = 1.0
    runtime.start()
    simulator.handler_url = f"{runtime.intake_url}/hooks/bitrix24/b24"
    runtime.pause()  # polls below run before the connector's own writes touch DATE_MODIFY
    ids = [
        simulator.add_deal(
            {
                "TITLE": f"Потерянная {i}",
                "CATEGORY_ID": "1",
                "STAGE_ID": "C1:NEW",
                "UF_CRM_ADDRESS": "Казань, Советский район",
            }
        )
        for i in range(60)
    ]
    simulator.webhooks.wait_idle()
    assert _inbox_count(runtime) == 0
    assert runtime.poll("b24") == 60  # more than one page of 50
    assert runtime.poll("b24") == 0  # the overlap re-reads, the dedup key drops
    runtime.resume()
    assert wait_for(lambda: all(len(simulator.tasks_for_deal(d)) == 1 for d in ids), timeout=30)


def test_lost_answers_after_effect_still_one_task_per_deal(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    simulator.faults.error_after_effect_rate = 0.5
    simulator.faults._rng.seed(7)
    runtime.start()
    simulator.handler_url = f"{runtime.intake_url}/hooks/bitrix24/b24"
    ids = [
        simulator.add_deal(
            {
                "TITLE": f"Сбой {i}",
                "CATEGORY_ID": "1",
                "STAGE_ID": "C1:NEW",
                "UF_CRM_ADDRESS": "Казань, Советский район",
            }
        )
        for i in range(6)
    ]
    assert wait_for(
        lambda: _outbox_states(runtime) == {"done"} and all(simulator.tasks_for_deal(d) for d in ids), timeout=40
    )
    assert [len(simulator.tasks_for_deal(d)) for d in ids] == [1] * 6
    assert all(simulator.deals[d]["ASSIGNED_BY_ID"] == "2" for d in ids)


def test_fatal_error_becomes_dead_letter(sim, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    simulator, _ = sim
    runtime.start()
    simulator.handler_url = f"{runtime.intake_url}/hooks/bitrix24/b24"
    # The captain (user 2) is deleted from the portal: tasks.task.add refuses the responsible.
    simulator.users.pop("2")
    deal_id = simulator.add_deal(
        {"TITLE": "Нет капитана", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "UF_CRM_ADDRESS": "Казань, Советский район"}
    )
    assert wait_for(lambda: "dead" in _outbox_states(runtime))
    with runtime.store.sessions() as s:
        dead = s.scalars(select(OutboxRow).where(OutboxRow.status == "dead")).one()
    assert dead.command == "create_task" and dead.last_error
    assert simulator.tasks_for_deal(deal_id) == []
    assert any(a.action == "dead_letter" for a in runtime.store.audit.for_deal("b24", deal_id))

    # The admin sees it, fixes the cause (the captain is back) and replays it: it lands once.
    state = gather(runtime.store, runtime.config, utcnow())
    assert [d["id"] for d in state.dead_letters] == [dead.id] and not state.healthy
    simulator.add_user("Иван", user_id="2")
    assert runtime.store.outbox.replay_dead(utcnow(), ids=[dead.id]) == [dead.id]
    assert wait_for(lambda: len(simulator.tasks_for_deal(deal_id)) == 1)
    assert wait_for(lambda: _outbox_states(runtime) == {"done"})
    assert gather(runtime.store, runtime.config, utcnow()).crms[0].outbox.get("dead", 0) == 0


def test_stop_cuts_crm_waits_short_and_leaves_work_claimable(sim, db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM while the CRM is down: the process stops at once, the row is processed later."""
    simulator, server = sim
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    text = CONFIG.format(db_url=db_url, b24_url=server.base_url + simulator.webhook_base)
    text = text.replace("backoff_initial: 0.05s", "backoff_initial: 30s").replace("max_attempts: 3", "max_attempts: 5")
    rt = Runtime(load_config_text(text))
    rt.start()
    deal_id = simulator.add_deal(
        {"TITLE": "Заявка", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "UF_CRM_ADDRESS": "Казань, Советский район"}
    )
    simulator.faults.limit_rate = 1.0  # every call refused: the client sits in a 30 s backoff
    body = {
        "event": "ONCRMDEALADD",
        "data[FIELDS][ID]": deal_id,
        "ts": str(int(time.time())),
        "auth[application_token]": TOKEN,
    }
    assert requests.post(f"{rt.intake_url}/hooks/bitrix24/b24", data=body, timeout=5).status_code == 200
    assert wait_for(lambda: simulator.refusals > 0)
    started = time.monotonic()
    rt.stop()
    assert time.monotonic() - started < 5
    with rt.store.sessions() as s:
        assert s.scalar(select(InboxRow.status)) == "new"  # not lost, not failed: claimable again
