"""Paginators: offsets, cursors and keysets advance page by page, and a CRM answering a page
that does not move the read forward raises ``PagingLoop`` instead of being asked forever."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import responses

from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.client import Bitrix24Client
from adapters.bitrix24.settings import Bitrix24Settings
from adapters.onec.adapter import OneCAdapter
from adapters.onec.settings import OneCSettings
from adapters.paging import CursorPaginator, DateSkipPaginator, OffsetPaginator, PagingLoop
from adapters.pipedrive.client import PipedriveClient
from connector.storage.store import Store
from domain.errors import FatalError
from jobs.poll_documents import poll_documents

B24 = "https://x.bitrix24.ru/rest/1/code/"
PD = "https://acme.pipedrive.com"
ONEC = "http://1c.local/trade/odata/standard.odata/"
D = datetime(2024, 5, 14, 10, 0)


# --- the paginators -----------------------------------------------------------------------------


def test_offset_paginator_plans_the_pages_up_to_the_total_and_follows_next() -> None:
    pager = OffsetPaginator(50)
    assert pager.upcoming(10) == [0]  # nothing known yet: the first page
    pager.advance(50, 50, total=170)
    assert (pager.start, pager.total, pager.finished) == (50, 170, False)
    assert pager.upcoming(10) == [50, 100, 150] and pager.upcoming(2) == [50, 100]
    pager.advance(50, "100", page_start=50)  # Bitrix24 may send numbers as strings
    pager.advance(20, None, page_start=150)
    assert pager.finished and pager.pages == 3


def test_offset_paginator_ends_on_an_empty_page_even_if_it_names_a_next() -> None:
    pager = OffsetPaginator(500)
    pager.advance(0, 500)
    assert pager.finished


@pytest.mark.parametrize("next_start", [0, 40, 50])
def test_offset_paginator_refuses_a_next_that_does_not_lie_past_the_page(next_start: int) -> None:
    pager = OffsetPaginator(50, start=50, crm="b24", method="crm.deal.list")
    with pytest.raises(PagingLoop) as err:
        pager.advance(50, next_start)
    assert isinstance(err.value, FatalError)  # retrying the same read cannot help
    assert err.value.crm == "b24" and err.value.method == "crm.deal.list"
    assert f"offset 50 names offset {next_start}" in str(err.value)


def test_cursor_paginator_follows_cursors_and_refuses_one_handed_out_again() -> None:
    pager = CursorPaginator(method="GET /api/v2/deals")
    pager.advance("a")
    pager.advance("b")
    assert pager.cursor == "b" and not pager.finished
    with pytest.raises(PagingLoop, match="'a' handed out again"):
        pager.advance("a")  # a cycle, not only the same cursor twice in a row
    done = CursorPaginator()
    done.advance(None)
    assert done.finished and done.cursor is None


def test_date_skip_paginator_skips_only_rows_read_at_the_last_date() -> None:
    pager = DateSkipPaginator(D, 3)
    assert pager.position == (D, 0)
    pager.advance([(D, "a"), (D + timedelta(seconds=1), "b"), (D + timedelta(seconds=1), "c")])
    assert pager.position == (D + timedelta(seconds=1), 2) and not pager.finished
    pager.advance([(D + timedelta(seconds=1), "d"), (D + timedelta(seconds=1), "e"), (D + timedelta(seconds=1), "f")])
    assert pager.position == (D + timedelta(seconds=1), 5)
    pager.advance([(D + timedelta(seconds=2), "g")])
    assert pager.finished and pager.position == (D + timedelta(seconds=2), 1)


def test_date_skip_paginator_refuses_the_same_page_twice() -> None:
    # A base that ignores $skip answers the same rows at one date, and the skip alone grows.
    pager = DateSkipPaginator(D, 2)
    page = [(D, "a"), (D, "b")]
    pager.advance(page)
    with pytest.raises(PagingLoop, match="same 2 rows again"):
        pager.advance(page)


def test_date_skip_paginator_refuses_a_page_that_goes_back() -> None:
    # A base that ignores the date filter answers from the start again.
    pager = DateSkipPaginator(D, 2)
    pager.advance([(D + timedelta(hours=1), "a"), (D + timedelta(hours=2), "b")])
    with pytest.raises(PagingLoop, match="back to"):
        pager.advance([(D, "c"), (D + timedelta(minutes=1), "d")])


# --- through the clients ------------------------------------------------------------------------

MOST_CALLS = 10  # a read past this many requests is looping: fail instead of hanging


def served(*answers: Any) -> Any:
    """A ``responses`` callback giving ``answers`` in turn (then the last again) as JSON."""
    calls: list[int] = []

    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        calls.append(1)
        if len(calls) > MOST_CALLS:
            raise AssertionError(f"{len(calls)} requests: the read is looping")
        answer = answers[min(len(calls), len(answers)) - 1]
        return 200, {}, json.dumps(answer(request) if callable(answer) else answer)

    return callback


def b24_client() -> Bitrix24Client:
    return Bitrix24Client(B24, rate=1000, burst=1000, backoff_initial=0.001, backoff_max=0.01)


def b24_settings() -> Bitrix24Settings:
    return Bitrix24Settings(webhook_url=B24, application_token="t" * 8)


def rows(first: int, count: int) -> list[dict[str, str]]:
    return [{"ID": str(i)} for i in range(first, first + count)]


@responses.activate
def test_bitrix24_list_whose_next_points_back_stops() -> None:
    first, again = {"result": rows(1, 50), "next": 50, "total": 60}, {"result": rows(51, 50), "next": 50}
    responses.add_callback(responses.POST, B24 + "crm.deal.list.json", callback=served(first, again))
    with pytest.raises(PagingLoop):
        list(b24_client().list_all("crm.deal.list", {}))
    assert len(responses.calls) == 2


@responses.activate
def test_bitrix24_batched_page_whose_next_points_back_stops() -> None:
    first = {"result": rows(1, 50), "next": 50, "total": 150}
    responses.add_callback(responses.POST, B24 + "crm.deal.list.json", callback=served(first))
    batch = {
        "result": {
            "result": {"p50": rows(51, 50), "p100": rows(101, 50)},
            "result_error": [],
            "result_total": {"p50": 150, "p100": 150},
            "result_next": {"p50": 100, "p100": 100},
            "result_time": [],
        }
    }
    responses.add_callback(responses.POST, B24 + "batch.json", callback=served(batch))
    with pytest.raises(PagingLoop, match="offset 100 names offset 100"):
        list(b24_client().list_all("crm.deal.list", {}))
    assert len(responses.calls) == 2


@responses.activate
def test_bitrix24_deal_reads_from_a_portal_ignoring_the_filter_stop() -> None:
    # Every page is the same 50 deals, one per second, whatever the filter asks.
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    same = [
        {"ID": str(i), "DATE_MODIFY": (start + timedelta(seconds=i)).isoformat(), "STAGE_ID": "NEW"}
        for i in range(1, 51)
    ]

    def answer(request: Any) -> dict[str, Any]:
        body = json.loads(request.body)
        if "cmd" in body:
            return {"result": {"result": {k: same for k in body["cmd"]}, "result_total": {}, "result_error": []}}
        return {"result": same, "total": 10_000}

    responses.add_callback(responses.POST, re.compile(re.escape(B24) + ".*"), callback=served(answer))
    b24 = Bitrix24Adapter("b24", b24_settings(), client=b24_client())
    with pytest.raises(PagingLoop):
        list(b24.changed_deals(None))
    assert len(responses.calls) <= 6  # the first page, then one batch per range (sent together)


def pd_client() -> PipedriveClient:
    return PipedriveClient(PD, "token", backoff_initial=0.001, backoff_max=0.01)


@responses.activate
def test_pipedrive_v2_cursor_handed_out_again_stops() -> None:
    page = {"success": True, "data": [{"id": 1}], "additional_data": {"next_cursor": "c1"}}
    responses.add_callback(responses.GET, f"{PD}/api/v2/deals", callback=served(page))
    with pytest.raises(PagingLoop):
        list(pd_client().iter_v2("/api/v2/deals"))
    assert len(responses.calls) == 2


@responses.activate
def test_pipedrive_v1_next_start_pointing_back_stops() -> None:
    pagination = {"start": 0, "limit": 1, "more_items_in_collection": True, "next_start": 1}
    first = {"success": True, "data": [{"id": 1}], "additional_data": {"pagination": pagination}}
    again = {"success": True, "data": [{"id": 2}], "additional_data": {"pagination": pagination}}
    responses.add_callback(responses.GET, f"{PD}/v1/notes", callback=served(first, again))
    with pytest.raises(PagingLoop):
        list(pd_client().iter_v1("/v1/notes", limit=1))
    assert len(responses.calls) == 2


@responses.activate
def test_onec_poll_of_a_base_ignoring_skip_stops(tmp_path: Path) -> None:
    invoices = "Document_СчетНаОплатуКлиенту"
    drafts = [  # nothing to file: the loop is all this test is about
        {"Ref_Key": f"0000000{i}-0c21-11ef-8b8e-00155d010a01", "DataVersion": "A", "DeletionMark": True}
        | {"Number": f"N{i}", "Date": "2024-05-14T10:15:00", "Posted": False}
        for i in range(2)
    ]

    def answer(request: Any) -> dict[str, Any]:
        return {"value": drafts if invoices in unquote(request.url) else []}

    responses.add_callback(responses.GET, re.compile(re.escape(ONEC) + ".*"), callback=served(answer))
    settings = OneCSettings(base_url=ONEC, username="u", password="p", deal_crm="b24", page_size=2, poll_overlap=0)
    src = OneCAdapter("onec", settings)
    deals = Bitrix24Adapter("b24", b24_settings(), client=b24_client())
    store = Store(f"sqlite:///{tmp_path / 'poll.db'}")
    try:
        with pytest.raises(PagingLoop):
            poll_documents(store, src, deals, now=datetime(2024, 5, 14, 12, 0, tzinfo=UTC))
        assert sum(invoices in unquote(str(c.request.url)) for c in responses.calls) == 2
    finally:
        store.close()
