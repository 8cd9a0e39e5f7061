"""One scheduler per database: the leader runs polls, deadline scans, schedules and reports.

Several connector processes may share a PostgreSQL database (scale-out); workers and
dispatchers in all of them claim rows safely, but a poll or a deadline scan must run in
one place (and APScheduler 3's job stores must not be shared). The leader holds a
PostgreSQL advisory lock on its own connection: if the process dies, the connection
closes and another process takes over at its next try. That connection runs in autocommit,
so it never sits idle inside a transaction, and its session is ended by the server when it
stays silent for a few checks (``idle_session_timeout``): a leader cut off from the database
(a reset the server never heard of) frees the lock for a successor instead of holding it
for ever. On SQLite there is one process, which always leads. The leader writes a heartbeat
row so that any process (an intake under gunicorn, say) can tell whether a leader is alive.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from connector.storage.store import Store

log = logging.getLogger(__name__)

LOCK_KEY = 727101
# The server ends a leader's session silent for this many checks, releasing its lock.
SILENT_CHECKS = 4


class Leadership:
    """Try to lead; ``held()`` says whether this process leads right now. ``check_every`` is
    how often the runtime calls it (seconds): the lock's session outlives a few silent ones."""

    def __init__(self, store: Store, owner: str, *, check_every: float = 15.0) -> None:
        self.store = store
        self.owner = owner
        self.check_every = check_every
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._postgres = store.engine.dialect.name == "postgresql"

    def held(self, now: datetime) -> bool:
        """Acquire or confirm leadership; write the heartbeat when leading."""
        with self._lock:
            leading = self._confirm() if self._postgres else True
        if leading:
            try:
                self.store.cursors.beat(self.owner, now)
            except SQLAlchemyError:
                log.warning("leader heartbeat not written")
        return leading

    def _confirm(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.exec_driver_sql("SELECT 1")
                return True
            except SQLAlchemyError:
                log.warning("leader lost its database connection; leadership dropped owner=%s", self.owner)
                self._drop()
        conn: Connection | None = None
        try:
            conn = self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            silent = int(self.check_every * SILENT_CHECKS * 1000)
            if (self.store.engine.dialect.server_version_info or (0,)) >= (14,):
                conn.exec_driver_sql(f"SET idle_session_timeout = {silent}")
            got = bool(conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({LOCK_KEY})").scalar())
        except SQLAlchemyError:
            if conn is not None:
                with contextlib.suppress(SQLAlchemyError):
                    conn.invalidate()
                    conn.close()
            return False
        if not got:
            with contextlib.suppress(SQLAlchemyError):  # back to the pool's own limit
                own = int(self.store.settings.idle_session_timeout * 1000)
                conn.exec_driver_sql(f"SET idle_session_timeout = {own}")
            conn.close()
            return False
        self._conn = conn
        log.info("this process leads the scheduled jobs owner=%s", self.owner)
        return True

    def _drop(self) -> None:
        if self._conn is not None:
            # Closing would only return the connection to the pool, lock and all: unlock, and
            # discard the connection so nothing of this session survives.
            with contextlib.suppress(SQLAlchemyError):
                self._conn.exec_driver_sql(f"SELECT pg_advisory_unlock({LOCK_KEY})")
            with contextlib.suppress(SQLAlchemyError):
                self._conn.invalidate()
                self._conn.close()
            self._conn = None

    def release(self) -> None:
        """Give leadership up (closing the connection releases the advisory lock)."""
        with self._lock:
            self._drop()


def leader_seen(store: Store, now: datetime, within: timedelta) -> tuple[str | None, datetime | None]:
    """The last leader's name and heartbeat, if it beat within ``within``."""
    owner, beat = store.cursors.last_beat()
    if beat is None or now - beat > within:
        return None, beat
    return owner, beat
