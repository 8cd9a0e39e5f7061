"""A client-side limiter that mirrors Pipedrive's burst rule: at most ``limit`` requests in any
rolling ``window`` seconds per token.

The server stamps a request when it *arrives*, which we cannot see: it lies somewhere between
our send and the response. So a request occupies the window, on our side, from the moment it
is sent until ``window`` seconds after its response arrived. With ``limit`` slots each holding
one request at a time (a slot is reused only once its previous request's occupancy has ended),
any ``window`` seconds of server arrivals contain at most one request per slot, whatever the
latency and however many threads share the client:

    a_next >= s_next >= r_prev + window >= a_prev + window

(``s`` sent, ``a`` arrived, ``r`` answered), so two requests of one slot never fall in the
same half-open window ``(a - window, a]``.

Other clients of the same token (another process, another integration) are invisible to that
count; the server's ``x-ratelimit-limit``/``x-ratelimit-remaining`` headers reveal them. Every
answer says how many requests the server counted at that request's arrival; whatever our own
requests cannot explain is foreign, and that many slots are held until those foreign requests
have surely left the server's window (``window`` after the answer). A 429 holds the whole
client until the server's reset.

Waits are computed once and booked before sleeping (like a leaky bucket's), so an injected
clock and sleep make the limiter deterministic to test.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

_IN_FLIGHT = math.inf  # a slot whose request has not been answered yet: its occupancy has no end yet


@dataclass(eq=False)
class Ticket:
    """One request's place in the window, from ``acquire`` to ``release``."""

    slot: int  # -1: no slot (the process is stopping and the call will not be sent)
    sent: float  # when the request may be (and, after the wait, is) sent
    previous: float  # the slot's free time before this booking, restored if the call is never sent
    answered: float | None = None
    waited: float = 0.0  # seconds ``acquire`` slept for it


