"""Outgoing webhooks: an asynchronous, in-order sender that applies the fault knobs."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import requests

from simulators.faults import FaultKnobs

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """One webhook delivery attempt made by a simulator, kept for assertions."""

    url: str
    body: bytes | str | Mapping[str, Any]
    status: int | None
    error: str | None = None
    dropped: bool = False


# One queued delivery: url, keyword arguments for ``requests.post`` and an optional callback.
_Item: TypeAlias = tuple[str, dict[str, Any], Callable[[list[Delivery]], None] | None]


class WebhookSender:
    """Delivers webhooks from a background thread, in order, like a CRM's event queue.

    ``send`` enqueues and returns at once, so a simulated API call never waits for the
    connector to answer its webhook (the real CRMs don't either).
    """

    def __init__(self, faults: FaultKnobs, timeout: float = 10.0) -> None:
        self.faults = faults
        self.timeout = timeout
        self.log: list[Delivery] = []
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._session = requests.Session()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="sim-webhooks", daemon=True)
        self._thread.start()

    def send(self, url: str, **request_kwargs: Any) -> None:
        """Queue one delivery (``request_kwargs`` go to ``requests.post``)."""
        self._idle.clear()
        self._queue.put((url, request_kwargs, None))

    def send_then(self, url: str, on_result: Callable[[list[Delivery]], None], **request_kwargs: Any) -> None:
        """Queue one delivery like ``send``; ``on_result`` gets its records once it was attempted.

        The callback runs on the sender's thread, before ``wait_idle`` can return, so a
        simulator can apply its CRM's retry policy to a failed delivery (keep it short).
        """
        self._idle.clear()
        self._queue.put((url, request_kwargs, on_result))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued delivery has been attempted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                url, kwargs, on_result = item
                body: Any = kwargs.get("data", kwargs.get("json", b""))
                records: list[Delivery] = []
                if self.faults.roll(self.faults.drop_webhook_rate, "dropped_webhook"):
                    records.append(Delivery(url, body, None, dropped=True))
                else:
                    for _ in range(max(1, self.faults.duplicate_webhooks)):
                        try:
                            resp = self._session.post(url, timeout=self.timeout, **kwargs)
                            records.append(Delivery(url, body, resp.status_code))
                        except requests.RequestException as exc:
                            records.append(Delivery(url, body, None, error=type(exc).__name__))
                self.log.extend(records)
                if on_result is not None:
                    try:
                        on_result(records)
                    except Exception:  # a simulator bug must not stop the sender
                        log.exception("webhook result callback failed for %s", url)
            finally:
                self._queue.task_done()
