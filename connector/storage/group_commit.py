"""Group commit for the intake: deliveries that arrive together share one insert and one commit.

Each request hands its inbox rows to the process's one writer thread and waits. The writer
takes whatever is waiting (after the first row, up to ``wait`` more seconds for others while
requests of the process are still on their way, at most ``max_rows``), inserts the lot with
one statement in one transaction, and only then releases each request with what became of
its rows. A failed group fails every request in it (the intake answers 503; the senders
retry, and the unique key makes a retry of a row that was stored after all a duplicate). A
request that waited ``timeout`` gives up (503) and its rows are left out of any later group;
if they were already being written they may still be stored, which a retry reports as a
duplicate. So a request is acknowledged only after its rows are committed, and an answer
never waits on the database for long.

A server that runs an asyncio loop hands its rows over with ``store_soon`` instead and
awaits a future: no thread is held per request, and the writer settles a whole group's
futures with one call into the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (CRM, dedup key): what makes an inbox row unique
Insert = Callable[[Sequence[dict[str, Any]]], set[Key]]


class StorageTimeout(Exception):
    """The writer did not commit a request's rows within its time limit."""


class _Request:
    __slots__ = ("rows", "done", "future", "timer", "stored", "error", "abandoned")

    def __init__(self, rows: Sequence[dict[str, Any]], future: asyncio.Future[list[bool]] | None = None) -> None:
        self.rows = rows
        self.future = future  # a loop's request is settled through its future
        self.timer: asyncio.TimerHandle | None = None
        # A thread's request waits on a latch: taken here, released by the writer when the
        # group is settled. Cheaper than an Event (no Condition, no waiter lock per wait)
        # for the one waiter it ever has.
        self.done: threading.Lock | None = None
        if future is None:
            self.done = threading.Lock()
            self.done.acquire()
        self.stored: list[bool] = []
        self.error: BaseException | None = None
        self.abandoned = False

    def settle(self) -> None:
        """Wake the waiting thread (a loop's requests are settled by ``_settle_in_loop``)."""
        if self.done is not None:
            self.done.release()


def _settle_in_loop(requests: list[_Request]) -> None:
    """Resolve a group's futures of one loop, in that loop's thread."""
    for request in requests:
        if request.timer is not None:
            request.timer.cancel()
        future = request.future
        if future is None or future.done():  # it gave up before the group was written
            continue
        if request.error is not None:
            future.set_exception(request.error)
        else:
            future.set_result(request.stored)


class _Expecting:
    """``with writer.expecting():`` counts the request as on its way while in the block."""

    __slots__ = ("_writer",)

    def __init__(self, writer: GroupWriter) -> None:
        self._writer = writer

    def __enter__(self) -> None:
        writer = self._writer
        with writer._expected_lock:
            writer._expected += 1

    def __exit__(self, *exc: object) -> None:
        writer = self._writer
        with writer._expected_lock:
            writer._expected -= 1


