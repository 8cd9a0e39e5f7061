"""The penalty report (seed 000): breaches charged to whoever is responsible at the breach,
per employee and month, from a dry-run of the generated ISP year and from the database."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.demo.isp_history import isp_year
from connector.dryrun.history import write_jsonl
from rules.penalties import month_bounds

MSK = ZoneInfo("Europe/Moscow")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "isp-field-service.yaml"
ENV = {"B24_WEBHOOK_URL": "https://portal.bitrix24.ru/rest/1/code/", "B24_APP_TOKEN": "app-token-123"}
CAPTAINS = {"17", "19", "29", "37"}


def test_dry_run_charges_connection_breaches_to_the_captains(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    history = tmp_path / "year.jsonl"
    write_jsonl(isp_year(2026, deals=400, seed=5), history)
    out = tmp_path / "penalties.csv"
    actions = tmp_path / "actions.csv"
    args = ["dry-run", "--config", str(EXAMPLE), "--since", "2026-01-01", "--source", str(history)]
    result = CliRunner().invoke(main, [*args, "--csv", str(actions), "--penalties-csv", str(out)])
    assert result.exit_code == 0, result.output
    assert "breaches of connection by 4 employees" in result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows, "a generated year has late connections"
    # Only the deadline marked `penalty: true`; the supervisors' 5-day control is not a penalty.
    assert {r["deadline"] for r in rows} == {"connection"}
    # The captain set after the deadline started is charged, never the head of service (user 1).
    assert {r["responsible_id"] for r in rows} <= CAPTAINS
    assert len({r["responsible_id"] for r in rows}) > 1
    assert [r["month"] for r in rows] == sorted(r["month"] for r in rows)
    recorded = [r for r in csv.DictReader(actions.open(encoding="utf-8")) if r["rule"] == "isp-connection-breached"]
    assert len([r for r in recorded if r["action"] == "record_breach"]) == len(rows)


def test_penalties_command_reads_the_month_from_the_database(tmp_path: Path) -> None:
    from connector.storage.store import Store

    url = f"sqlite:///{tmp_path / 'c.db'}"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"""
storage: {{url: "{url}"}}
crms: {{b24: {{type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/c/", application_token: "tok-12345"}}}}
deadlines:
  connection: {{due: 3 working days, penalty: true}}
  supervisor-control: {{due: 5 working days}}
""",
        encoding="utf-8",
    )
    store = Store(url)

    def breach(deal: str, deadline: str, who: str, due: datetime) -> None:
        with store.sessions() as session, session.begin():
            store.timers.record_breach(
                session,
                crm="b24",
                deal_id=deal,
                deadline=deadline,
                due_at=due,
                responsible_id=who,
                rule="r",
                now=due,
            )

    breach("1", "connection", "17", datetime(2026, 3, 2, 10, 0, tzinfo=MSK))
    breach("2", "connection", "19", datetime(2026, 3, 31, 23, 30, tzinfo=MSK))  # still March in Moscow
    breach("3", "connection", "17", datetime(2026, 3, 20, 12, 0, tzinfo=MSK))
    breach("2", "supervisor-control", "7", datetime(2026, 3, 4, 10, 0, tzinfo=MSK))  # not a penalty
    breach("4", "connection", "17", datetime(2026, 4, 1, 0, 30, tzinfo=MSK))  # April
    store.close()

    out = tmp_path / "march.csv"
    result = CliRunner().invoke(main, ["penalties", "--config", str(config), "--month", "2026-03", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert "penalties: 3 breaches of connection by 2 employees" in result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [(r["month"], r["responsible_id"], r["deal_id"]) for r in rows] == [
        ("2026-03", "17", "1"),
        ("2026-03", "17", "3"),
        ("2026-03", "19", "2"),
    ]
    bad = CliRunner().invoke(main, ["penalties", "--config", str(config), "--month", "March"])
    assert bad.exit_code == 2 and "YYYY-MM" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize(
    ("month", "start", "end"),
    [("2026-12", datetime(2026, 12, 1, tzinfo=MSK), datetime(2027, 1, 1, tzinfo=MSK))],
)
def test_month_bounds_wrap_the_year(month: str, start: datetime, end: datetime) -> None:
    assert month_bounds(month, "Europe/Moscow") == (start, end)
