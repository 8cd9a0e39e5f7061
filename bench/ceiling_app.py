"""The stack's ceiling: a minimal Flask app that stores each delivery with one INSERT and answers 200.

It does what the intake cannot do without: read the body, write it durably to the same
database, answer. No parsing, no token check, no log line, no metrics. Served by the same
server with the same settings as the intake, its accepted/s is the most that server, Flask
and that database give on this machine; the intake's share of it is what our own code costs.

Two ways of writing:

* ``one``: one statement per request, committed before the answer (PostgreSQL in autocommit,
  one round trip, as the intake does; SQLite in its own ``BEGIN IMMEDIATE`` transaction
  under an in-process lock, as the intake does);
* ``group``: group commit. Requests hand their row to one writer thread per process, which
  takes every row waiting (at most ``CEILING_GROUP_MAX`` rows, after waiting at most
  ``CEILING_GROUP_WAIT_MS`` for more once the first arrived), inserts them in one statement and
  one transaction, and only then lets each request answer 200; a failed group answers 503 to
  all of its requests. A prototype for the intake, measured here first.

Configured from the environment so a server can import it by name:
``CEILING_DB_URL`` (``postgresql://…`` or ``sqlite:///path``), ``CEILING_MODE`` (``one`` or
``group``), ``CEILING_GROUP_WAIT_MS`` (default 0: whatever queued up during the last commit)
and ``CEILING_GROUP_MAX`` (default 256).

    gunicorn -w 5 'bench.ceiling_app:create_from_env()'
    granian --interface wsgi --factory bench.ceiling_app:create_from_env
"""

from __future__ import annotations

import hashlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

TABLE = "ceiling_inbox"
ACCEPTED = b'{"ok":true,"stored":1}\n'
DUPLICATE = b'{"ok":true,"stored":0}\n'


