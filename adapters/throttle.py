"""Client-side throttling so the connector waits instead of being refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Throttle:
    """A leaky bucket on the client's side: ``acquire`` sleeps until ``units`` fit.

    Mirrors the server's bucket (drains ``rate`` per second up to ``capacity``), with a
    small safety margin so clock skew between us and the CRM does not cost a refusal.
    """

    def __init__(
        self,
        rate: float,
        capacity: float,
        *,
        margin: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = max(1.0, capacity - margin)
        self._clock = clock
        self._sleep = sleep
        self._level = 0.0
        self._last = clock()
        self._lock = threading.Lock()
        self.waited = 0.0  # total seconds spent waiting, for metrics and benchmarks

    def acquire(self, units: float = 1.0) -> float:
        """Wait until ``units`` fit in the bucket, take them, and return the wait."""
        units = min(units, self.capacity)
        with self._lock:
            now = self._clock()
            self._level = max(0.0, self._level - (now - self._last) * self.rate)
            self._last = now
            wait = max(0.0, (self._level + units - self.capacity) / self.rate)
            # Book the units now, at the moment they will be sent, so concurrent callers queue.
            self._level += units
            self.waited += wait
        if wait > 0:
            self._sleep(wait)
        return wait

    @property
    def level(self) -> float:
        """The units in the bucket now."""
        with self._lock:
            return max(0.0, self._level - (self._clock() - self._last) * self.rate)

    def penalise(self) -> None:
        """The server refused us anyway: assume its bucket is full."""
        with self._lock:
            self._level = self.capacity
            self._last = self._clock()
