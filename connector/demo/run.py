"""``connector demo``: the captain-by-location regulation end to end on a simulated portal."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console

from adapters.bitrix24.simulator import Bitrix24Simulator
from connector.config import load_config
from connector.runtime import Runtime
from connector.status import gather, render
from connector.worker import utcnow

ENGINEERS = [("Иван", "Петров"), ("Олег", "Смирнов"), ("Анна", "Кузнецова"), ("Рустам", "Галиев")]
APPLICATIONS = [
    ("Подключение: ул. Академика Сахарова, 4", "Казань, Советский район, ул. Академика Сахарова, 4|55.78;49.16|1"),
    ("Подключение: ул. Баумана, 10", "Казань, Вахитовский район, ул. Баумана, 10"),
    ("Подключение: ул. Гвардейская, 8", "Казань, ул. Гвардейская, 8, 420111"),
    ("Подключение: пос. Усады", "Лаишевский район, пос. Усады"),
]


def run_demo(timeout: float = 60.0) -> int:
    """Start the simulator and the connector, feed applications, print what happened."""
    sim = Bitrix24Simulator(application_token="demo-app-token-1")
    for name, last in ENGINEERS:
        sim.add_user(name, last, position="Сервис-инженер")
    sim_server = sim.serve()
    workdir = Path(tempfile.mkdtemp(prefix="connector-demo-"))
    os.environ.update({
        "SIM_URL": f"{sim_server.base_url}{sim.webhook_base}",
        "SIM_TOKEN": "demo-app-token-1",
        "DEMO_DB_URL": f"sqlite:///{workdir / 'demo.db'}",
    })
    config = load_config(Path(__file__).with_name("bitrix24.yaml"))
    runtime = Runtime(config)
    runtime.start()
    runtime.poll("b24")  # the safety net's first run, as `connector run` would do within poll_every
    sim.handler_url = f"{runtime.intake_url}/hooks/bitrix24/b24"
    click.echo(f"Bitrix24 simulator at {sim_server.base_url}, intake at {runtime.intake_url}")
    deal_ids = [sim.add_deal({"TITLE": title, "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW",
                              "ASSIGNED_BY_ID": "1", "UF_CRM_ADDRESS": address})
                for title, address in APPLICATIONS]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(sim.tasks_for_deal(d) for d in deal_ids):
        time.sleep(0.2)
    time.sleep(0.5)  # let the echo webhooks of our own writes settle
    users = {uid: f"{u.get('NAME', '')} {u.get('LAST_NAME', '')}".strip() for uid, u in sim.users.items()}
    rows = []
    for deal_id in deal_ids:
        deal = sim.deals[deal_id]
        tasks = sim.tasks_for_deal(deal_id)
        captain = deal.get("ASSIGNED_BY_ID", "")
        task = tasks[0] if tasks else {}
        rows.append((deal_id, deal.get("TITLE", ""), f"{captain} {users.get(captain, '')}",
                     str(task.get("ID") or task.get("id") or "-"), str(task.get("TITLE") or task.get("title") or "-"),
                     str(task.get("DEADLINE") or task.get("deadline") or "-"), len(tasks)))
    state = gather(runtime.store, runtime.config, utcnow())
    runtime.stop()
    sim_server.stop()
    _print(rows)
    render(state, Console(width=170), config.calendar["timezone"])
    missing = [r for r in rows if r[6] != 1]
    return 1 if missing else 0


def _print(rows: list[tuple]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Captain by location: deals, captains and tasks")
    for col in ("deal", "title", "captain", "task id", "task title", "deadline", "tasks"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(c) for c in r))
    Console(width=170).print(table)
