"""Engines for SQLite (WAL, embedded default) and PostgreSQL, their time limits, and schema migration.

Every database call is bounded, so a database that stops answering fails a tick instead of
hanging it: on PostgreSQL a connect timeout, TCP keepalives, the server's
``statement_timeout``/``lock_timeout`` per role (the intake's short, the rest longer),
``idle_in_transaction_session_timeout`` (a client that vanished mid-transaction frees its
locks), ``idle_session_timeout`` (one that vanished holding an advisory lock frees it), and
a client-side limit on every wait for the server (``io_timeout``), which also holds when the
server or the network swallows packets and so never cancels anything itself. A connection
that hit a limit is discarded; the pool opens a new one at the next use, so the process
recovers from resets and outages by itself. On SQLite the limit is the busy timeout.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
# The intake's connections are renewed after this many seconds, so one the server or a
# firewall dropped while idle is rarely met: the intake pings no connection at checkout.
INTAKE_POOL_RECYCLE = 300
INTAKE_POOL_SIZE = 10
# The client waits this much longer than the server's statement_timeout before it gives a
# connection up: a statement the server cancelled reports it itself, with a clear error.
CLIENT_GRACE = 0.5
# An execution option: a session on it only reads (SQLite: a deferred BEGIN, no write lock).
READ_ONLY = "connector_read_only"


class DatabaseUnavailable(Exception):
    """The database could not be reached or refused us: one line for the operator."""


@dataclass(frozen=True)
class DatabaseSettings:
    """The ``storage`` section's time limits, in seconds (0: no limit)."""

    connect_timeout: float = 5.0
    keepalive: float = 30.0
    statement_timeout: float = 30.0
    lock_timeout: float = 10.0
    intake_statement_timeout: float = 1.5
    intake_lock_timeout: float = 1.0
    idle_in_transaction_timeout: float = 60.0
    idle_session_timeout: float = 900.0
    busy_timeout: float = 5.0

    @classmethod
    def from_storage(cls, storage: Mapping[str, Any]) -> DatabaseSettings:
        """The settings of a loaded ``storage`` section (keys it lacks keep their defaults)."""
        return cls(**{f.name: float(storage[f.name]) for f in fields(cls) if storage.get(f.name) is not None})


@dataclass(frozen=True)
class RoleLimits:
    """What one engine's sessions may take: a statement, a lock wait."""

    statement: float
    lock: float

    @property
    def io_timeout(self) -> float | None:
        """How long the client waits for any answer before it drops the connection."""
        return self.statement + CLIENT_GRACE if self.statement else None


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _bounded_connection_class() -> Any:
    """A psycopg connection whose every wait for the server ends after ``io_timeout``.

    All of psycopg's blocking calls on an open connection (execute, fetch, commit, rollback,
    the pool's ping) wait in ``Connection.wait``; past the limit the connection is closed
    (so SQLAlchemy sees a disconnect and discards it) and ``OperationalError`` raised. Its
    cursors send batches row by row, each ended by Sync (``UnpipelinedCursor``).
    """
    import psycopg
    from psycopg import errors

    class UnpipelinedCursor(psycopg.Cursor):  # type: ignore[type-arg]
        """A cursor whose ``executemany`` sends each row as its own statement, ended by Sync.

        psycopg's own sends a batch as a pipeline: one write per row, then Sync, then Flush.
        PostgreSQL arms ``idle_in_transaction_session_timeout`` only when it answers a Sync,
        and disarms it on the next message: after that Flush, or while the rows of a batch
        arrive, a client that vanished leaves its transaction open with its locks until the
        server notices the socket is gone (never, behind a middlebox that keeps it open).
        A row per round trip costs little for the runtime's updates of a few rows; inserts
        go as one statement (``use_insertmanyvalues_wo_returning``).
        """

        def executemany(self, query: Any, params_seq: Any, *, returning: bool = False) -> None:
            with self._conn.lock:
                self._conn.wait(self._executemany_gen_no_pipeline(query, params_seq, returning))

    class BoundedConnection(psycopg.Connection):  # type: ignore[type-arg]
        io_timeout: float | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.cursor_factory = UnpipelinedCursor

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            limit = timeout if timeout is not None else self.io_timeout
            try:
                return super().wait(gen, interval=interval, timeout=limit)
            except errors._WaitTimeout as exc:
                if timeout is not None:
                    raise  # psycopg's own limit (a cancel): its caller handles it
                self.pgconn.finish()  # mid-protocol: unusable, and "broken" to SQLAlchemy
                raise psycopg.OperationalError(f"the database did not answer within {limit:g} s") from exc

    return BoundedConnection


