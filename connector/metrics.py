"""Prometheus metrics: what happened (counters, histograms) and what is waiting (read from
the database at scrape time). Names start with ``crmc_``; labels never carry secrets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from domain.statuses import TIMER_RUNNING, InboxStatus

if TYPE_CHECKING:
    from connector.storage.store import Store

DELIVERIES = Counter("crmc_webhook_deliveries_total", "Webhook deliveries by CRM and result", ["crm", "result"])
PROCESSING = Histogram(
    "crmc_processing_seconds",
    "From a delivery's arrival to its rules' decisions",
    ["crm"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
RULE_ERRORS = Counter(
    "crmc_rule_errors_total", "Rules that could not be evaluated for an event, by CRM and rule", ["crm", "rule"]
)
PURGED = Counter("crmc_purged_rows_total", "Rows deleted by retention, by table", ["table"])
WRITES = Counter(
    "crmc_writes_total", "Outbox rows carried out, by CRM, command and result", ["crm", "command", "result"]
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
        with self.store.reading() as s:
            for crm, status, count in s.execute(
                select(OutboxRow.crm, OutboxRow.status, func.count(OutboxRow.id)).group_by(
                    OutboxRow.crm, OutboxRow.status
                )
            ):
                outbox.add_metric([crm, status], count)
            for crm, status, count in s.execute(
                select(InboxRow.crm, InboxRow.status, func.count(InboxRow.id))
                .where(InboxRow.status != InboxStatus.DONE)
                .group_by(InboxRow.crm, InboxRow.status)
            ):
                inbox.add_metric([crm, status], count)
            timers.add_metric(
                [], s.scalar(select(func.count(TimerRow.id)).where(TimerRow.status.in_(TIMER_RUNNING))) or 0
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
