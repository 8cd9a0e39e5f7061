"""Bitrix24's operating-time limit, mirrored per method on our side.

Every answer tells, in ``time.operating``, how many seconds of server time one method has
spent for this portal within the last 10 minutes, and in ``time.operating_reset_at`` when
part of it leaves the window. Past the limit (480 s) that method answers 429
``OPERATION_TIME_LIMIT`` until then, while every other method keeps working. So the budget is
kept per method: near the limit a method's calls are spaced out so that what is left lasts
until the window frees some, and a blocked method is suspended until its reset time without
touching the request budget (the leaky bucket) that the other methods share.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

OPERATING_LIMIT = 480.0  # seconds of one method's server time per 10 minutes
SLOW_SHARE = 0.8  # past this share of the limit a method is paced
UNKNOWN_RESET = 60.0  # a block whose end no answer told: look again after this


@dataclass
class _Method:
    operating: float = 0.0
    reset_at: float = 0.0  # unix time when part of the spent time leaves the window
    cost: float = 0.0  # server time of the last call seen
    last_call: float = 0.0
    suspended_until: float = 0.0


class OperatingBudget:
    """The per-method server-time budget, fed from every answer's ``time`` block."""

    def __init__(
        self,
        limit: float = OPERATING_LIMIT,
        *,
        slow_share: float = SLOW_SHARE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.slow_share = slow_share
        self.clock = clock
        self._methods: dict[str, _Method] = {}
        self._lock = threading.Lock()

    def note(self, method: str, timing: Any) -> None:
        """Take in one answer's ``time`` block for ``method`` (ignored when it has no figures)."""
        if not isinstance(timing, Mapping) or "operating" not in timing:
            return
        try:
            operating = float(timing["operating"])
            reset_at = float(timing.get("operating_reset_at") or 0.0)
            cost = float(timing.get("duration") or 0.0)
        except (TypeError, ValueError):
            return
        with self._lock:
            state = self._methods.setdefault(method.lower(), _Method())
            state.operating, state.reset_at, state.cost = operating, reset_at, cost

    def suspend(self, method: str) -> float:
        """``method`` answered OPERATION_TIME_LIMIT: suspend it until its reset time (or a
        minute when no answer told it); returns the seconds it stays suspended."""
        now = self.clock()
        with self._lock:
            state = self._methods.setdefault(method.lower(), _Method())
            until = state.reset_at if state.reset_at > now else now + UNKNOWN_RESET
            state.suspended_until = max(state.suspended_until, until)
            return state.suspended_until - now

    def suspended_for(self, method: str) -> float:
        """Seconds ``method`` stays suspended (0 when it may be called)."""
        now = self.clock()
        with self._lock:
            state = self._methods.get(method.lower())
            if state is None:
                return 0.0
            if state.operating >= self.limit and state.reset_at > now:
                state.suspended_until = max(state.suspended_until, state.reset_at)
            return max(0.0, state.suspended_until - now)

    def pace(self, method: str) -> float:
        """Seconds to wait before calling ``method`` so that its budget lasts (0 when far from
        the limit); books the call."""
        now = self.clock()
        with self._lock:
            state = self._methods.setdefault(method.lower(), _Method())
            wait = 0.0
            threshold = self.limit * self.slow_share
            if state.operating >= threshold and state.reset_at > now:
                left = max(self.limit - state.operating, 1e-6)
                calls_left = max(1.0, left / max(state.cost, 1e-3))
                # Spread the calls that still fit over the time until the window frees some.
                spacing = (state.reset_at - now) / calls_left
                wait = max(0.0, state.last_call + spacing - now)
            state.last_call = now + wait
            return wait

    def figures(self) -> dict[str, tuple[float, float]]:
        """(operating, reset_at) per method, for status and tests."""
        with self._lock:
            return {name: (s.operating, s.reset_at) for name, s in self._methods.items()}
