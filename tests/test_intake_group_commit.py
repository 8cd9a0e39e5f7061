"""The intake's group commit and its cheap path: deliveries that arrive together share one
commit, nothing is acknowledged before it is committed, a failed or hung commit answers 503
in bounded time, and refusals cost little and log safely."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from connector.config import load_config_text
from connector.runtime import Runtime
from connector.storage.group_commit import GroupWriter, Key, StorageTimeout
from connector.storage.models import InboxRow
from tests.helpers import CONFIG, TOKEN
from tests.test_intake_security import _valid

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _runtime(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    return Runtime(load_config_text(CONFIG.format(db_url=db_url, b24_url="http://127.0.0.1:9/rest/1/x/")))


def _rows(rt: Runtime) -> int:
    with rt.store.reading() as s:
        return int(s.scalar(select(func.count(InboxRow.id))) or 0)


def _row(crm: str, key: str) -> dict[str, Any]:
    return {"crm": crm, "dedup_key": key}


class SlowInsert:
    """An insert that records its groups and takes ``seconds`` (rows pile up meanwhile)."""

    def __init__(self, seconds: float = 0.05, fail: bool = False) -> None:
        self.seconds = seconds
        self.fail = fail
        self.groups: list[list[Key]] = []
        self.stored: set[Key] = set()

    def __call__(self, rows: Sequence[dict[str, Any]]) -> set[Key]:
        time.sleep(self.seconds)
        keys = [(r["crm"], r["dedup_key"]) for r in rows]
        self.groups.append(keys)
        if self.fail:
            raise OperationalError("INSERT", {}, Exception("connection reset"))
        new = {k for k in keys if k not in self.stored}
        self.stored |= new
        return new


def test_requests_arriving_together_share_one_commit() -> None:
    insert = SlowInsert()
    writer = GroupWriter(insert, wait=0.0)
    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: writer.store([_row("b24", f"k{i}")]), range(64)))
    finally:
        writer.close()
    assert answers == [[True]] * 64
    assert sum(len(g) for g in insert.groups) == 64
    assert len(insert.groups) < 32  # one commit per delivery would be 64
    assert max(len(g) for g in insert.groups) > 1


def test_a_lone_delivery_is_written_at_once_when_no_other_is_on_its_way() -> None:
    insert = SlowInsert(seconds=0.0)
    writer = GroupWriter(insert, wait=5.0)  # a window the test would notice if waited out
    try:
        started = time.monotonic()
        assert writer.store([_row("b24", "alone")]) == [True]
        assert time.monotonic() - started < 2.5
    finally:
        writer.close()


def test_the_writer_waits_for_a_delivery_still_on_its_way() -> None:
    insert = SlowInsert(seconds=0.0)
    writer = GroupWriter(insert, wait=1.0)  # ends the group once nobody is on the way
    try:
        with ThreadPoolExecutor(1) as pool, writer.expecting():  # this thread is still parsing
            first = pool.submit(writer.store, [_row("b24", "first")])
            assert writer.store([_row("b24", "second")]) == [True]
            assert first.result(5) == [True]
    finally:
        writer.close()
    assert insert.groups == [[("b24", "first"), ("b24", "second")]] or insert.groups == [
        [("b24", "second"), ("b24", "first")]
    ]


def test_two_writers_commit_two_groups_at_once() -> None:
    """PostgreSQL's intake has two writers: a group is written while another's commit is in flight."""
    both = threading.Barrier(2, timeout=5)  # broken (the group fails) unless two inserts overlap
    writing = threading.Event()

    def insert(rows: Sequence[dict[str, Any]]) -> set[Key]:
        writing.set()
        both.wait()
        return {(r["crm"], r["dedup_key"]) for r in rows}

    writer = GroupWriter(insert, wait=0.0, writers=2)
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(writer.store, [_row("b24", "first")])
            assert writing.wait(5)  # the first group is being written: the second is another
            assert writer.store([_row("b24", "second")]) == [True]
            assert first.result(5) == [True]
    finally:
        writer.close()


def test_twins_in_one_group_store_once_and_the_second_is_a_duplicate() -> None:
    insert = SlowInsert()
    writer = GroupWriter(insert, wait=0.2)
    try:
        # A request still on its way keeps the window open: both twins land in one group.
        with ThreadPoolExecutor(2) as pool, writer.expecting():
            answers = list(pool.map(lambda _: writer.store([_row("b24", "same")]), range(2)))
    finally:
        writer.close()
    assert sorted(answers) == [[False], [True]]
    assert insert.groups == [[("b24", "same")]]


def test_a_failed_group_fails_every_request_in_it() -> None:
    writer = GroupWriter(SlowInsert(fail=True), wait=0.05)
    outcomes: list[str] = []

    def post(i: int) -> None:
        try:
            writer.store([_row("b24", f"k{i}")])
            outcomes.append("stored")
        except OperationalError:
            outcomes.append("failed")

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, range(8)))
    finally:
        writer.close()
    assert outcomes == ["failed"] * 8


def test_a_request_that_gave_up_is_left_out_of_later_groups() -> None:
    insert = SlowInsert(seconds=0.5)
    writer = GroupWriter(insert, wait=0.0, timeout=0.2)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(writer.store, [_row("b24", "first")])
            time.sleep(0.05)  # "first" is being written; "late" queues behind it and gives up
            late = pool.submit(writer.store, [_row("b24", "late")])
            with pytest.raises(StorageTimeout):
                late.result()
            with pytest.raises(StorageTimeout):
                first.result()
    finally:
        writer.close()
    assert [("b24", "late")] not in insert.groups


def test_a_loops_requests_share_a_group_and_are_settled_by_one_call_into_the_loop() -> None:
    """``store_soon``: no thread per request; the writer resolves a group's futures together."""
    insert = SlowInsert(seconds=0.0)
    writer = GroupWriter(insert, wait=0.0)
    calls: list[int] = []

    async def post_together() -> list[list[bool]]:
        loop = asyncio.get_running_loop()
        into_loop = loop.call_soon_threadsafe

        def counted(callback, *args):  # type: ignore[no-untyped-def]
            calls.append(len(args[0]) if args else 0)
            return into_loop(callback, *args)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]
        # Queued while this loop holds the thread: the writer finds them all in its first drain.
        futures = [writer.store_soon([_row("b24", f"k{i}")]) for i in range(20)]
        futures.append(writer.store_soon([_row("b24", "k0")]))  # a twin: a duplicate
        return list(await asyncio.gather(*futures))

    try:
        answers = asyncio.run(post_together())
    finally:
        writer.close()
    assert answers == [[True]] * 20 + [[False]]
    assert sum(len(g) for g in insert.groups) == 20
    assert len(calls) == len(insert.groups) and sum(calls) == 21  # one call per group


