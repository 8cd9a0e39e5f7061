"""The Pipedrive demo: captain-by-location and lost-needs-reason on a simulated company."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from connector.config import load_config
from connector.runtime import Runtime
from simulators.pipedrive import PipedriveSimulator

ADDRESS_KEY = "3c1f2a8e9b7d6c5a4f3e2d1c0b9a8f7e6d5c4b3a"  # the custom field named in pipedrive.yaml
ENGINEERS = ["Иван Петров", "Олег Смирнов", "Анна Кузнецова", "Рустам Галиев"]  # users 10002..10005
APPLICATIONS = [
    ("Подключение: ул. Академика Сахарова, 4", "Казань, Советский район, ул. Академика Сахарова, 4"),
    ("Подключение: ул. Баумана, 10", "Казань, Вахитовский район, ул. Баумана, 10"),
    ("Подключение: ул. Гвардейская, 8", "Казань, ул. Гвардейская, 8, 420111"),
    ("Подключение: пос. Усады", "Лаишевский район, пос. Усады"),
]
LOST_TITLE = "Подключение: ул. Пушкина, 1 (отказ)"


def run_pipedrive_scenario(console: Console, timeout: float = 60.0) -> bool:
    """Start the simulator and the connector, create deals, print what happened.

    Four applications get a captain by their address and one check task each; a fifth deal,
    marked lost without a reason, gets a task asking its owner for the reason. True when
    every deal ended with exactly one activity.
    """
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the simulator's access log is noise here
    api_token = secrets.token_hex(12)  # per run, never printed
    hook_password = secrets.token_hex(12)
    sim = PipedriveSimulator(api_token=api_token, company_domain="demo", burst_limit=20)
    for name in ENGINEERS:
        sim.add_user(name)
    sim.add_deal_field("Адрес объекта", "address", key=ADDRESS_KEY)
    sim_server = sim.serve()
    workdir = Path(tempfile.mkdtemp(prefix="connector-pd-demo-"))
    os.environ.update(
        {
            "PD_SIM_URL": sim_server.base_url,
            "PD_SIM_TOKEN": api_token,
            "PD_HOOK_PASSWORD": hook_password,
            "PD_DEMO_DB_URL": f"sqlite:///{workdir / 'demo.db'}",
        }
    )
    runtime = Runtime(load_config(Path(__file__).with_name("pipedrive.yaml")))
    try:
        runtime.start()
        sim.add_webhook(
            f"{runtime.intake_url}/hooks/pipedrive/pd",
            event_action="*",
            event_object="deal",
            http_auth_user="connector",
            http_auth_password=hook_password,
        )
        console.print(f"Pipedrive simulator at {sim_server.base_url}, intake at {runtime.intake_url}")
        deal_ids = [
            sim.add_deal({"title": title, "stage_id": 1, "owner_id": 10001, "custom_fields": {ADDRESS_KEY: address}})
            for title, address in APPLICATIONS
        ]
        lost_id = sim.add_deal({"title": LOST_TITLE, "stage_id": 3, "owner_id": 10003})
        sim.update_deal(lost_id, {"status": "lost"})  # lost, and nobody said why
        all_ids = [*deal_ids, lost_id]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(sim.activities_for_deal(d) for d in all_ids):
            time.sleep(0.2)
        sim.wait_webhooks(timeout=5)  # let the echoes of our own writes settle
        rows = [_row(sim, deal_id) for deal_id in all_ids]
    finally:
        runtime.stop()
        sim_server.stop()
        sim.close()
    _print(console, rows)
    return all(r["activities"] == 1 for r in rows)


def _row(sim: PipedriveSimulator, deal_id: int) -> dict[str, Any]:
    deal = sim.deals[deal_id]
    activities = sim.activities_for_deal(deal_id)
    activity = activities[0] if activities else {}
    owner = sim.users.get(deal["owner_id"], {})
    due = f"{activity.get('due_date') or ''} {activity.get('due_time') or ''} UTC".strip() if activity else "-"
    return {
        "deal": str(deal_id),
        "title": deal["title"],
        "status": deal["status"],
        "owner": f"{deal['owner_id']} {owner.get('name', '')}".strip(),
        "activity": str(activity.get("id", "-")),
        "subject": str(activity.get("subject", "-")),
        "due": due,
        "activities": len(activities),
    }


def _print(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(title="Pipedrive: deals, owners (captains) and activities")
    for col in ("deal", "title", "status", "owner", "activity", "subject", "due", "activities"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            *(str(r[c]) for c in ("deal", "title", "status", "owner", "activity", "subject", "due", "activities"))
        )
    console.print(table)
