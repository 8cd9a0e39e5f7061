"""Prometheus metrics: what happened (counters, histograms) and what is waiting (read from
the database at scrape time). Names start with ``crmc_``; labels never carry secrets.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

if TYPE_CHECKING:
    from connector.storage.store import Store

log = logging.getLogger("connector.crm")

DELIVERIES = Counter("crmc_webhook_deliveries_total", "Webhook deliveries by CRM and result", ["crm", "result"])
PROCESSING = Histogram(
    "crmc_processing_seconds",
    "From a delivery's arrival to its rules' decisions",
    ["crm"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
CRM_CALLS = Counter("crmc_crm_calls_total", "HTTP requests to CRMs by method and outcome", ["crm", "method", "outcome"])
CRM_CALL_SECONDS = Histogram(
    "crmc_crm_call_seconds",
    "CRM request latency",
    ["crm"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RATE_LIMIT_WAIT = Counter("crmc_rate_limit_wait_seconds_total", "Seconds spent waiting for a CRM's rate limit", ["crm"])
WRITES = Counter(
    "crmc_writes_total", "Outbox rows carried out, by CRM, command and result", ["crm", "command", "result"]
)


_IDS = re.compile(r"/\d+")


@contextlib.contextmanager
def crm_call(crm: str, method: str) -> Iterator[dict[str, Any]]:
    """Measure and log one HTTP request to a CRM: a line with the method, HTTP status,
    outcome and time (never the URL, which may hold a secret), and the call metrics.
    The caller may set ``status`` in the yielded dict; an exception's code is the outcome."""
    label = _IDS.sub("/{id}", method)  # /api/v2/deals/123 -> one series, not one per deal
    info: dict[str, Any] = {"status": None}
    started = time.monotonic()
    outcome = "ok"
    try:
        yield info
    except Exception as exc:
        outcome = str(getattr(exc, "code", None) or type(exc).__name__)
        info["status"] = info["status"] or getattr(exc, "status", None)
        raise
    finally:
        elapsed = time.monotonic() - started
        CRM_CALLS.labels(crm, label, outcome).inc()
        CRM_CALL_SECONDS.labels(crm).observe(elapsed)
        log.info(
            "crm call crm=%s method=%s http=%s outcome=%s ms=%d",
            crm,
            label,
            info["status"] or "-",
            outcome,
            elapsed * 1000,
        )


class DatabaseCollector(Collector):
    """Row counts read when scraped: outbox and inbox states, open deadlines, breaches."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from connector.storage.models import BreachRow, InboxRow, OutboxRow, TimerRow

        outbox = GaugeMetricFamily("crmc_outbox_rows", "Outbox rows by CRM and status", labels=["crm", "status"])
        inbox = GaugeMetricFamily("crmc_inbox_rows", "Inbox rows by CRM and status", labels=["crm", "status"])
        timers = GaugeMetricFamily("crmc_open_deadlines", "Deadlines running")
        breaches = GaugeMetricFamily("crmc_deadline_breaches", "Breaches recorded, by deadline", labels=["deadline"])
        with self.store.sessions() as s:
            for crm, status, count in s.execute(
                select(OutboxRow.crm, OutboxRow.status, func.count(OutboxRow.id)).group_by(
                    OutboxRow.crm, OutboxRow.status
                )
            ):
                outbox.add_metric([crm, status], count)
            for crm, status, count in s.execute(
                select(InboxRow.crm, InboxRow.status, func.count(InboxRow.id))
                .where(InboxRow.status != "done")
                .group_by(InboxRow.crm, InboxRow.status)
            ):
                inbox.add_metric([crm, status], count)
            timers.add_metric(
                [], s.scalar(select(func.count(TimerRow.id)).where(TimerRow.status.in_(("open", "reminded")))) or 0
            )
            for deadline, count in s.execute(
                select(BreachRow.deadline, func.count(BreachRow.id)).group_by(BreachRow.deadline)
            ):
                breaches.add_metric([deadline], count)
        yield outbox
        yield inbox
        yield timers
        yield breaches


def exposition(store: Store) -> bytes:
    """The text exposition: the process's counters plus the database's gauges."""
    from prometheus_client import REGISTRY

    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector(store))
    return generate_latest(REGISTRY) + generate_latest(database)