def _postgres_engine(url: str, settings: DatabaseSettings, limits: RoleLimits, **kwargs: Any) -> Engine:
    keepalive = max(1, int(settings.keepalive)) if settings.keepalive else 0
    connect_args: dict[str, Any] = {}
    if settings.connect_timeout:
        connect_args["connect_timeout"] = max(1, int(settings.connect_timeout + 0.999))
    if keepalive:
        interval = max(1, keepalive // 3)
        connect_args |= {
            "keepalives": 1,
            "keepalives_idle": keepalive,
            "keepalives_interval": interval,
            "keepalives_count": 3,
            # Unacknowledged data (a network that swallows packets) gives up as fast.
            "tcp_user_timeout": (keepalive + 3 * interval) * 1000,
        }
    engine = create_engine(url, connect_args={**connect_args, **kwargs.pop("connect_args", {})}, **kwargs)
    # A batch of inserts is one INSERT with many VALUES (one round trip, ended by Sync), not a
    # row per round trip as the cursors' unpipelined executemany would make it.
    engine.dialect.use_insertmanyvalues_wo_returning = True
    bounded = _bounded_connection_class()

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return bounded.connect(*cargs, **cparams)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.io_timeout = limits.io_timeout
        session_settings = {
            "statement_timeout": _ms(limits.statement),
            "lock_timeout": _ms(limits.lock),
            "idle_in_transaction_session_timeout": _ms(settings.idle_in_transaction_timeout),
        }
        if dbapi_conn.info.server_version >= 140000:
            session_settings["idle_session_timeout"] = _ms(settings.idle_session_timeout)
        if keepalive:  # the server's side of the same connection: it notices a vanished client
            session_settings |= {
                "tcp_keepalives_idle": keepalive,
                "tcp_keepalives_interval": max(1, keepalive // 3),
                "tcp_keepalives_count": 3,
            }
        with dbapi_conn.cursor() as cur:
            cur.execute("; ".join(f"SET {name} = {int(value)}" for name, value in session_settings.items()))
        dbapi_conn.commit()  # kept for the session, whatever the pool rolls back later

    return engine


def make_engine(url: str, settings: DatabaseSettings | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the worker's, dispatcher's and scheduler's limits.

    SQLite gets WAL, the busy timeout, and write-locking transactions (but for sessions on
    ``READ_ONLY``, which read a snapshot without the write lock).
    """
    settings = settings or DatabaseSettings()
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        limits = RoleLimits(settings.statement_timeout, settings.lock_timeout)
        return _postgres_engine(url, settings, limits, pool_pre_ping=True, **kwargs)
    return _sqlite_engine(url, settings.busy_timeout, **kwargs)


def _sqlite_engine(url: str, busy_timeout: float, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions defeat locking).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a crash of the process loses nothing, an OS crash or power cut may
        # lose the last commits. The intake's inbox writes switch to FULL (Inbox.add_many): an
        # acknowledged delivery is on disk; the rest is redone from the inbox if lost.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={_ms(busy_timeout)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            # WAL readers see a snapshot and never wait for (or hold up) the writer.
            conn.exec_driver_sql("BEGIN DEFERRED")
            return
        # IMMEDIATE takes the write lock up front: no deadlock when a reader later writes.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_intake_engine(url: str, settings: DatabaseSettings | None = None, **kwargs: Any) -> Engine:
    """An engine for inbox inserts on a server database: autocommit, no ``pool_pre_ping``,
    and the intake's short limits.

    Each delivery is one ``INSERT … RETURNING`` statement; in autocommit PostgreSQL commits
    it before it answers, so one round trip per delivery stores it durably (instead of
    ping, ``BEGIN``, ``INSERT``, ``COMMIT``). A connection that died while pooled fails
    on use and is discarded; the caller retries once (``Inbox.add``).
    """
    if make_url(url).get_backend_name() == "sqlite":
        raise ValueError("SQLite inserts share the main engine (make_engine)")
    settings = settings or DatabaseSettings()
    limits = RoleLimits(settings.intake_statement_timeout, settings.intake_lock_timeout)
    # A pool smaller than the threads serving deliveries opens and closes a connection per
    # delivery beyond it (an overflow connection is closed when returned to a full pool):
    # keep enough for gthread's or waitress's threads.
    kwargs.setdefault("pool_size", INTAKE_POOL_SIZE)
    if limits.io_timeout:
        kwargs.setdefault("pool_timeout", limits.io_timeout)  # waiting for a free connection too
    return _postgres_engine(
        url, settings, limits, isolation_level="AUTOCOMMIT", pool_recycle=INTAKE_POOL_RECYCLE, **kwargs
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def unbounded(conn: Connection) -> Iterator[None]:
    """Lift the time limits for what ``conn`` does inside this block (in one transaction on
    PostgreSQL: a migration, or waiting for another process's migration)."""
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
    conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
    conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
    dbapi_conn: Any = conn.connection.dbapi_connection
    before = dbapi_conn.io_timeout
    dbapi_conn.io_timeout = None
    try:
        yield
    finally:
        dbapi_conn.io_timeout = before


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    with engine.connect() as conn:
        postgres = engine.dialect.name == "postgresql"
        try:
            with unbounded(conn):
                if postgres:
                    # Several processes may start at once: one migrates, the others wait.
                    conn.exec_driver_sql("SELECT pg_advisory_lock(727100)")
                cfg = alembic_config(engine)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
        finally:
            if postgres and not conn.invalidated:
                conn.rollback()  # a failed migration left its transaction aborted
                conn.exec_driver_sql("SELECT pg_advisory_unlock(727100)")
                conn.commit()


def ping(engine: Engine) -> None:
    """One round trip: raises when the database cannot be reached."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        conn.rollback()


def database_problem(exc: BaseException, url: str | None = None) -> str:
    """One line saying why the database failed us (never a password, never a traceback)."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    reason = lines[0] if lines else type(orig).__name__
    where = f" {make_url(url).render_as_string(hide_password=True)}" if url else ""
    return f"database{where} unavailable: {reason}"
