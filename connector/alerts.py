"""Alerts to the admins, in their chat channel or by e-mail: a CRM paused, dead letters rising,
a deadline breached, the connector unable to store.

The leading process looks every ``alerts.every``. Each condition is told once when it starts
and once when it clears ("resolved"); a breach is told once. Messages go out at most once per
``alerts.min_interval``: what happens meanwhile waits and goes into the next message, so a
flapping CRM cannot flood anyone. A message that cannot be sent is kept for the next look.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol

from sqlalchemy import func, select

from connector.storage.cursors import Cursors
from connector.storage.models import BreachRow, OutboxRow
from connector.storage.store import Store
from domain.errors import AdapterError
from domain.statuses import OutboxStatus

log = logging.getLogger(__name__)


class Sender(Protocol):
    def send(self, subject: str, body: str) -> None: ...


class EmailSender:
    """One e-mail per message, over SMTP (STARTTLS, SSL or plain to a local relay)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def send(self, subject: str, body: str) -> None:
        s = self.settings
        message = EmailMessage()
        message["Subject"], message["From"], message["To"] = subject, s["sender"], ", ".join(s["to"])
        message.set_content(body)
        smtp_class = smtplib.SMTP_SSL if s["security"] == "ssl" else smtplib.SMTP
        with smtp_class(s["host"], s["port"], timeout=s["timeout"]) as smtp:
            if s["security"] == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if s["username"]:
                smtp.login(s["username"], s["password"])
            smtp.send_message(message)


class ChannelSender:
    """One post per message to a configured channel (the admins' chat)."""

    def __init__(self, channel: str, adapter: Any) -> None:
        self.channel = channel
        self.adapter = adapter

    def send(self, subject: str, body: str) -> None:
        import uuid

        from domain import SendMessage

        self.adapter.execute(SendMessage("", channel=self.channel, text=f"{subject}\n\n{body}"), uuid.uuid4().hex)


@dataclass
class _Seen:
    """What the admins have been told is going on."""

    paused: set[str] = field(default_factory=set)
    dead_letters: int = 0
    breach_id: int | None = None  # the last breach told (None: not looked yet)
    cannot_store: str | None = None


class Alerter:
    """Looks for trouble and tells the admins; call ``check`` on a schedule (the leader's)."""

    def __init__(
        self, store: Store, settings: dict[str, Any], sender: Sender, clock: Callable[[], datetime], tz: str = "UTC"
    ) -> None:
        self.store = store
        self.settings = settings
        self.sender = sender
        self.clock = clock
        self.tz = tz
        self.seen = _Seen()
        self.pending: list[str] = []
        self.last_sent: datetime | None = None

    def check(self) -> int:
        """Look once; send what is pending when the rate limit allows. Returns lines sent."""
        self.pending += self._changes()
        now = self.clock()
        interval = timedelta(seconds=self.settings["min_interval"])
        if not self.pending or (self.last_sent is not None and now - self.last_sent < interval):
            return 0
        lines = list(self.pending)
        alerts = sum(1 for line in lines if line.startswith("ALERT"))
        subject = f"[crm-connector] {alerts} alert(s), {len(lines) - alerts} resolved"
        try:
            self.sender.send(subject, "\n".join(lines) + "\n\nconnector status --config FILE shows the details.\n")
        except (OSError, smtplib.SMTPException, AdapterError) as exc:
            log.error("alert not sent (kept for the next try): %s: %s", type(exc).__name__, exc)
            return 0
        self.pending = self.pending[len(lines) :]
        self.last_sent = now
        log.info("alert sent: %s", subject)
        return len(lines)

    def _changes(self) -> list[str]:
        try:
            with self.store.sessions() as session:
                paused = Cursors.paused(session)
                dead = int(
                    session.scalar(select(func.count(OutboxRow.id)).where(OutboxRow.status == OutboxStatus.DEAD)) or 0
                )
                last_breach = self.seen.breach_id
                breaches = (
                    list(session.scalars(select(BreachRow).where(BreachRow.id > last_breach).order_by(BreachRow.id)))
                    if last_breach is not None
                    else []
                )
                newest = session.scalar(select(func.max(BreachRow.id))) or 0
        except Exception as exc:  # noqa: BLE001 - any failure to read is "cannot store"
            from connector.failures import explain

            failure = explain(exc)
            reason = failure.line if failure else f"{type(exc).__name__}: {exc}"
            if self.seen.cannot_store is None:
                self.seen.cannot_store = reason
                return [f"ALERT the connector cannot store: {reason}"]
            return []
        lines: list[str] = []
        if self.seen.cannot_store is not None:
            lines.append("RESOLVED the connector stores again")
            self.seen.cannot_store = None
        for crm in sorted(set(paused) - self.seen.paused):
            since, reason = paused[crm]
            lines.append(f"ALERT {crm} paused since {self._at(since)}: {reason.removeprefix('paused: ')}")
        for crm in sorted(self.seen.paused - set(paused)):
            lines.append(f"RESOLVED {crm} is processed again")
        self.seen.paused = set(paused)
        if dead > self.seen.dead_letters:
            lines.append(
                f"ALERT dead letters: {dead} (was {self.seen.dead_letters}); "
                "connector replay --id N once fixed, or discard --id N --reason TEXT"
            )
        elif dead == 0 and self.seen.dead_letters:
            lines.append("RESOLVED no dead letters left")
        self.seen.dead_letters = dead
        for b in breaches:
            who = f" (responsible {b.responsible_id})" if b.responsible_id else ""
            lines.append(
                f"ALERT deadline {b.deadline} breached on {b.crm} deal {b.deal_id}{who} at {self._at(b.breached_at)}"
            )
        self.seen.breach_id = max([newest, *(b.id for b in breaches)])
        return lines

    def _at(self, moment: datetime) -> str:
        from zoneinfo import ZoneInfo

        return moment.astimezone(ZoneInfo(self.tz)).strftime(f"%Y-%m-%d %H:%M ({self.tz})")
