"""`connector backfill` queues every deal changed since a date from the CRM, once."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

from connector.cli import main
from connector.storage.models import InboxRow
from connector.storage.store import Store
from simulators.bitrix24 import Bitrix24Simulator


def test_backfill_queues_each_change_once(tmp_path: Path) -> None:
    simulator = Bitrix24Simulator(application_token="token-12345678", rate=50, burst=50)
    server = simulator.serve()
    try:
        for i in range(70):  # more than one page
            simulator.add_deal({"TITLE": f"Сделка {i}", "STAGE_ID": "NEW"})
        url = f"sqlite:///{tmp_path / 'c.db'}"
        config = tmp_path / "c.yaml"
        config.write_text(
            f"""
storage: {{url: "{url}"}}
crms: {{b24: {{type: bitrix24, webhook_url: "{server.base_url}{simulator.webhook_base}",
              application_token: "token-12345678", rate: 50}}}}
""",
            encoding="utf-8",
        )
        runner = CliRunner()
        first = runner.invoke(main, ["backfill", "--config", str(config), "--crm", "b24", "--since", "2020-01-01"])
        assert first.exit_code == 0, first.output
        assert "70 change(s) queued" in first.output
        again = runner.invoke(main, ["backfill", "--config", str(config), "--crm", "b24", "--since", "2020-01-01"])
        assert "0 change(s) queued" in again.output
        assert (
            runner.invoke(
                main, ["backfill", "--config", str(config), "--crm", "nope", "--since", "2020-01-01"]
            ).exit_code
            == 2
        )
        store = Store(url)
        with store.sessions() as s:
            assert s.scalar(select(func.count(InboxRow.id))) == 70
        store.close()
    finally:
        server.stop()
        simulator.close()