class RollingWindow:
    """At most ``limit`` requests in any ``window`` seconds, counted rigorously (see the module).

    ``acquire`` books a slot and sleeps until it may be used; ``release`` is called when the
    answer arrives (or the call failed, or was never sent), with the answer's rate headers to
    learn of other clients of the token; ``hold`` stops every other caller for a while (a 429).
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stopping: threading.Event | None = None,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._stopping = stopping or threading.Event()
        self._cond = threading.Condition()
        self._free_at = [-math.inf] * limit  # per slot: when its last request's occupancy ends
        self._foreign = [False] * limit  # per slot: held for another client's requests, not ours
        self._cap = limit  # slots in use: lowered when the server states a lower x-ratelimit-limit
        self._records: collections.deque[Ticket] = collections.deque()  # our recent requests
        self._hold_until = -math.inf
        self._hold_owner: int | None = None
        self.waited = 0.0  # total seconds callers waited, for metrics and benchmarks
        self.foreign_seen = 0  # most foreign requests one answer revealed

    # --- the caller's side -------------------------------------------------------------------

    def acquire(self) -> Ticket:
        """Book a slot, wait until it may be used, and return its ticket.

        Blocks on a condition only when every slot holds an unanswered request; otherwise
        sleeps once, for the booked time (zero when a slot is free now).
        """
        me = threading.get_ident()
        with self._cond:
            while True:
                free = [i for i in range(self._cap) if self._free_at[i] != _IN_FLIGHT]
                if free or self._stopping.is_set():
                    break
                # All `limit` requests are in flight: the next slot frees only when one answers.
                self._cond.wait(0.5)
            now = self._clock()
            if not free:  # stopping with every slot in flight: the caller will not send
                return Ticket(-1, now, now)
            slot = min(free, key=lambda i: self._free_at[i])
            start = max(now, self._free_at[slot])
            if self._hold_owner == me:
                # The refused caller's retry already waited the hold (RetryPolicy honours
                # retry-after); exempt once, so that waiting is not counted twice.
                self._hold_owner = None
            else:
                start = max(start, self._hold_until)
            ticket = Ticket(slot, start, self._free_at[slot], waited=start - now)
            self._free_at[slot] = _IN_FLIGHT
            self._foreign[slot] = False
            self._records.append(ticket)
            wait = start - now
            self.waited += wait
        if wait > 0:
            self._sleep(wait)
        return ticket

    def release(self, ticket: Ticket, *, sent: bool = True, headers: Mapping[str, str] | None = None) -> None:
        """The request was answered (or failed) now: its slot frees ``window`` from now.

        ``headers``: the answer's, to learn of other clients of the token (``_observe``).
        ``sent=False``: it never left (the process is stopping), so the slot is as it was.
        """
        if ticket.slot < 0:
            return
        with self._cond:
            if not sent:
                self._free_at[ticket.slot] = ticket.previous
                self._records.remove(ticket)
            else:
                # A failed call without an answer may have arrived until now: same rule.
                ticket.answered = max(self._clock(), ticket.sent)
                self._free_at[ticket.slot] = ticket.answered + self.window
                if headers is not None:
                    self._observe(ticket, headers)  # before pruning: it counts our recent requests
            self._prune()
            self._cond.notify_all()

    def _observe(self, ticket: Ticket, headers: Mapping[str, str]) -> None:
        """Read the server's count from an answer's rate headers (under the lock).

        ``limit - remaining`` requests were in the server's window when this request arrived.
        Our own requests that may have been among them were sent before this answer and
        answered (if at all) after ``window`` before this request was sent; the rest belong to
        another client of the token, and that many slots are held until ``window`` after this
        answer (by then those requests, which arrived before it, have left the server's window).
        """
        limit = _int_header(headers, "x-ratelimit-limit")
        remaining = _int_header(headers, "x-ratelimit-remaining")
        if remaining is None or ticket.answered is None:
            return
        if limit is not None and 1 <= limit < self._cap:
            log.warning(
                "pipedrive burst limit is %d per window, not the configured %d: using %d", limit, self._cap, limit
            )
            self._cap = limit
        counted = (limit if limit is not None else self.limit) - remaining
        ours = sum(
            1
            for t in self._records
            if t.sent <= ticket.answered and (t.answered is None or t.answered > ticket.sent - self.window)
        )
        foreign = counted - ours
        if foreign <= 0:
            return
        self.foreign_seen = max(self.foreign_seen, foreign)
        until = ticket.answered + self.window
        # Foreign requests an earlier answer revealed may be the same ones: hold max, not sum.
        held = sorted(
            (i for i in range(self._cap) if self._foreign[i] and self._free_at[i] != _IN_FLIGHT),
            key=lambda i: self._free_at[i],
            reverse=True,
        )
        others = sorted(
            (i for i in range(self._cap) if not self._foreign[i] and self._free_at[i] != _IN_FLIGHT),
            key=lambda i: self._free_at[i],
        )
        for slot in (held + others)[:foreign]:
            self._free_at[slot] = max(self._free_at[slot], until)
            self._foreign[slot] = True

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds``: the server refused us. The calling thread's next call
        is exempt, as its retry already waits at least as long."""
        with self._cond:
            until = self._clock() + seconds
            if until > self._hold_until:
                self._hold_until = until
                self._hold_owner = threading.get_ident()

    def in_window(self, at: float | None = None) -> int:
        """Slots occupied at ``at`` (now): in flight, booked, or within ``window`` of an answer."""
        moment = self._clock() if at is None else at
        with self._cond:
            return sum(1 for i in range(self._cap) if self._free_at[i] > moment)

    # --- internals -----------------------------------------------------------------------------

    def _prune(self) -> None:
        """Forget our answered requests no later reading can count (see ``observe``)."""
        now = self._clock()
        pending = [t.sent for t in self._records if t.answered is None]
        horizon = min([now, *pending]) - self.window
        kept = [t for t in self._records if t.answered is None or t.answered > horizon]
        if len(kept) != len(self._records):
            self._records = collections.deque(kept)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(float(raw))
    except ValueError:
        return None
