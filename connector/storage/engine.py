"""Engines for SQLite (WAL, embedded default) and PostgreSQL, and schema migration."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
# The intake's connections are renewed after this many seconds, so one the server or a
# firewall dropped while idle is rarely met: the intake pings no connection at checkout.
INTAKE_POOL_RECYCLE = 300
INTAKE_POOL_SIZE = 10


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and write-locking transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions defeat locking).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: no deadlock when a reader later writes.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_intake_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for inbox inserts on a server database: autocommit and no ``pool_pre_ping``.

    Each delivery is one ``INSERT … RETURNING`` statement; in autocommit PostgreSQL commits
    it before it answers, so one round trip per delivery stores it durably (instead of
    ping, ``BEGIN``, ``INSERT``, ``COMMIT``). A connection that died while pooled fails
    on use and is discarded; the caller retries once (``Inbox.add``).
    """
    if make_url(url).get_backend_name() == "sqlite":
        raise ValueError("SQLite inserts share the main engine (make_engine)")
    # A pool smaller than the threads serving deliveries opens and closes a connection per
    # delivery beyond it (an overflow connection is closed when returned to a full pool):
    # keep enough for gthread's or waitress's threads.
    kwargs.setdefault("pool_size", INTAKE_POOL_SIZE)
    return create_engine(url, isolation_level="AUTOCOMMIT", pool_recycle=INTAKE_POOL_RECYCLE, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # Several processes may start at once: one migrates, the others wait.
            conn.exec_driver_sql("SELECT pg_advisory_lock(727100)")
        try:
            cfg = alembic_config(engine)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
        finally:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_unlock(727100)")
                conn.commit()