def test_a_loops_request_gets_the_groups_error_or_a_timeout() -> None:
    async def post(writer: GroupWriter) -> BaseException | None:
        try:
            await writer.store_soon([_row("b24", "k")])
        except (OperationalError, StorageTimeout) as exc:
            return exc
        return None

    failing = GroupWriter(SlowInsert(fail=True), wait=0.0)
    hung = GroupWriter(SlowInsert(seconds=1.0), wait=0.0, timeout=0.1)
    try:
        assert isinstance(asyncio.run(post(failing)), OperationalError)
        started = time.monotonic()
        assert isinstance(asyncio.run(post(hung)), StorageTimeout)
        assert time.monotonic() - started < 0.9  # answered at its timeout, not at the commit
    finally:
        failing.close()
        hung.close()


def test_every_accepted_delivery_is_committed_before_its_answer(db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rt = _runtime(db_url, monkeypatch)
    writer = rt.app.extensions["inbox_writer"]
    try:
        client = rt.app.test_client()

        def post(i: int) -> tuple[int, int]:
            resp = rt.app.test_client().post("/hooks/bitrix24/b24", data=_valid(deal=str(i)), headers=FORM)
            return resp.status_code, _rows(rt)  # counted right after the answer

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, range(1, 41)))
        assert all(status == 200 for status, _ in answers)
        assert all(rows >= 1 for _, rows in answers)
        assert _rows(rt) == 40
        assert writer.groups <= 40
        again = client.post("/hooks/bitrix24/b24", data=_valid(deal="1", ts=int(time.time()) - 1), headers=FORM)
        assert again.status_code == 200
        # The accepted answer is written by hand: the same bytes as jsonify would write.
        answer = again.get_json()
        assert answer["ok"] is True and answer["stored"] + answer["duplicates"] == 1
        assert again.mimetype == "application/json"
        assert again.data == (json.dumps(answer, separators=(",", ":"), sort_keys=True) + "\n").encode()
    finally:
        rt.stop()


