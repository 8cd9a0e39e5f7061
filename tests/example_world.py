"""Building blocks for running an examples/*.yaml end to end on the simulators, on a fake clock.

The runtime serves webhooks (its intake) but runs no scheduler: a test moves the shared
clock and then settles the world by hand — deliveries drained, deadlines scanned, the
worker and the dispatcher ticked until nothing moves — so a scripted week takes seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from connector.config import load_config_text
from connector.runtime import Runtime

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MSK = ZoneInfo("Europe/Moscow")


class Clock:
    """The one wall clock of the CRMs and the connector."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def utc(self) -> datetime:
        return self.now.astimezone(UTC)

    def set(self, day: int, month: int, hour: int, minute: int = 0, year: int = 2026) -> None:
        moment = datetime(year, month, day, hour, minute, tzinfo=MSK)
        assert moment >= self.now, "the clock only moves forward"
        self.now = moment


class Sends(Protocol):
    def wait_idle(self, timeout: float = 10.0) -> bool: ...


def example_runtime(name: str, db_url: str, environ: dict[str, str], clock: Clock) -> Runtime:
    """The example's config as written, with the test's database and an ephemeral intake port."""
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("storage:")]
    assert len(lines) == len(text.splitlines()) - 1, f"{name}: one top-level storage: line expected"
    text = f'storage: {{url: "{db_url}"}}\nserver: {{host: 127.0.0.1, port: 0}}\n' + "\n".join(lines)
    runtime = Runtime(load_config_text(text, environ), clock=clock.utc)
    runtime.start(roles=["intake"])
    return runtime


def settle(runtime: Runtime, clock: Clock, senders: Iterable[Sends] = (), *, poll: Iterable[str] = ()) -> None:
    """Run everything due at the clock's moment until the world is quiet.

    Each round moves the clock two seconds on, as the real one would while the connector
    writes: a CRM stamps its webhooks and changes to the second, and the connector's own
    write must not look like a repeat of the change that caused it."""
    senders = list(senders)
    for crm in poll:
        runtime.poll(crm)
    for _ in range(50):
        clock.now += timedelta(seconds=2)
        for sender in senders:
            assert sender.wait_idle(), "webhook deliveries stuck"
        moved = runtime.fire_timers()
        while (done := runtime.worker.tick()) > 0:
            moved += done
        while (done := runtime.dispatcher.tick()) > 0:
            moved += done
        if not moved:
            for sender in senders:
                sender.wait_idle()
            if runtime.worker.tick() == 0:
                return
    raise AssertionError("the world did not settle")
