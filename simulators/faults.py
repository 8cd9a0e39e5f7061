"""Injected faults: the knobs every simulator reads on each request and each webhook."""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass, field


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
    stall_takes_effect: whether a stalled call is still carried out after its stall (a slow
        server), or answered with a transient error without effect (a gateway that gave up).
    drop_webhook_rate: share of outgoing webhooks silently not sent.
    duplicate_webhooks: every webhook is sent this many times (>= 1).
    """

    error_rate: float = 0.0
    error_after_effect_rate: float = 0.0
    limit_rate: float = 0.0
    latency: tuple[float, float] = (0.0, 0.0)
    timeout_rate: float = 0.0
    timeout_stall: float = 5.0
    stall_takes_effect: bool = True
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

    def delay(self) -> bool:
        """Sleep for the configured latency (and a stall, when one is rolled); True on a stall."""
        low, high = self.latency
        if high > 0:
            time.sleep(self._rng.uniform(low, high))
        if self.roll(self.timeout_rate, "timeout"):
            time.sleep(self.timeout_stall)
            return True
        return False