def _pg_url(url: str) -> str:
    """A libpq URL from an SQLAlchemy one (``postgresql+psycopg://`` → ``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    return "postgresql" + sep + rest if scheme.startswith("postgresql") else url


def _sqlite_path(url: str) -> str:
    return url.split("sqlite:///", 1)[1]


def create_table(url: str) -> None:
    """(Re)create the ceiling's table, empty."""
    ddl = f"CREATE TABLE {TABLE} (id {{id}}, key TEXT NOT NULL UNIQUE, body TEXT NOT NULL, received_at {{ts}} NOT NULL)"
    if url.startswith("sqlite"):
        lite = sqlite3.connect(_sqlite_path(url))
        lite.execute("PRAGMA journal_mode=WAL")
        lite.execute(f"DROP TABLE IF EXISTS {TABLE}")
        lite.execute(ddl.format(id="INTEGER PRIMARY KEY AUTOINCREMENT", ts="REAL"))
        lite.commit()
        lite.close()
        return
    import psycopg

    with psycopg.connect(_pg_url(url), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(ddl.format(id="BIGSERIAL PRIMARY KEY", ts="DOUBLE PRECISION"))


def count_rows(url: str) -> tuple[int, int]:
    """(rows, distinct keys) in the ceiling's table."""
    query = f"SELECT count(*), count(DISTINCT key) FROM {TABLE}"
    if url.startswith("sqlite"):
        lite = sqlite3.connect(_sqlite_path(url))
        rows, distinct = lite.execute(query).fetchone()
        lite.close()
        return int(rows), int(distinct)
    import psycopg

    with psycopg.connect(_pg_url(url)) as conn:
        found = conn.execute(query).fetchone()
        assert found is not None
        return int(found[0]), int(found[1])


# --- writing: one statement per delivery -----------------------------------------------------

Row = tuple[str, str, float]
Insert = Callable[[list[Row]], set[str]]  # rows → the keys actually inserted (not duplicates)


def _pg_inserter(url: str) -> Insert:
    import psycopg

    local = threading.local()

    def insert(rows: list[Row]) -> set[str]:
        conn = getattr(local, "conn", None)
        if conn is None or conn.closed:
            conn = local.conn = psycopg.connect(_pg_url(url), autocommit=True)
        values = ", ".join(["(%s, %s, %s)"] * len(rows))
        params = [v for row in rows for v in row]
        try:
            with conn.cursor() as cur:  # autocommit: committed before execute returns
                cur.execute(
                    f"INSERT INTO {TABLE} (key, body, received_at) VALUES {values} "
                    "ON CONFLICT (key) DO NOTHING RETURNING key",
                    params,
                )
                return {r[0] for r in cur.fetchall()}
        except psycopg.OperationalError:
            conn.close()
            raise

    return insert


def _sqlite_inserter(url: str) -> Insert:
    path = _sqlite_path(url)
    local = threading.local()
    lock = threading.Lock()  # writers queue here, not in SQLite's sleeping busy handler (as the intake)

    def insert(rows: list[Row]) -> set[str]:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # the connector's setting for inbox writes
        values = ", ".join(["(?, ?, ?)"] * len(rows))
        params = [v for row in rows for v in row]
        with lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute(
                    f"INSERT INTO {TABLE} (key, body, received_at) VALUES {values} "
                    "ON CONFLICT (key) DO NOTHING RETURNING key",
                    params,
                ).fetchall()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return {r[0] for r in found}

    return insert


def make_inserter(url: str) -> Insert:
    return _sqlite_inserter(url) if url.startswith("sqlite") else _pg_inserter(url)


# --- writing: group commit ---------------------------------------------------------------------


class _Waiter:
    __slots__ = ("row", "done", "stored", "error")

    def __init__(self, row: Row) -> None:
        self.row = row
        self.done = threading.Event()
        self.stored = False
        self.error: BaseException | None = None


class GroupWriter:
    """One writer thread: rows that arrive while a commit is in flight share the next one."""

    def __init__(self, insert: Insert, *, max_rows: int = 256, wait_s: float = 0.0) -> None:
        self._insert = insert
        self._max_rows = max_rows
        self._wait_s = wait_s
        self._queue: queue.SimpleQueue[_Waiter] = queue.SimpleQueue()
        self.groups = 0
        self.rows = 0
        self._thread = threading.Thread(target=self._run, name="group-writer", daemon=True)
        self._thread.start()

    def store(self, row: Row, timeout: float = 30.0) -> bool:
        """Store ``row`` in the next group; True once committed, False for a duplicate; raises on failure."""
        waiter = _Waiter(row)
        self._queue.put(waiter)
        if not waiter.done.wait(timeout):
            raise TimeoutError("the group writer did not answer")
        if waiter.error is not None:
            raise waiter.error
        return waiter.stored

    def _take(self) -> list[_Waiter]:
        group = [self._queue.get()]
        deadline = time.monotonic() + self._wait_s
        while len(group) < self._max_rows:
            try:
                group.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                group.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return group

    def _run(self) -> None:
        while True:
            group = self._take()
            try:
                inserted = self._insert([w.row for w in group])
            except Exception as exc:  # the whole group failed: each request answers 503
                for w in group:
                    w.error = exc
                    w.done.set()
                continue
            self.groups += 1
            self.rows += len(group)
            for w in group:
                w.stored = w.row[0] in inserted
                w.done.set()


def create_app(url: str, mode: str = "one", *, group_wait_ms: float = 0.0, group_max: int = 256) -> Flask:
    """The ceiling app writing to ``url``, one statement per delivery or by group commit."""
    if mode not in ("one", "group"):
        raise ValueError(f"unknown mode {mode!r}")
    app = Flask("ceiling")
    insert = make_inserter(url)
    writer = GroupWriter(insert, max_rows=group_max, wait_s=group_wait_ms / 1000) if mode == "group" else None

    @app.post("/hooks/<path:rest>")
    def hook(rest: str) -> Response:
        body = request.get_data()
        row = (hashlib.sha256(body).hexdigest()[:32], body.decode("utf-8", "replace"), time.time())
        try:
            stored = writer.store(row) if writer is not None else bool(insert([row]))
        except Exception:
            return Response(b'{"error":"storage unavailable"}\n', status=503, mimetype="application/json")
        return Response(ACCEPTED if stored else DUPLICATE, status=200, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"ok":true}\n', status=200, mimetype="application/json")

    @app.get("/groups")
    def groups() -> dict[str, Any]:  # how many rows a group held on average (group mode)
        if writer is None:
            return {"groups": 0, "rows": 0}
        return {"groups": writer.groups, "rows": writer.rows}

    return app


def create_from_env() -> Flask:
    return create_app(
        os.environ["CEILING_DB_URL"],
        os.environ.get("CEILING_MODE", "one"),
        group_wait_ms=float(os.environ.get("CEILING_GROUP_WAIT_MS", "0")),
        group_max=int(os.environ.get("CEILING_GROUP_MAX", "256")),
    )
