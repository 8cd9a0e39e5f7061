"""The server's side of a leaky-bucket rate limit (Bitrix24's documented model)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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