def test_a_failed_commit_answers_503_to_each_request_of_its_group(db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rt = _runtime(db_url, monkeypatch)
    monkeypatch.setattr(rt.store.inbox, "add_many", SlowInsert(fail=True))
    rt.app.extensions["inbox_writer"]._insert = rt.store.inbox.add_many
    try:
        with ThreadPoolExecutor(6) as pool:
            statuses = list(
                pool.map(
                    lambda i: (
                        rt.app.test_client()
                        .post("/hooks/bitrix24/b24", data=_valid(deal=str(i)), headers=FORM)
                        .status_code
                    ),
                    range(1, 7),
                )
            )
        assert statuses == [503] * 6
        assert _rows(rt) == 0
    finally:
        rt.stop()


def test_a_database_that_does_not_answer_gets_503_within_two_seconds_and_healthz_stays_up(
    tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    rt = _runtime(f"sqlite:///{tmp_path / 'c.db'}", monkeypatch)
    hung = threading.Event()

    def never_answers(rows: Sequence[dict[str, Any]]) -> set[Key]:
        hung.wait(10)
        raise OperationalError("INSERT", {}, Exception("timeout"))

    rt.app.extensions["inbox_writer"]._insert = never_answers
    try:
        client = rt.app.test_client()
        began = time.monotonic()
        resp = client.post("/hooks/bitrix24/b24", data=_valid(), headers=FORM)
        assert resp.status_code == 503
        assert time.monotonic() - began <= 2.0
        began = time.monotonic()
        assert client.get("/healthz").status_code == 200  # never touches the database
        assert time.monotonic() - began < 0.5
    finally:
        hung.set()
        rt.stop()


def test_an_over_long_deal_id_is_refused_with_400_and_a_reason(db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rt = _runtime(db_url, monkeypatch)
    try:
        resp = rt.app.test_client().post("/hooks/bitrix24/b24", data=_valid(deal="7" * 65), headers=FORM)
        assert resp.status_code == 400
        assert resp.get_json()["error"] == "deal id longer than 64 characters"
        assert _rows(rt) == 0
        assert (
            rt.app.test_client().post("/hooks/bitrix24/b24", data=_valid(deal="7" * 64), headers=FORM).status_code
            == 200
        )
    finally:
        rt.stop()


def test_a_hook_name_cannot_forge_a_log_line(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    rt = _runtime(f"sqlite:///{tmp_path / 'c.db'}", monkeypatch)
    try:
        with caplog.at_level(logging.WARNING, logger="connector.intake"):
            resp = rt.app.test_client().post(
                "/hooks/bitrix24/b24%0a2026-01-01 INFO connector.intake webhook accepted", data=_valid(), headers=FORM
            )
        assert resp.status_code == 404
        lines = [r.getMessage() for r in caplog.records if r.name == "connector.intake"]
        assert lines and all("\n" not in line for line in lines)
        assert any("b24\\n2026" in line for line in lines)
    finally:
        rt.stop()


def test_a_forged_form_of_25k_keys_is_refused_before_parsing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rt = _runtime(f"sqlite:///{tmp_path / 'c.db'}", monkeypatch)
    rt.app.config["MAX_CONTENT_LENGTH"] = 10 * 1024 * 1024  # the cap on fields, not the body size, refuses it
    forged = "&".join(f"data[FIELDS][K{i}][]=v" for i in range(25_000)) + "&" + _valid(token="forged-token-0000")
    try:
        client = rt.app.test_client()
        began = time.process_time()
        resp = client.post("/hooks/bitrix24/b24", data=forged, headers=FORM)
        spent = time.process_time() - began
        assert resp.status_code == 413
        assert spent < 0.2, f"{spent:.2f} s of CPU for one forged delivery"
        assert _rows(rt) == 0
    finally:
        rt.stop()


def test_no_info_line_per_accepted_delivery(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    rt = _runtime(f"sqlite:///{tmp_path / 'c.db'}", monkeypatch)
    try:
        with caplog.at_level(logging.INFO):
            for deal in ("1", "2", "3"):
                assert (
                    rt.app.test_client().post("/hooks/bitrix24/b24", data=_valid(deal=deal), headers=FORM).status_code
                    == 200
                )
        assert [r.getMessage() for r in caplog.records if r.name == "connector.intake"] == []
    finally:
        rt.stop()


def test_sqlite_inbox_writes_reach_the_disk_before_the_answer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from sqlalchemy import event

    from connector.storage.inbox import row_values
    from connector.storage.store import Store
    from domain import Event, EventKind

    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    statements: list[str] = []

    @event.listens_for(store.engine, "checkout")
    def trace(dbapi_conn, _record, _proxy) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.set_trace_callback(statements.append)

    now = datetime.now(UTC)
    try:
        assert store.inbox.add_many([row_values(Event("b24", EventKind.DEAL_UPDATED, "1", now, "k1"), now)])
        start = next(i for i, s in enumerate(statements) if s == "PRAGMA synchronous=FULL")
        steps = [s.split(" (", 1)[0] for s in statements[start : start + 5]]
        # FULL around the whole transaction: its commit is synced before the intake answers.
        assert steps == [
            "PRAGMA synchronous=FULL",
            "BEGIN IMMEDIATE",
            "INSERT INTO inbox",
            "COMMIT",
            "PRAGMA synchronous=NORMAL",
        ]
        with store.engine.connect() as conn:  # the other writes keep NORMAL
            assert conn.connection.dbapi_connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # type: ignore[union-attr]
    finally:
        store.close()


def test_a_group_is_stored_as_the_orm_reads_it_and_twice_is_a_duplicate(db_url) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL's group insert bypasses SQLAlchemy's types: what it writes must read back as
    the ORM's own rows (JSON payload, aware datetimes, the status), and a second group of the
    same keys stores nothing."""
    from datetime import UTC, datetime

    from connector.storage.inbox import row_values
    from connector.storage.store import Store
    from domain import Event, EventKind

    store = Store(db_url)
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    events = [
        Event("b24", EventKind.DEAL_UPDATED, str(i), now, f"k{i}", raw={"ID": str(i), "ТЕМА": "ё"}, data={"n": i})
        for i in range(3)
    ]
    rows = [row_values(e, now, f"c{i}") for i, e in enumerate(events)]
    try:
        assert store.inbox.add_many(rows) == {("b24", "k0"), ("b24", "k1"), ("b24", "k2")}
        assert store.inbox.add_many(rows[1:]) == set()
        with store.reading() as s:
            stored = list(s.scalars(select(InboxRow).order_by(InboxRow.deal_id)))
        assert [(r.crm, r.dedup_key, r.deal_id, r.correlation_id) for r in stored] == [
            ("b24", f"k{i}", str(i), f"c{i}") for i in range(3)
        ]
        first = stored[0]
        assert (first.kind, first.source, first.status, first.attempts) == ("deal.updated", "webhook", "new", 0)
        assert first.occurred_at == first.received_at == first.next_try_at == now
        assert first.payload == {"raw": {"ID": "0", "ТЕМА": "ё"}, "previous": None, "data": {"n": 0}}
    finally:
        store.close()