class GroupWriter:
    """One writer thread per process; ``store`` blocks until the rows are committed."""

    def __init__(
        self,
        insert: Insert,
        *,
        max_rows: int = 256,
        wait: float = 0.001,
        timeout: float = 2.0,
        on_stored: Callable[[], None] | None = None,
        writers: int = 1,
    ) -> None:
        self._insert = insert
        self._writers = max(1, writers)
        self._max_rows = max_rows
        self._wait = wait
        self._timeout = timeout
        self._on_stored = on_stored
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        self._closed = False
        # Requests of this process on their way to ``store`` (parsing, checking): while
        # there are none, waiting out the window would only delay the group.
        self._expected = 0
        self._expected_lock = threading.Lock()
        self._expecting = _Expecting(self)
        self.groups = 0  # commits made, and the rows they held: for the bench
        self.rows = 0

    def expecting(self) -> _Expecting:
        """A block around a request's work before ``store``: the writer may wait for it."""
        return self._expecting

    def store(self, rows: Sequence[dict[str, Any]]) -> list[bool]:
        """Commit ``rows`` with the next group: per row True if inserted, False if stored before.

        Raises the group's database error, or ``StorageTimeout`` after ``timeout`` seconds.
        """
        if not rows:
            return []
        if self._closed:
            raise StorageTimeout("the intake is stopping")
        self._ensure_thread()
        request = _Request(rows)
        self._queue.put(request)
        assert request.done is not None
        if not request.done.acquire(timeout=self._timeout):
            request.abandoned = True
            raise StorageTimeout(f"the database did not commit within {self._timeout:g} s")
        if request.error is not None:
            raise request.error
        return request.stored

    def store_soon(self, rows: Sequence[dict[str, Any]]) -> asyncio.Future[list[bool]]:
        """``store`` for a request served by the running asyncio loop: a future of the same
        result (or error, ``StorageTimeout`` after ``timeout`` seconds), resolved in the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bool]] = loop.create_future()
        if not rows:
            future.set_result([])
            return future
        if self._closed:
            future.set_exception(StorageTimeout("the intake is stopping"))
            return future
        self._ensure_thread()
        request = _Request(rows, future)
        request.timer = loop.call_later(self._timeout, self._give_up, request)
        self._queue.put(request)
        return future

    def _give_up(self, request: _Request) -> None:
        request.abandoned = True
        if request.future is not None and not request.future.done():
            request.future.set_exception(StorageTimeout(f"the database did not commit within {self._timeout:g} s"))

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the threads."""
        self._closed = True
        threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)  # one stop mark per writer
        for thread in threads:
            thread.join(timeout)

    def _ensure_thread(self) -> None:
        # Started on first use, in the process that serves: a server that forks its workers
        # after building the app gives each worker its own writers.
        threads = self._threads
        if threads and all(t.is_alive() for t in threads):
            return
        with self._start_lock:
            alive = [t for t in self._threads if t.is_alive()]
            while len(alive) < self._writers:
                thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
                thread.start()
                alive.append(thread)
            self._threads = alive

    def _take(self, first: _Request) -> tuple[list[_Request], bool]:
        """The group that starts with ``first``, and whether the stop mark was met.

        The queue is drained without blocking; if requests of the process are still on their
        way (``expecting``), the writer naps once for the rest of the ``wait`` window and
        drains again. A request queued meanwhile wakes nobody (a blocking ``get`` would be
        woken by each, a context switch per delivery; so would shorter naps), and when every
        request of the process is already in the group it is written at once.
        """
        group = [first]
        count = len(first.rows)
        deadline = time.monotonic() + self._wait
        while True:
            while count < self._max_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    return group, True
                group.append(item)
                count += len(item.rows)
            left = deadline - time.monotonic()
            if count >= self._max_rows or left <= 0 or self._expected <= 0:
                return group, False
            time.sleep(left)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group, stopping = self._take(first)
            self._write([r for r in group if not r.abandoned])

    def _write(self, group: list[_Request]) -> None:
        if not group:
            return
        # Twins within a group (the same delivery sent twice at once): the first is inserted,
        # the others are duplicates, as they would be one after the other.
        rows: list[dict[str, Any]] = []
        seen: set[Key] = set()
        for request in group:
            for row in request.rows:
                key = (row["crm"], row["dedup_key"])
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
        try:
            inserted = self._insert(rows)
        except Exception as exc:  # every request of the group answers 503
            log.warning("inbox group not stored rows=%d: %s", len(rows), type(exc).__name__)
            for request in group:
                request.error = exc
            self._settle(group)
            return
        self.groups += 1
        self.rows += len(rows)
        anything_new = bool(inserted)
        for request in group:
            stored = []
            for row in request.rows:
                key = (row["crm"], row["dedup_key"])
                stored.append(key in inserted)
                inserted.discard(key)  # a twin later in the group is a duplicate
            request.stored = stored
        self._settle(group)
        if self._on_stored is not None and anything_new:
            try:
                self._on_stored()
            except Exception:  # a wake-up hook must never fail the intake
                log.exception("inbox wake-up hook failed")

    @staticmethod
    def _settle(group: list[_Request]) -> None:
        """Release a group's requests: threads one by one, each loop's futures in one call."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
        for request in group:
            if request.future is None:
                request.settle()
            else:
                by_loop.setdefault(request.future.get_loop(), []).append(request)
        for loop, requests in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: its server stopped, nobody waits
                loop.call_soon_threadsafe(_settle_in_loop, requests)
