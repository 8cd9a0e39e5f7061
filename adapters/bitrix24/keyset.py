"""Reading deals in ``DATE_MODIFY`` order by key, many pages per ``batch`` request.

Offsets are unsafe while deals change (an edited deal moves to the end of the order and
every later offset shifts, skipping a deal for good), so each page starts after the last
deal read: the rest of its second by ID (``=DATE_MODIFY m`` + ``>ID id``), then later
seconds (``>DATE_MODIFY m``). A ``crm.deal.list`` filter is a conjunction (we rely on no
documented OR), so which of the two comes next depends on the page before; inside one ``batch`` a page can only refer
to an earlier page's rows (``$result[key][49][ID]``, documented for ``batch``). The reader
therefore plans each batch from what it knows and checks every page's premise when the
answers come back, using the pages in order up to the first whose premise failed; the
rest are discarded (their units are spent, their rows never used). The plans:

* a second whose remaining size is known (counted once, below): exactly enough
  ``=DATE_MODIFY`` pages chained by ID to finish it (the last one short, which proves the
  second is done), then ``>DATE_MODIFY m`` for the next seconds;
* a crowded second of unknown size (the last page read ended among many deals of one
  second): one page asking for a count (``start=0``: ``total`` of the rest of that second
  only, a small indexed range, not the whole selection); but a read bounded by a later
  range's start, after finishing a crowded second, reads the next one on in the same batch
  (pages of the second the opening page ends in, each naming it by that page's row 49);
* otherwise (deals spread over many seconds): ``>=DATE_MODIFY`` of the previous page's last
  row, chained; the few rows of that second already read come again and are skipped. A page
  that brings nothing new (a second of 50 or more deals) stops the chain: the next batch
  counts that second instead.

The first page of a read asks for ``total`` (once per read, not per page: a poll's
``>=DATE_MODIFY since`` is a small range; a full read counts the table once), and no more
pages are planned than it says remain, so a read's end costs no pages past it. Every other
page is ``start=-1`` (no count) except the counting ones above. The order is the same for
every page (``DATE_MODIFY``, ``ID``), which is also the order rows are yielded in, each once.

A request whose pages leave the cursor where it was (a portal ignoring the filter) would be
planned again the same forever: the reader raises ``PagingLoop`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from adapters.bitrix24.client import PAGE_SIZE, Bitrix24Client
from adapters.bitrix24.mapping import DEAL_SELECT
from adapters.paging import KeysetPaginator
from domain.errors import AdapterError

ORDER = {"DATE_MODIFY": "ASC", "ID": "ASC"}
# A second with this many deals read already is counted before its rest is planned: a
# ``>=DATE_MODIFY`` page would bring back that many old rows for every page of new ones.
CROWDED = PAGE_SIZE // 2

Answer = tuple[list[dict[str, Any]], int | None, AdapterError | None]
Key = tuple[str, int]  # (DATE_MODIFY, ID): the order of a read


@dataclass(frozen=True)
class Step:
    """One planned page: ``kind`` is ``all`` (the first page of a full read), ``same`` (the rest
    of the cursor's second, by ID), ``after`` (seconds after the cursor's, a literal one) or
    ``from`` (from the cursor's second on, skipping rows read). ``chained`` pages take their
    start from row 49 of the page before them in the batch."""

    key: str
    kind: str
    chained: bool = False
    count: bool = False
    # The page at this offset of the selection (a range's first page, placed by offset).
    offset: int | None = None
    # For a chained ``same`` page: the page whose row 49 names the second ("" for the cursor's
    # own), rather than the page before. A page after a short one then still names the second
    # (its ``>ID`` reference is left unresolved: a wasted page of that second, not a scan).
    pin: str | None = None

    def params(self, moment: str | None, after_id: int, prev: str | None, until: Key | None = None) -> dict[str, Any]:
        """The ``crm.deal.list`` parameters, with ``$result`` references when chained; with
        ``until``, no page reaches past that key's second (nor, in that second, its ID)."""
        ref_moment = f"$result[{prev}][{PAGE_SIZE - 1}][DATE_MODIFY]" if self.chained else moment
        if self.pin is not None:
            ref_moment = f"$result[{self.pin}][{PAGE_SIZE - 1}][DATE_MODIFY]" if self.pin else moment
        ref_id: Any = f"$result[{prev}][{PAGE_SIZE - 1}][ID]" if self.chained else after_id
        flt: dict[str, Any]
        if self.kind == "all":
            flt = {}
        elif self.kind == "same":
            flt = {"=DATE_MODIFY": ref_moment, ">ID": ref_id}
        elif self.kind == "after":
            flt = {">DATE_MODIFY": moment if self.pin is None else ref_moment}
        else:
            flt = {">=DATE_MODIFY": ref_moment}
        if until is not None:
            if self.kind == "same" and moment == until[0]:
                flt["<ID"] = until[1]
            elif self.kind != "same":
                flt["<=DATE_MODIFY"] = until[0]
        # start=-1: the portal skips counting the whole selection (its "fast export" mode).
        start = self.offset if self.offset is not None else 0 if self.count else -1
        return {"filter": flt, "order": ORDER, "select": DEAL_SELECT, "start": start}


class DealReader(KeysetPaginator):
    """The cursor of one ``DATE_MODIFY``-ordered read and the planning of its next requests."""

    def __init__(self, since: str | None, *, crm: str = "", until: Key | None = None) -> None:
        super().__init__(crm=crm, method="crm.deal.list")
        self.until = until  # the read stops before this key (a later range's start); None: the end
        self.moment = since  # DATE_MODIFY of the last deal read (or ``since``); None: nothing yet
        self.after_id = 0  # within ``moment``, deals up to this ID are read
        self.in_second = 0  # deals read within ``moment``
        self.rest: int | None = None  # deals known left in ``moment`` after ``after_id``; 0: done
        self.left: int | None = None  # deals left after the cursor, by the first page's count
        self.crowded = False  # the last second finished was crowded: the next one likely is too
        self.last_row: dict[str, Any] | None = None  # the last row read

    @property
    def position(self) -> tuple[str | None, int, int, int | None, bool]:
        """The cursor and what the next plan depends on (but the count of deals left, which
        every row read lowers, repeated or not)."""
        return self.moment, self.after_id, self.in_second, self.rest, self.crowded

    def read(self, client: Bitrix24Client) -> Iterator[dict[str, Any]]:
        """Every deal row of the read, in order, each once: one plain call for a single page,
        else the planned pages in one ``batch``."""
        while not self.finished:
            yield from self.step(client)

    def step(self, client: Bitrix24Client) -> list[dict[str, Any]]:
        """One request of the read: its new rows, in order."""
        return self.take(client, self.plan(client.batch_size))

    def take(self, client: Bitrix24Client, steps: list[Step]) -> list[dict[str, Any]]:
        """Send ``steps`` (one request) and read their new rows, in order."""
        before = self.position
        commands = self.commands(steps)
        answers: dict[str, Answer]
        if len(steps) == 1:  # one page: a plain call, no batch envelope
            key, (method, params) = next(iter(commands.items()))
            body = client.call_full(method, params)
            answers = {key: (list(body["result"] or []), body.get("total"), None)}
        else:
            batch = client.batch(commands)
            answers = {
                key: (list(batch.result.get(key) or []), batch.total.get(key), batch.errors.get(key))
                for key in commands
            }
        rows = list(self.consume(steps, answers))
        if rows or self.last_row is not None:
            self.check_moved(before)
        return rows

    # --- planning ---------------------------------------------------------------------

    def plan(self, size: int) -> list[Step]:
        """The next request's pages, at most ``size`` (one page: send it as a plain call).

        No more pages are planned than the count says remain (plus the short one that proves
        the end), so the end of a read wastes no units on pages past it.
        """
        if self.left is None and self.in_second == 0:
            # The first page counts the selection once (a poll's is a small range).
            return [Step("c0", "all" if self.moment is None else "from", count=True)]
        if self.rest is None and self.in_second >= CROWDED:
            return [Step("c0", "same", count=True)]
        steps: list[Step] = []
        later = self.left if self.left is not None else 0
        if self.rest:
            rest = self.rest
            if self.until is not None and self.left is not None:
                # A second's count runs past the range's end: plan no pages past the end (a
                # page chained on an empty one names no row and is wasted on the portal).
                rest = min(rest, self.left)
            pages = rest // PAGE_SIZE + 1  # the last one short: the proof that the second is done
            steps += [Step(f"c{i}", "same", chained=i > 0) for i in range(min(size, pages))]
            if len(steps) == size or len(steps) < pages:
                return steps
        if self.rest is not None:
            later -= self.rest
            steps.append(Step(f"c{len(steps)}", "after"))
        else:
            steps.append(Step("c0", "from"))
        budget = max(0, later) // PAGE_SIZE + 1
        # A second known to be crowded (counted, or read) is likely followed by crowded ones.
        crowded = self.crowded or (self.rest is not None and self.in_second + self.rest >= CROWDED)
        opener = steps[-1].key  # the page that opens the seconds after the cursor's
        # A bounded read (a range's rest, up to the next range's start) after a crowded second
        # reads on in this batch: the second the opening page ends in, its pages pinned to that
        # page (if the second ends first, the pages after are wasted, not read).
        read_on = crowded and self.until is not None and self.rest is not None
        while len(steps) < size and budget > 1:
            budget -= 1
            if read_on:
                key = f"c{len(steps)}"
                steps.append(Step(key, "same", chained=True, count=steps[-1].key == opener, pin=opener))
                continue
            if crowded:
                # After a crowded second the next is likely crowded too: count it in this batch.
                steps.append(Step(f"c{len(steps)}", "same", chained=True, count=True))
                break
            steps.append(Step(f"c{len(steps)}", "from", chained=True))
        return steps

    def commands(self, steps: list[Step]) -> dict[str, tuple[str, dict[str, Any]]]:
        """The batch commands for ``steps``, each chained one referring to the page before it."""
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        prev: str | None = None
        for step in steps:
            out[step.key] = ("crm.deal.list", step.params(self.moment, self.after_id, prev, self.until))
            prev = step.key
        return out

    # --- reading the answers ----------------------------------------------------------

    def consume(self, steps: list[Step], answers: Mapping[str, Answer]) -> Iterator[dict[str, Any]]:
        """Yield the new rows of ``steps`` in order, moving the cursor, up to the first page
        whose premise failed (the later ones started from the wrong place: never used)."""
        prev_full = True  # the page before had 50 rows and the cursor stands on its last
        for step in steps:
            if step.chained and not prev_full:
                return
            if step.kind == "after" and self.rest != 0:
                return  # the second before is not proven done: later seconds would skip its rest
            rows, total, error = answers[step.key]
            if error is not None:
                raise error
            prev_full = len(rows) == PAGE_SIZE
            ours = self._before_until(rows)
            if len(ours) < len(rows):
                # The page reached the next range's start: this range is read to its end.
                yield from (
                    self._take_same(ours, None)
                    if step.kind == "same"
                    else self._take_later([r for r in ours if not self._read(r)])
                )
                self.finished = True
                return
            if step.kind == "same":
                yield from self._take_same(rows, total if step.count else None)
                continue
            fresh = [r for r in rows if not self._read(r)] if step.kind == "from" else rows
            if step.count and total is not None:
                self.left = int(total) - (len(rows) - len(fresh))
            if prev_full and not fresh:
                self.crowded = True  # 50 rows of one second, all read: count it next
                self.rest = None
                return
            yield from self._take_later(fresh)
            if len(rows) < PAGE_SIZE:
                self.finished = True
                return

    def _take_same(self, rows: list[dict[str, Any]], total: int | None) -> Iterator[dict[str, Any]]:
        for raw in rows:
            self.last_row = raw
            self.after_id = int(raw["ID"])
            self.in_second += 1
            self._count_one()
            yield raw
        if total is not None:
            self.rest = max(0, int(total) - len(rows))
        elif self.rest is not None:
            self.rest = max(0, self.rest - len(rows))
        if len(rows) < PAGE_SIZE:
            self.rest = 0  # a short page: nothing is left in this second
            self.crowded = self.in_second >= CROWDED
            if self.until is not None and self.moment == self.until[0]:
                self.finished = True  # the rest of the range's last second was all it had left
        elif self.rest == 0:
            self.rest = None  # counted done, but the page was full: not proven, look again

    def _take_later(self, rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for raw in rows:
            moment = str(raw["DATE_MODIFY"])
            if moment != self.moment:
                self.moment, self.in_second = moment, 0
            self.after_id = int(raw["ID"])
            self.in_second += 1
            self.rest = None
            self.last_row = raw
            self._count_one()
            yield raw

    def _before_until(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.until is None:
            return rows
        return [r for r in rows if key_of(r) < self.until]

    def _count_one(self) -> None:
        if self.left is not None:
            self.left -= 1

    def _read(self, raw: Mapping[str, Any]) -> bool:
        # Rows of a ``>=DATE_MODIFY`` page up to the cursor: the cursor's second, ID not past it.
        return str(raw["DATE_MODIFY"]) == self.moment and int(raw["ID"]) <= self.after_id


def key_of(raw: Mapping[str, Any]) -> Key:
    """A row's place in the read's order."""
    return str(raw["DATE_MODIFY"]), int(raw["ID"])


# Rows between the starts of two ranges of a concurrent read. A range is read by one batch of
# 50 pages: 2,500 rows from its start, past the next range's start, so that the two meet.
STRIDE = (PAGE_SIZE - 1) * PAGE_SIZE
MAX_RANGES = 25  # ranges placed at once; a longer read's last range reads on to its end


def read_deals(client: Bitrix24Client, since: str | None, *, crm: str = "") -> Iterator[dict[str, Any]]:
    """Every deal row changed since ``since`` (all when None), in (DATE_MODIFY, ID) order, each
    once, with several requests in flight when the read is long.

    The first page counts the read. A read longer than two ranges is split: the next request
    of each range goes out together, each one ``batch``: the first range's keyset pages on
    from the first page, and for every later range the page at its offset (every ``STRIDE``-th
    row: an offset only places where a range starts) followed by keyset pages chained on it,
    50 pages in all, which run past the next range's start. Which keyset pages are chained is
    guessed from the first page: the rest of a crowded second by ID when its last second held
    half a page or more, else ``>=DATE_MODIFY`` pages. A page whose premise fails ends its
    range's batch there (see ``DealReader.consume``).

    The ranges are joined in order, by key, as their batches come in (``_join``): a range
    yields its rows after the last row already yielded; where the rows read stop short of the
    next range's first row (a chain cut short by a second's end or a wrong guess, or offsets
    shifted by deals that changed during the read), the reader holding the last row reads on
    by key up to that row. The last range reads on to the end. So the rows come in order,
    each once: two round trips when the guess holds and nothing moved, more where it did not.

    Why this is still exact while deals change: every row yielded was read by a keyset read
    that leaves no gap, and the rows between two ranges are either read by the first (it ran
    past the second's first row) or read by key up to that row; an offset only chose where a
    range begins. A deal that changes moves past every range's start into the last range,
    whose reader follows it as a single keyset read does. A deal that changes after the last
    range ended but before an earlier range reached its old place is missed by this read; its
    new DATE_MODIFY is later than any this read yielded, so the next poll (from the newest
    change minus the overlap) reads it, as it would a change made just after a read in one
    chain.
    """
    head = DealReader(since, crm=crm)
    yield from head.step(client)
    left = head.left
    if head.finished or left is None or left <= 2 * STRIDE or client.read_concurrency < 2:
        yield from head.read(client)
        return
    total = left + PAGE_SIZE  # rows from the head page's start; ranges start at offsets of it
    crowded = head.in_second >= CROWDED
    starts = list(range(PAGE_SIZE + STRIDE, total, STRIDE))[: MAX_RANGES - 1]
    ranges: list[tuple[DealReader, list[Step]]] = [(head, _chain(head, crowded, PAGE_SIZE, None))]
    for j, start in enumerate(starts):
        reader = DealReader(since, crm=crm)
        end = starts[j + 1] if j + 1 < len(starts) else None
        # Rows from this start to the next range's (and a page more), or to the end.
        reader.left = (end - start + PAGE_SIZE) if end is not None else total - start
        ranges.append((reader, _chain(reader, crowded, reader.left // PAGE_SIZE + 1, start, last=end is None)))
    head.left = STRIDE + PAGE_SIZE

    def first(item: tuple[DealReader, list[Step]]) -> list[dict[str, Any]]:
        reader, steps = item
        return reader.take(client, steps)

    yield from _join(client, zip((reader for reader, _ in ranges), client.in_order(first, ranges), strict=True))


def _join(
    client: Bitrix24Client, ranges: Iterator[tuple[DealReader, list[dict[str, Any]]]]
) -> Iterator[dict[str, Any]]:
    """The ranges' rows in order as their batches come in, each range's after the last row
    before it; where the rows read stop short of the next range's first row, the reader of the
    last row reads on by key up to it (the last range's: to the end) before that range's rows.
    A range's rows go out once the next range's first row is known, so they are mapped while
    later ranges are still being read; a range's error comes after the rows before it."""
    last: Key | None = None
    holder: DealReader | None = None  # the reader of the last row so far: it reads on from there
    pending: list[dict[str, Any]] = []  # the rows of the range before, not yet given out
    while True:
        try:
            item = next(ranges, None)
        except Exception:
            yield from pending  # they join up with every row before them
            raise
        if item is None:
            break
        reader, rows = item
        if holder is not None and not rows:
            continue  # past the end (the read shrank since the first page counted it)
        yield from pending
        if holder is not None and last is not None and not holder.finished and last < key_of(rows[0]):
            # The rows so far stop short of this range's first row: read on by key up to it.
            holder.until = key_of(rows[0])
            yield from holder.read(client)
        if last is not None:
            rows = [r for r in rows if key_of(r) > last]
        if rows or holder is None:
            holder = reader
            last = key_of(rows[-1]) if rows else last
        pending = rows
    yield from pending
    if holder is not None and not holder.finished:
        holder.until = None
        yield from holder.read(client)


def _chain(reader: DealReader, crowded: bool, pages: int, offset: int | None, *, last: bool = False) -> list[Step]:
    """A range's first batch: the page at ``offset`` (None: on from the reader's cursor) and
    keyset pages chained on it, ``pages`` in all (at most a batch; the ``last`` range's may
    end with a page proving the end)."""
    pages = max(1, min(pages, PAGE_SIZE))
    steps: list[Step] = []
    if offset is not None:
        steps.append(Step("o", "all" if reader.moment is None else "from", offset=offset))
    # The first keyset page takes the cursor itself when it is known (the head's), else row 49
    # of the page at the offset.
    pin = "" if offset is None else "o"
    while len(steps) < pages:
        key, chained = f"c{len(steps)}", bool(steps)
        if crowded:
            steps.append(Step(key, "same", chained=chained, count=len(steps) == int(offset is not None), pin=pin))
        else:
            steps.append(Step(key, "from", chained=chained))
    if crowded and last and len(steps) < PAGE_SIZE:
        # The last range: the seconds after the one read, which the count says hold nothing;
        # an empty page proves the end (deals changed meanwhile would be there).
        steps.append(Step(f"c{len(steps)}", "after", pin=pin))
    return steps
