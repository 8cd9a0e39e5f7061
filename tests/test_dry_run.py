"""Dry-run: history replayed through the rules at its own moments, nothing written; and `why`."""

from __future__ import annotations

import csv
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from click.testing import CliRunner

from connector.cli import main
from connector.demo.isp_history import isp_year
from connector.dryrun.history import HistoryItem, deal_from_dict, deal_to_dict, read_jsonl, write_jsonl
from domain import Deal, EventKind, Location

MSK = ZoneInfo("Europe/Moscow")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "isp-field-service.yaml"
ENV = {"B24_WEBHOOK_URL": "https://portal.bitrix24.ru/rest/1/code/", "B24_APP_TOKEN": "app-token-123"}


def _history(tmp_path: Path) -> Path:
    created = datetime(2026, 11, 23, 10, 0, tzinfo=MSK)  # Monday
    new = Deal(
        crm="b24",
        id="5",
        title="Заявка",
        stage="C1:NEW",
        pipeline="1",
        responsible_id="1",
        created_at=created,
        updated_at=created,
        location=Location(city="Казань", district="Советский"),
    )
    routed = replace(new, stage="C1:ROUTE", responsible_id="17", updated_at=datetime(2026, 11, 23, 15, 0, tzinfo=MSK))
    items = [
        HistoryItem(created, EventKind.DEAL_CREATED, new),
        HistoryItem(routed.updated_at or created, EventKind.DEAL_UPDATED, routed),
    ]
    path = tmp_path / "history.jsonl"
    write_jsonl(items, path)
    return path


def test_replay_fires_rules_and_deadlines_at_their_moments(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "actions.csv"
    result = CliRunner().invoke(
        main,
        [
            "dry-run",
            "--config",
            str(EXAMPLE),
            "--since",
            "2026-11-01",
            "--until",
            "2026-12-31",
            "--source",
            str(_history(tmp_path)),
            "--csv",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "replayed 2 events" in result.output
    # The example's reports are plan-vs-fact: read from the CRM when they run, not from past days.
    said = " ".join(result.output.split())
    assert (
        "plan-vs-fact reports (isp-monthly-to-management, isp-weekly-to-supervisors): their figures are read "
        "from the CRM when they run" in said
    )
    assert "own records" not in said
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    done = [(r["rule"], r["action"]) for r in rows if r["action"] != "note"]
    assert ("isp-captain-and-feasibility", "create_task") in done
    assert ("isp-route-estimate", "create_task") in done
    # Never connected: the reminder, then the breach at 3 working days, then the 5-day control.
    breaches = [r for r in rows if r["action"] == "record_breach"]
    assert [r["rule"] for r in breaches] == ["isp-connection-breached", "isp-supervisor-control"]
    assert breaches[0]["at"] == "2026-11-26T10:00:00+03:00"
    deal_rows = [r["at"] for r in rows if not r["rule"].startswith("recurring:")]
    assert deal_rows == sorted(deal_rows)


def test_replay_interleaves_recurring_work_with_deadlines(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "actions.csv"
    args = ["dry-run", "--config", str(EXAMPLE), "--since", "2026-11-01", "--until", "2026-12-31"]
    result = CliRunner().invoke(main, [*args, "--source", str(_history(tmp_path)), "--csv", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)


def test_history_lines_round_trip(tmp_path: Path) -> None:
    items = list(isp_year(2026, deals=20, seed=3))
    path = tmp_path / "h.jsonl"
    assert write_jsonl(items, path) == len(items)
    again = list(read_jsonl(path))
    assert [(i.at, i.kind, i.deal) for i in again] == [(i.at, i.kind, i.deal) for i in items]
    assert deal_from_dict(deal_to_dict(items[0].deal)) == items[0].deal


def test_bad_history_line_is_named(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    path = tmp_path / "bad.jsonl"
    path.write_text('{"at": "2026-11-01T10:00:00+03:00", "kind": "deal.created"}\n', encoding="utf-8")
    result = CliRunner().invoke(
        main, ["dry-run", "--config", str(EXAMPLE), "--since", "2026-11-01", "--source", str(path)]
    )
    assert result.exit_code != 0 and "bad.jsonl:1" in result.output


def test_why_prints_the_audit_of_a_deal(tmp_path: Path) -> None:
    from connector.storage.store import Store

    url = f"sqlite:///{tmp_path / 'c.db'}"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"""
storage: {{url: "{url}"}}
crms: {{b24: {{type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/c/", application_token: "tok-12345"}}}}
""",
        encoding="utf-8",
    )
    store = Store(url)
    at = datetime(2026, 11, 25, 7, 0, tzinfo=ZoneInfo("UTC"))
    with store.sessions() as session, session.begin():
        store.audit.record(
            session,
            at=at,
            crm="b24",
            deal_id="9",
            rule="isp-captain-and-feasibility",
            trigger="deal.created",
            action="decided:create_task",
            message="task 'Проверить' for user 17",
        )
    store.close()
    result = CliRunner().invoke(main, ["why", "9", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "isp-captain-and-feasibility" in result.output and "2026-11-25 10:00:00" in result.output
    assert CliRunner().invoke(main, ["why", "10", "--config", str(config)]).exit_code == 1


def test_pipedrive_deal_after_a_written_status_carries_the_outcome() -> None:
    """A dry-run shows later rules the deal as Pipedrive keeps it: won and lost are a status."""
    from adapters.pipedrive.adapter import PipedriveAdapter
    from adapters.pipedrive.settings import PipedriveSettings
    from domain import CloseDeal, UpdateDeal

    adapter = PipedriveAdapter(
        "pd",
        PipedriveSettings(
            base_url="https://x.pipedrive.com", api_token="t" * 40, webhook_user="u", webhook_password="p" * 12
        ),
    )
    lost = Deal(crm="pd", id="7", stage="1", stage_semantic="lost", fields={"status": "lost", "stage_id": 1})
    reopened = adapter.deal_after(lost, UpdateDeal("7", values={"status": "open"}))
    assert (reopened.stage_semantic, reopened.fields["status"], reopened.stage) == ("open", "open", "1")
    closed = adapter.deal_after(reopened, CloseDeal("7", outcome="lost", reason="дорого"))
    assert (closed.stage_semantic, closed.fields["status"], closed.fields["lost_reason"]) == ("lost", "lost", "дорого")
    assert adapter.deal_after(closed, UpdateDeal("7", values={"title": "x"})).stage_semantic == "lost"
