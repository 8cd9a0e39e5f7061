"""Metrics and logs: /metrics exposes what happened and what waits; every line of one delivery,
CRM calls included, carries its correlation id; JSON lines when asked; no secret anywhere."""

from __future__ import annotations

import json
import logging

import requests

from connector.config import load_config_text
from connector.observability import CorrelationFilter, JsonFormatter, TextFormatter, correlation
from connector.runtime import Runtime
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import CONFIG, TOKEN, wait_for


def _message(record: logging.LogRecord) -> str:
    return record.getMessage()


def test_one_delivery_one_correlation_from_webhook_to_task(db_url, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50)
    for name in ("Иван", "Олег"):
        simulator.add_user(name)
    server = simulator.serve()
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    webhook_url = server.base_url + simulator.webhook_base
    rt = Runtime(load_config_text(CONFIG.format(db_url=db_url, b24_url=webhook_url)))
    caplog.handler.addFilter(CorrelationFilter())
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="connector.intake")  # an accepted delivery's line is DEBUG
    try:
        rt.start()
        simulator.handler_url = f"{rt.intake_url}/hooks/bitrix24/b24"
        deal = simulator.add_deal(
            {"TITLE": "Заявка", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "UF_CRM_ADDRESS": "Казань, Советский район"}
        )
        assert wait_for(lambda: len(simulator.tasks_for_deal(deal)) == 1)

        def lines() -> list[logging.LogRecord]:
            return list(caplog.records)  # other threads append meanwhile

        def mine() -> list[str]:
            return [r.getMessage() for r in lines() if getattr(r, "correlation", None) == cid]

        # Each thread logs after its own commit or call, so no order between threads is assumed:
        # every line is waited for. The deal's creation came by webhook: its processing names
        # the delivery's correlation, which the webhook's line, the write and its call carry.
        def processed() -> list[str]:
            return [
                m
                for m in map(_message, lines())
                if m.startswith("processed ") and f" deal={deal} " in m and " kind=deal.created " in m
            ]

        assert wait_for(lambda: bool(processed()))  # the worker's line
        cid = processed()[0].split("correlation=")[1]
        assert wait_for(lambda: any(m.startswith("webhook accepted ") for m in mine()))
        # The task's call is logged when its answer is read, before the dispatcher's line.
        assert wait_for(lambda: any(m.startswith("dispatched ") and "command=create_task" in m for m in mine()))
        assert any("method=tasks.task.add" in m and "outcome=ok" in m for m in mine())  # the CRM call

        expected = [
            'crmc_webhook_deliveries_total{crm="b24",result="accepted"}',
            'crmc_crm_calls_total{crm="b24",method="tasks.task.add",outcome="ok"}',
            'crmc_outbox_rows{crm="b24",status="done"}',
            "crmc_processing_seconds_bucket",  # observed just after the worker's line
            "crmc_open_deadlines",
        ]

        def missing() -> list[str]:
            text = requests.get(f"{rt.intake_url}/metrics", timeout=5).text
            return [name for name in expected if name not in text]

        assert wait_for(lambda: not missing(), step=0.2), missing()
        metrics = requests.get(f"{rt.intake_url}/metrics", timeout=5).text
        # The simulator's own access log (werkzeug) shows its URLs; the connector's lines must not.
        everything = metrics + "\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug")
        assert TOKEN not in everything and simulator.webhook_base.strip("/").split("/")[-1] not in everything
    finally:
        rt.stop()
        server.stop()
        simulator.close()


def test_json_and_text_lines_carry_the_correlation() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "crm call method=%s", ("crm.deal.get",), None)
    with correlation("abc123"):
        CorrelationFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line == {
        **line,
        "level": "INFO",
        "logger": "x",
        "message": "crm call method=crm.deal.get",
        "correlation": "abc123",
    }
    assert TextFormatter().format(record).endswith("crm call method=crm.deal.get correlation=abc123")
