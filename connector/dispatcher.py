"""The dispatcher: carries out outbox rows so that each has its effect once.

Each try first commits "sending" (so a crash is visible), then calls the CRM, then commits
"done". A row found "sending" or with earlier attempts may already have taken effect: the
dispatcher looks for its own earlier write by the marker before writing again. A
retriable failure is rescheduled with exponential backoff; past the limit, or on a fatal
error, the row becomes a dead letter that ``connector replay`` can resend.

A claimed batch is carried out in ``concurrency`` lanes: the rows of one deal stay in one
lane, in the order the rules wrote them, while different deals' writes overlap, so one slow
or retried CRM call does not hold up every other deal. The CRM client's throttle is shared
by the lanes, so they never exceed the CRM's rate together.

A CRM with a batch API (``CommandSink.batch_limit`` > 1) gets its rows in batched calls
instead: the n-th row of every deal goes in one wave, each wave in calls of up to
``batch_limit`` rows of different deals (a deal's next row waits for the wave before), several
calls of a wave in flight at once. Each row still has its effect once: all rows of a wave are
committed "sending" in one transaction before its first call; each row's own answer decides
it (done, retry, dead letter); a call whose answer was lost leaves every row in it ambiguous,
and each is looked for by its marker (in batched look-ups) before it is written again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import datetime, timedelta

from adapters.contracts import Channel, CommandSink, CrmAdapter, WriteResult
from connector.config import Config
from connector.metrics import WRITES
from connector.observability import correlation
from connector.storage.models import OutboxRow
from connector.storage.outbox import command_of
from connector.storage.store import Store
from domain import OutboxStatus, marker_for
from domain.clock import utcnow
from domain.errors import AdapterError, AmbiguousWriteError, FatalError, RateLimited

log = logging.getLogger(__name__)
OUTBOX_LOCK = 727102  # first key of the per-row advisory locks (the second is the row id)


class Dispatcher:
    """Drains the outbox; call ``tick`` on a schedule."""

    def __init__(
        self,
        config: Config,
        store: Store,
        adapters: Mapping[str, CrmAdapter],
        *,
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
        after_call: Callable[[OutboxRow, WriteResult], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.adapters = adapters
        self.clock = clock
        self.owner = owner or f"dispatcher-{os.getpid()}"
        # A test hook: runs between the CRM call and the commit that records it.
        self.after_call = after_call
        lanes = config.dispatcher["concurrency"]
        url = store.engine.url
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            lanes = 1  # each thread would see its own empty in-memory database
        self._pool = ThreadPoolExecutor(lanes, thread_name_prefix="dispatch") if lanes > 1 else None
        # Batched calls of one wave (rows of different deals) overlap too: one call's database
        # work runs while another waits for the CRM. A pool of its own, as its jobs start from
        # inside the lanes' pool.
        self._batch_pool = ThreadPoolExecutor(lanes, thread_name_prefix="dispatch-batch") if lanes > 1 else None

    def tick(self) -> int:
        """Carry out one batch of due rows; returns how many reached done."""
        cfg = self.config.dispatcher
        now = self.clock()
        rows = self.store.outbox.claim(now, timedelta(seconds=cfg["lease"]), cfg["batch"], self.owner)
        jobs: list[Callable[[], int]] = []
        batched: dict[str, list[list[OutboxRow]]] = {}
        for lane in by_deal(rows):
            adapter = self.adapters.get(lane[0].crm)
            if isinstance(adapter, CommandSink) and adapter.batch_limit > 1:
                batched.setdefault(lane[0].crm, []).append(lane)
            else:
                jobs.append(functools.partial(self._lane, lane))
        for crm, lanes in batched.items():
            sink = self.adapters[crm]
            assert isinstance(sink, CommandSink)
            jobs.append(functools.partial(self._batched, sink, lanes))
        if self._pool is None or len(jobs) < 2:
            return sum(job() for job in jobs)
        return sum(self._pool.map(_run, jobs))

    def close(self) -> None:
        """Let running lanes finish and free their threads."""
        for pool in (self._pool, self._batch_pool):
            if pool is not None:
                pool.shutdown(wait=True)

    def _lane(self, rows: Sequence[OutboxRow]) -> int:
        return sum(1 for row in rows if self.dispatch(row))

    def dispatch(self, row: OutboxRow) -> bool:
        """Carry out one claimed row; True when it is done."""
        with correlation(row.correlation_id):
            done = self._dispatch(row)
        WRITES.labels(row.crm, row.command, "done" if done else "not_done").inc()
        return done

    def _dispatch(self, row: OutboxRow) -> bool:
        # A batch is worked through one row at a time, so a later row's lease may lapse and
        # another dispatcher claim it too: only the holder of the row's lock writes, and it
        # works from the row as it is now, not as it was when the batch was claimed.
        with self._exclusive(row.id) as mine:
            if not mine:
                return False
            fresh = self._reload(row)
            if fresh is None:
                return False
            return self._carry_out(fresh)

    @contextlib.contextmanager
    def _exclusive(self, row_id: int) -> Iterator[bool]:
        """On PostgreSQL, a session advisory lock per outbox row for the length of the
        dispatch; it goes with the connection if this process dies. SQLite has one
        dispatching process, so nothing to exclude."""
        if self.store.engine.dialect.name != "postgresql":
            yield True
            return
        with self.store.engine.connect() as conn:
            got = bool(
                conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({OUTBOX_LOCK}, {row_id % 2_147_483_647})").scalar()
            )
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({OUTBOX_LOCK}, {row_id % 2_147_483_647})")
                    conn.commit()

    # --- batched calls ----------------------------------------------------------------

    def _batched(self, sink: CommandSink, lanes: Sequence[Sequence[OutboxRow]]) -> int:
        """Carry out one CRM's rows in waves (the n-th row of each deal), each wave in calls of
        up to ``batch_limit`` rows."""
        done = 0
        for depth in range(max((len(lane) for lane in lanes), default=0)):
            done += self._dispatch_wave(sink, [lane[depth] for lane in lanes if len(lane) > depth])
        return done

    def _dispatch_wave(self, sink: CommandSink, claimed: Sequence[OutboxRow]) -> int:
        """Carry out claimed rows of different deals in batched calls of up to ``batch_limit``
        rows, several calls in flight at once; how many rows are done.

        The whole wave is committed "sending" in one transaction before its first call (each
        row is "sending" before it can reach the CRM, as exactly-once needs), and the rows of
        the calls that answered are committed "done" together while later calls are still out,
        so a single-writer database (SQLite) does not become the bound instead of the CRM.
        """
        # A call for one row logs under its correlation; a call for many, under none of them
        # (each row's "dispatched" line carries its own).
        alone = correlation(claimed[0].correlation_id) if len(claimed) == 1 else contextlib.nullcontext()
        with alone, self._exclusive_many([row.id for row in claimed]) as mine:
            # Rows never tried are committed "sending" right away; rows with earlier tries may
            # have reached the CRM before their answer (or we) died, and are looked for first.
            ready, tried = self.store.outbox.begin_batch(
                [r.id for r in claimed if r.id in mine], self.owner, self.clock()
            )
            rows = ready + tried
            settle = timedelta(seconds=self.config.dispatcher["reconcile_after"])
            finished: list[tuple[OutboxRow, WriteResult]] = []
            suspects: list[OutboxRow] = []
            for row in tried:
                if row.status == OutboxStatus.SENDING and row.updated_at + settle > self.clock():
                    self._postpone(row, row.updated_at + settle)  # an earlier try may still be landing
                else:
                    suspects.append(row)
            if suspects:
                found = sink.find_written_many([(command_of(r), marker_for(r.idempotency_key)) for r in suspects])
                again: list[OutboxRow] = []
                for row, hit in zip(suspects, found, strict=True):
                    if isinstance(hit, AdapterError):
                        self._failed(row, hit)
                    elif hit is not None:
                        finished.append((row, hit))
                    else:
                        again.append(row)
                if again:
                    self.store.outbox.mark_sending_many(again, self.clock())
                ready += again
            self._done_many(finished)
            done_ids = {row.id for row, _ in finished}
            calls = [ready[start : start + sink.batch_limit] for start in range(0, len(ready), sink.batch_limit)]
            for answered in self._answers(sink, calls):
                finished = []
                for call, outcomes in answered:
                    for row, outcome in zip(call, outcomes, strict=True):
                        if isinstance(outcome, AdapterError):
                            self._failed(row, outcome)
                        else:
                            if self.after_call is not None:
                                self.after_call(row, outcome)
                            finished.append((row, outcome))
                self._done_many(finished)
                done_ids.update(row.id for row, _ in finished)
            for row in rows:
                WRITES.labels(row.crm, row.command, "done" if row.id in done_ids else "not_done").inc()
            return len(done_ids)

    def _answers(
        self, sink: CommandSink, calls: Sequence[Sequence[OutboxRow]]
    ) -> Iterator[list[tuple[Sequence[OutboxRow], list[WriteResult | AdapterError]]]]:
        """The outcomes of ``calls``, sent through the batch pool (as many in flight as it has
        threads; the CRM client's throttle, shared, keeps them under the rate limit together),
        handed back in groups: every call that answered since the last group was taken, so
        one commit records them all."""

        def send(call: Sequence[OutboxRow]) -> list[WriteResult | AdapterError]:
            return sink.execute_many([(command_of(r), marker_for(r.idempotency_key)) for r in call])

        if self._batch_pool is None or len(calls) < 2:
            for call in calls:
                yield [(call, send(call))]
            return
        pending = {self._batch_pool.submit(send, call): call for call in calls}
        try:
            while pending:
                ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                yield [(pending.pop(future), future.result()) for future in ready]
        finally:
            for future in pending:
                future.cancel()
            wait(pending)  # a call already out is let finish: its rows stay "sending", looked for later

    @contextlib.contextmanager
    def _exclusive_many(self, row_ids: Sequence[int]) -> Iterator[set[int]]:
        """``_exclusive`` for the rows of one batched call: the ids whose locks this took."""
        if self.store.engine.dialect.name != "postgresql" or not row_ids:
            yield set(row_ids)
            return
        keys = ",".join(str(int(i) % 2_147_483_647) for i in row_ids)
        with self.store.engine.connect() as conn:
            got = {
                int(k)
                for (k,) in conn.exec_driver_sql(
                    f"SELECT k FROM unnest(ARRAY[{keys}]::int[]) AS k WHERE pg_try_advisory_lock({OUTBOX_LOCK}, k)"
                )
            }
            conn.commit()
            try:
                yield {i for i in row_ids if int(i) % 2_147_483_647 in got}
            finally:
                if got:
                    locked = ",".join(str(k) for k in got)
                    conn.exec_driver_sql(
                        f"SELECT pg_advisory_unlock({OUTBOX_LOCK}, k) FROM unnest(ARRAY[{locked}]::int[]) AS k"
                    )
                    conn.commit()

    def _done_many(self, finished: Sequence[tuple[OutboxRow, WriteResult]]) -> None:
        if not finished:
            return
        self.store.outbox.mark_done_many(
            [(row, result.remote_id, result.reconciled) for row, result in finished], self.clock()
        )
        for row, result in finished:
            with correlation(row.correlation_id):
                _log_dispatched(row, result)

    def _reload(self, row: OutboxRow) -> OutboxRow | None:
        """The row as stored now, if it is still this dispatcher's to carry out."""
        return self.store.outbox.reload(row.id, self.owner)

    def _carry_out(self, row: OutboxRow) -> bool:
        adapter = self.adapters.get(row.crm)
        if not isinstance(adapter, CommandSink):
            problem = "is configured" if adapter is None else "that carries out writes is configured"
            self._failed(row, FatalError(f"no CRM named {row.crm!r} {problem}"))
            return False
        command = command_of(row)
        marker = marker_for(row.idempotency_key)
        settle = timedelta(seconds=self.config.dispatcher["reconcile_after"])
        if row.status == OutboxStatus.SENDING and row.updated_at + settle > self.clock():
            # A try that was under way when its process died may still be landing in the CRM:
            # look for it only once it has surely finished.
            self._postpone(row, row.updated_at + settle)
            return False
        try:
            if row.status == OutboxStatus.SENDING or row.attempts > 0:
                # An earlier try may have reached the CRM before its answer (or we) died.
                found = adapter.find_written(command, marker)
                if found is not None:
                    self._done(row, found)
                    return True
            answer_lost = row.status == OutboxStatus.SENDING
            self._mark_sending(row)
            if answer_lost and isinstance(adapter, Channel):
                result = adapter.after_lost_answer(command, marker)  # a chat cannot be searched
            else:
                result = adapter.execute(command, marker)
        except AdapterError as exc:
            self._failed(row, exc)
            return False
        if self.after_call is not None:
            self.after_call(row, result)
        self._done(row, result)
        return True

    def _postpone(self, row: OutboxRow, until: datetime) -> None:
        self.store.outbox.postpone(row, until)

    def _mark_sending(self, row: OutboxRow) -> None:
        self.store.outbox.mark_sending(row, self.clock())

    def _done(self, row: OutboxRow, result: WriteResult) -> None:
        self.store.outbox.mark_done(row, remote_id=result.remote_id, reconciled=result.reconciled, now=self.clock())
        _log_dispatched(row, result)

    def _failed(self, row: OutboxRow, exc: AdapterError) -> None:
        cfg = self.config.dispatcher

        def retry_in(attempts: int) -> float:
            delay = min(cfg["backoff_max"], cfg["backoff"] * 2 ** max(0, attempts - 1))
            if isinstance(exc, RateLimited) and exc.retry_after:
                delay = max(delay, exc.retry_after)
            if isinstance(exc, AmbiguousWriteError):
                # The CRM may still be carrying out the request we gave up on: look for its
                # result only once it has surely finished, or we would write twice.
                delay = max(delay, cfg["reconcile_after"])
            return float(delay)

        self.store.outbox.mark_failed(
            row,
            str(exc),
            # An ambiguous write stays "sending": the next try reconciles first, and late.
            may_have_landed=isinstance(exc, AmbiguousWriteError),
            fatal=isinstance(exc, FatalError),
            max_attempts=cfg["max_attempts"],
            retry_in=retry_in,
            now=self.clock(),
        )
        log.warning(
            "dispatch failed crm=%s outbox=%s command=%s attempts=%s error=%s correlation=%s",
            row.crm,
            row.id,
            row.command,
            row.attempts,
            exc,
            row.correlation_id,
        )


def _run(job: Callable[[], int]) -> int:
    return job()


def by_deal(rows: Sequence[OutboxRow]) -> list[list[OutboxRow]]:
    """The rows grouped by (CRM, deal), each group in claim (id) order, groups by first row."""
    lanes: dict[tuple[str, str | None], list[OutboxRow]] = {}
    for row in rows:
        lanes.setdefault((row.crm, row.deal_id), []).append(row)
    return list(lanes.values())


def _log_dispatched(row: OutboxRow, result: WriteResult) -> None:
    log.info(
        "dispatched crm=%s deal=%s outbox=%s command=%s remote_id=%s reconciled=%s correlation=%s",
        row.crm,
        row.deal_id,
        row.id,
        row.command,
        result.remote_id,
        result.reconciled,
        row.correlation_id,
    )
