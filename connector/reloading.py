"""Reloading the config of a running connector without a restart.

Two ways to ask, both ending in ``Runtime.reload``:

* SIGHUP to the process (POSIX);
* ``connector reload --config FILE`` on any platform, Windows included: it validates the file
  like ``check`` and writes a reload request into the database (a row of the cursors table);
  every running process sharing that database looks for a new request every
  ``RELOAD_CHECK`` seconds and reloads its own config file.

What a reload swaps: rules (``enabled: false`` switches one off), territories, calendars,
org, deadlines, reports, recurring work, schedules and their cron jobs, worker and
dispatcher settings. What needs a restart: the CRMs' connections (``crms``), ``storage``,
``server`` and ``logging``; a reload that changes them applies the rest and logs what waits
for the restart. A CRM or channel added or removed is refused: the running adapters could not serve it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from connector.storage.cursors import HEARTBEAT
from connector.storage.models import CursorRow

if TYPE_CHECKING:
    from connector.config import Config
    from connector.storage.store import Store

RELOAD_CHECK = 5.0  # seconds between looks for a reload request in the database
RELOAD_STREAM = "reload"
RESTART_SECTIONS = ("storage", "server", "logging")


def request_reload(store: Store, by: str, now: datetime) -> str:
    """Ask every running process on this database to reload its config; returns the request's id."""
    nonce = uuid.uuid4().hex
    with store.sessions() as session, session.begin():
        row = session.get(CursorRow, (HEARTBEAT[0], RELOAD_STREAM))
        value = f"{nonce} {by}"[:200]
        if row is None:
            session.add(CursorRow(crm=HEARTBEAT[0], stream=RELOAD_STREAM, value=value, updated_at=now))
        else:
            row.value, row.updated_at = value, now
    return nonce


def latest_request(store: Store) -> str | None:
    """The id of the latest reload request, or None when there was never one."""
    with store.sessions() as session:
        value = session.scalar(
            select(CursorRow.value).where(CursorRow.crm == HEARTBEAT[0], CursorRow.stream == RELOAD_STREAM)
        )
    return value.split(" ", 1)[0] if value else None


def refusal(old: Config, new: Config) -> str | None:
    """Why ``new`` cannot replace ``old`` in a running process, or None."""
    if set(old.crms) != set(new.crms):
        added, removed = sorted(set(new.crms) - set(old.crms)), sorted(set(old.crms) - set(new.crms))
        change = ", ".join([*(f"{n} added" for n in added), *(f"{n} removed" for n in removed)])
        return f"the CRMs changed ({change}): restart the connector for that"
    if set(old.channels) != set(new.channels):
        return "the channels changed: restart the connector for that"
    return None


def waiting_for_restart(old: Config, new: Config) -> list[str]:
    """The sections whose change applies only at the next start."""
    waiting = [f"crms.{name}" for name in sorted(new.crms) if new.crms[name] != old.crms[name]]
    return waiting + [section for section in RESTART_SECTIONS if getattr(new, section) != getattr(old, section)]
