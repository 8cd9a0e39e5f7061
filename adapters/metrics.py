"""Metrics of the calls every CRM client makes: requests by method and outcome, their
latency, and the time spent waiting for a CRM's rate limit. Names start with ``crmc_``;
labels never carry secrets (the method, never the URL)."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Histogram

log = logging.getLogger("connector.crm")

CRM_CALLS = Counter("crmc_crm_calls_total", "HTTP requests to CRMs by method and outcome", ["crm", "method", "outcome"])
CRM_CALL_SECONDS = Histogram(
    "crmc_crm_call_seconds",
    "CRM request latency",
    ["crm"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RATE_LIMIT_WAIT = Counter("crmc_rate_limit_wait_seconds_total", "Seconds spent waiting for a CRM's rate limit", ["crm"])

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
