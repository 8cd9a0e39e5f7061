"""Paginators: where the next page of a list starts, and when the list has ended.

Three shapes, as the CRMs page (singer-sdk's paginator classes are the model):

* ``OffsetPaginator``: ``start`` offsets, each page saying where the next one starts or that
  none does (Bitrix24 ``next``/``total``, Pipedrive v1 ``more_items_in_collection``/
  ``next_start``, 1C's ``$skip`` without a next link);
* ``CursorPaginator``: an opaque cursor handed out with each page (Pipedrive v2
  ``next_cursor``);
* ``KeysetPaginator``: rows in the order of a modification time and a tiebreak, each page
  starting after the rows read so far, so rows edited meanwhile shift no page. Bitrix24's
  (``DATE_MODIFY`` + ``ID``, planned many pages per ``batch``) is
  ``adapters.bitrix24.keyset.DealReader``; ``DateSkipPaginator`` is 1C's (``Date`` +
  ``Ref_Key``, where only the date can be filtered on).

Every paginator checks that each page moves the read forward. A CRM answering a page that
leaves the position where it was (an ignored filter, a cursor handed out twice, a ``next``
pointing back) would be asked the same page forever; ``PagingLoop`` stops the read instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from datetime import datetime

from domain.errors import FatalError


class PagingLoop(FatalError):
    """The CRM answered a page that did not move the read forward: asking again would loop."""


class Paginator:
    """What every paginator shares: whether the list has ended, how many pages were read,
    and the error for a page that does not advance."""

    def __init__(self, *, crm: str = "", method: str = "") -> None:
        self.crm = crm
        self.method = method  # names the list in the error, like a client's call label
        self.finished = False
        self.pages = 0

    def _loop(self, detail: str) -> PagingLoop:
        return PagingLoop(f"paging does not advance: {detail}", crm=self.crm, method=self.method)


class OffsetPaginator(Paginator):
    """Pages by ``start`` offset. ``advance`` with what a page said: its row count and where the
    next page starts (None: the list ended here); the next start must lie past the page's."""

    def __init__(self, page_size: int, *, start: int = 0, crm: str = "", method: str = "") -> None:
        super().__init__(crm=crm, method=method)
        self.page_size = page_size
        self.start = start
        self.total: int | None = None  # rows in the list, when the CRM said

    def upcoming(self, limit: int) -> list[int]:
        """The offsets of the next pages, to ask for together: one page apart from ``start`` up to
        the list's total (at least the next page when the total is unknown), at most ``limit``."""
        end = self.start + self.page_size
        if self.total is not None:
            end = max(end, self.total)
        return list(range(self.start, end, self.page_size))[:limit]

    def advance(
        self, rows: int, next_start: int | str | None, *, total: int | None = None, page_start: int | None = None
    ) -> None:
        """Take in one page: ``rows`` read from it, the ``next_start`` it named and the list's
        ``total`` if it said. ``page_start`` is the page's own offset when pages were asked for
        together (default: ``start``)."""
        at = self.start if page_start is None else page_start
        self.pages += 1
        if total is not None:
            self.total = int(total)
        if next_start is None or rows == 0:
            self.finished = True
            return
        following = int(next_start)
        if following <= at:
            raise self._loop(f"the page at offset {at} names offset {following} as the next")
        self.start = following


class CursorPaginator(Paginator):
    """Pages by an opaque cursor each page hands out; a cursor seen before would read a page
    already read."""

    def __init__(self, *, crm: str = "", method: str = "") -> None:
        super().__init__(crm=crm, method=method)
        self.cursor: str | None = None
        self._seen: set[str] = set()

    def advance(self, next_cursor: str | None) -> None:
        """Take in one page's cursor for the next page (empty or None: the list ended)."""
        self.pages += 1
        if not next_cursor:
            self.finished = True
            return
        if next_cursor in self._seen:
            raise self._loop(f"cursor {next_cursor!r} handed out again after {self.pages} pages")
        self._seen.add(next_cursor)
        self.cursor = next_cursor


class KeysetPaginator(Paginator, ABC):
    """Pages in key order (a modification time, then a tiebreak), each starting after the rows
    read: ``position`` is everything that decides the next request. A request that leaves it
    where it was would be sent again, identical, forever: ``check_moved`` raises instead."""

    @property
    @abstractmethod
    def position(self) -> Hashable:
        """What decides the next request."""

    def check_moved(self, before: Hashable) -> None:
        """Raise ``PagingLoop`` when the read is not finished and its position is still ``before``."""
        if not self.finished and self.position == before:
            raise self._loop(f"a page left the position at {before!r}")


class DateSkipPaginator(KeysetPaginator):
    """Keyset paging for an API that filters on the date but not on the tiebreak (1C OData):
    ``date ge D`` ordered by (date, id), with a skip counting only the rows already read *at*
    ``D``. An insert or a delete at another date cannot shift a page; the position (``D`` and
    the skip) moves forward with every full page, and a full page identical to the one
    before (a skip ignored) is a loop too."""

    def __init__(self, since: datetime, page_size: int, *, crm: str = "", method: str = "") -> None:
        super().__init__(crm=crm, method=method)
        self.moment = since  # the date of the last row read: every earlier row is behind us
        self.skip = 0  # rows read at ``moment``
        self.page_size = page_size
        self._last_page: list[tuple[datetime, Hashable]] = []

    @property
    def position(self) -> tuple[datetime, int]:
        return self.moment, self.skip

    def advance(self, keys: Sequence[tuple[datetime, Hashable]]) -> None:
        """Take in one page by its rows' (date, id) keys, in the order they came."""
        before = self.position
        self.pages += 1
        for moment, _ in keys:
            if moment == self.moment:
                self.skip += 1
            else:
                self.moment, self.skip = moment, 1
        if len(keys) < self.page_size:
            self.finished = True
            return
        page = list(keys)
        if page == self._last_page:
            raise self._loop(f"the same {len(page)} rows again at {before[0].isoformat()} skip {before[1]}")
        self._last_page = page
        if self.position <= before:
            raise self._loop(
                f"a page moved the position from {before[0].isoformat()} back to {self.moment.isoformat()}"
            )
