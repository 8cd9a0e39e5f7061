"""Switching the connector on: the first poll starts from now unless a look-back is configured,
so the rules do not act on yesterday's deals."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from marshmallow import ValidationError

from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.settings import Bitrix24Settings, Bitrix24SettingsSchema
from connector.storage.store import Store
from jobs.poll import poll_deals
from simulators.bitrix24 import Bitrix24Simulator

MSK = timezone(timedelta(hours=3))


@pytest.mark.parametrize(("lookback", "queued"), [(timedelta(0), 1), (timedelta(hours=3), 2)])
def test_first_poll_reads_back_only_the_configured_look_back(tmp_path: Path, lookback: timedelta, queued: int) -> None:
    now = [datetime(2026, 3, 2, 8, 0, 0, tzinfo=MSK)]
    simulator = Bitrix24Simulator(application_token="token-12345678", clock=lambda: now[0])
    server = simulator.serve()
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        simulator.add_deal({"TITLE": "вчерашняя", "STAGE_ID": "NEW"})  # two hours before the start
        now[0] += timedelta(hours=2)
        start = now[0]
        now[0] += timedelta(seconds=30)
        simulator.add_deal({"TITLE": "сегодняшняя", "STAGE_ID": "NEW"})  # after the start
        adapter = Bitrix24Adapter(
            "b24", Bitrix24Settings(webhook_url=server.base_url + simulator.webhook_base, application_token="t" * 8)
        )
        got = poll_deals(store, adapter, now=start, overlap=timedelta(minutes=2), initial_lookback=lookback)
        assert got == queued
    finally:
        store.close()
        server.stop()
        simulator.close()


def test_look_back_defaults_to_zero_and_refuses_negative() -> None:
    schema = Bitrix24SettingsSchema()
    base = {"type": "bitrix24", "webhook_url": "https://p.bitrix24.ru/rest/1/code/", "application_token": "t" * 8}
    assert schema.load_settings(base).initial_lookback == 0.0
    assert schema.load_settings({**base, "initial_lookback": "1d"}).initial_lookback == 86400.0
    assert schema.load_settings({**base, "initial_lookback": "0"}).initial_lookback == 0.0
    with pytest.raises(ValidationError):
        schema.load_settings({**base, "initial_lookback": "-1h"})
