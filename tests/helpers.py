"""Building blocks for the end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from domain.clock import utcnow

CONFIG = """
storage: {{url: "{db_url}"}}
server: {{host: 127.0.0.1, port: 0}}
worker: {{every: 0.1s}}
dispatcher: {{every: 0.1s, backoff: 0.2s, lease: 2s, reconcile_after: 0.5s}}
crms:
  b24:
    type: bitrix24
    webhook_url: "{b24_url}"
    application_token: "${{B24_TOKEN}}"
    backoff_initial: 0.05s
    rate: 50
    burst: 50
    max_attempts: 3
    location_fields: {{address: UF_CRM_ADDRESS}}
territories:
  - {{match: {{city: Казань, district: Советский}}, captain: 2, backup: 3}}
  - {{match: {{postcode: "42011*"}}, captain: 4}}
rules:
  - name: captain-by-location
    crm: b24
    on: [deal.created, deal.updated]
    when: {{stage: ["C1:NEW"]}}
    do:
      - assign_captain: {{fallback: 1}}
      - create_task:
          title: "Проверить техническую возможность: {{{{ deal.title }}}}"
          responsible: captain
          due: 24h
"""

TOKEN = "test-app-token-123"


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout``; returns the last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Clock:
    """Wall time that moves only when the test moves it (``clock.now = ...`` or ``advance``)."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = utcnow() if now is None else now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
