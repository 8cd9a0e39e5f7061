"""Shared machinery for the CRM simulators: a threaded loopback server, fault knobs,
a leaky bucket and an asynchronous webhook sender.

The simulators (``adapters/<crm>/simulator.py``) behave like the real APIs so that the
adapters can be proven end to end; this module holds what they have in common.
"""

from __future__ import annotations

import collections
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import requests
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger(__name__)


@dataclass
class FaultKnobs:
    """Injected faults, all off by default.

    error_rate: share of API calls answered with a transient server error (5xx) without
        taking effect.
    error_after_effect_rate: share of *write* calls that take effect and then answer with
        a 5xx anyway (the answer is lost: the client cannot know it worked).
    limit_rate: share of API calls refused as rate-limited although the bucket has room.
    latency: seconds added to every API answer (a (min, max) range).
    timeout_rate: share of API calls that stall for ``timeout_stall`` seconds, longer than
        a sane client timeout, before answering.
    drop_webhook_rate: share of outgoing webhooks silently not sent.
    duplicate_webhooks: every webhook is sent this many times (>= 1).
    """

    error_rate: float = 0.0
    error_after_effect_rate: float = 0.0
    limit_rate: float = 0.0
    latency: tuple[float, float] = (0.0, 0.0)
    timeout_rate: float = 0.0
    timeout_stall: float = 5.0
    drop_webhook_rate: float = 0.0
    duplicate_webhooks: int = 1
    seed: int | None = None
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    injected: collections.Counter[str] = field(default_factory=collections.Counter, repr=False)
    _count_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.seed is not None:
            self._rng.seed(self.seed)

    def roll(self, rate: float, kind: str | None = None) -> bool:
        """True with probability ``rate``; a hit of a named ``kind`` is counted in ``injected``."""
        hit = rate > 0 and self._rng.random() < rate
        if hit and kind:
            with self._count_lock:
                self.injected[kind] += 1
        return hit

    def delay(self) -> None:
        """Sleep for the configured latency (and a stall, when one is rolled)."""
        low, high = self.latency
        if high > 0:
            time.sleep(self._rng.uniform(low, high))
        if self.roll(self.timeout_rate, "timeout"):
            time.sleep(self.timeout_stall)


class LeakyBucket:
    """A bucket that drains ``rate`` units per second and refuses past ``capacity``.

    This is the server's side of the limit (Bitrix24's documented model): the caller is
    refused when the bucket is full, never made to wait.
    """

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._level = 0.0
        self._last = clock()
        self._lock = threading.Lock()
        self.refused = 0
        self.accepted = 0

    def try_take(self, units: float = 1.0) -> bool:
        """Take ``units`` if they fit, answering whether they did."""
        with self._lock:
            now = self._clock()
            self._level = max(0.0, self._level - (now - self._last) * self.rate)
            self._last = now
            if self._level + units > self.capacity + 1e-9:
                self.refused += 1
                return False
            self._level += units
            self.accepted += 1
            return True

    @property
    def level(self) -> float:
        with self._lock:
            now = self._clock()
            return max(0.0, self._level - (now - self._last) * self.rate)


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


class SimulatorServer:
    """Serves a simulator's Flask app on loopback from a background thread.

    ``port=0`` takes a free port; ``base_url`` tells where it landed.
    """

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self.host = host
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="sim-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SimulatorServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
