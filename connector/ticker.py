"""A role's loop: its tick every ``every`` seconds, at once when woken, and again at once while
it finds work.

The worker is woken by the intake when a delivery is committed and the dispatcher by the
worker when it finished rows, so in one process an event goes from webhook to CRM without
waiting for a tick; ``every`` remains the poll for work that other processes stored (the
production shape) and for retries coming due.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from connector.failures import explain

log = logging.getLogger(__name__)


class Ticker:
    """Runs ``tick`` in its own thread until ``stop``."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], int],
        every: float,
        *,
        on_work: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._tick = tick
        self._every = every
        self._on_work = on_work
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Tick as soon as the running tick (if any) ends."""
        self._wake.set()

    def every_seconds(self, every: float) -> None:
        """Wait this long between idle ticks from now on (a reloaded config)."""
        self._every = every

    def pause(self) -> None:
        """No tick starts until ``resume`` (the running one finishes)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Let the running tick finish, then end the loop and join its thread."""
        self._stopping.set()
        self._running.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s did not stop within %.0f s", self.name, timeout or 0)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._running.wait()
            if self._stopping.is_set():
                return
            # Cleared before the tick: a wake-up that arrives during it makes the next one.
            self._wake.clear()
            try:
                finished = self._tick()
            except Exception as exc:  # the next tick retries; a loop that died would stop the role
                failure = explain(exc)
                if failure is None:
                    log.exception("%s tick failed", self.name)
                else:
                    log.error("%s tick failed: %s", self.name, failure.line)
                    log.debug("%s tick failed", self.name, exc_info=True)
                finished = 0
            if finished:
                if self._on_work is not None:
                    self._on_work()
                continue
            self._wake.wait(self._every)
