"""Polling reads every changed deal even while deals keep changing under it (keyset paging)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.settings import Bitrix24Settings
from simulators.bitrix24 import Bitrix24Simulator

MSK = timezone(timedelta(hours=3))


def test_deals_changing_during_the_read_skip_no_deal() -> None:
    now = [datetime(2026, 3, 2, 10, 0, 0, tzinfo=MSK)]
    simulator = Bitrix24Simulator(application_token="token-12345678", rate=1000, burst=1000, clock=lambda: now[0])
    server = simulator.serve()
    try:
        ids = [simulator.add_deal({"TITLE": f"Сделка {i}", "STAGE_ID": "NEW"}) for i in range(130)]
        now[0] += timedelta(seconds=1)  # edits land a second after the creations (Bitrix24 stamps to the second)
        adapter = Bitrix24Adapter(
            "b24",
            Bitrix24Settings(
                webhook_url=server.base_url + simulator.webhook_base, application_token="t" * 8, rate=1000, burst=1000
            ),
        )
        real_call = adapter.client.call_full  # every request goes through it, batches too
        touched = iter(ids)

        def call_and_touch(method, params=None, **kw):  # type: ignore[no-untyped-def]
            answer = real_call(method, params, **kw)
            # Meanwhile a user edits an early deal: it moves to the end of the DATE_MODIFY order,
            # and with offset paging the deal at the page boundary would be skipped.
            simulator.update_deal(next(touched), {"COMMENTS": "edited"})
            return answer

        adapter.client.call_full = call_and_touch  # type: ignore[method-assign]
        since = now[0] - timedelta(hours=1)
        seen = {d.id for d in adapter.changed_deals(since)}
        assert seen == set(ids)  # offset paging missed 2 of 130 here
    finally:
        server.stop()
        simulator.close()
