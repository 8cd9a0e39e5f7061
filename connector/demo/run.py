"""``connector demo``: regulations end to end on simulated CRMs.

Bitrix24: captain by location and a feasibility task per application. Pipedrive: the same
regulation with activities, and a deal lost without a reason getting a task. 1C: an
invoice paid in two parts arriving on its Bitrix24 deal with one hand-off task.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console

from connector.config import load_config
from connector.runtime import Runtime
from connector.status import gather, render
from domain.clock import utcnow
from simulators.bitrix24 import Bitrix24Simulator

ENGINEERS = [("Иван", "Петров"), ("Олег", "Смирнов"), ("Анна", "Кузнецова"), ("Рустам", "Галиев")]
APPLICATIONS = [
    ("Подключение: ул. Академика Сахарова, 4", "Казань, Советский район, ул. Академика Сахарова, 4|55.78;49.16|1"),
    ("Подключение: ул. Баумана, 10", "Казань, Вахитовский район, ул. Баумана, 10"),
    ("Подключение: ул. Гвардейская, 8", "Казань, ул. Гвардейская, 8, 420111"),
    ("Подключение: пос. Усады", "Лаишевский район, пос. Усады"),
]


def run_demo(timeout: float = 60.0, scenarios: tuple[str, ...] = ("bitrix24", "pipedrive", "onec")) -> int:
    """Run each scenario and print its table; 0 when every one did what it should."""
    from connector.demo.onec_scenario import run_onec_scenario
    from connector.demo.pipedrive_scenario import run_pipedrive_scenario

    console = Console(width=170)
    results: dict[str, bool] = {}
    if "bitrix24" in scenarios:
        results["bitrix24"] = run_bitrix24(timeout) == 0
    if "pipedrive" in scenarios:
        console.rule("Pipedrive")
        results["pipedrive"] = run_pipedrive_scenario(console, timeout)
    if "onec" in scenarios:
        console.rule("1C:Enterprise → Bitrix24")
        results["onec"] = run_onec_scenario(console, timeout)
    console.print("demo: " + ", ".join(f"{name} {'OK' if ok else 'FAILED'}" for name, ok in results.items()))
    return 0 if all(results.values()) else 1


def run_bitrix24(timeout: float = 60.0) -> int:
    """Start the simulator and the connector, feed applications, print what happened."""
    sim = Bitrix24Simulator(application_token="demo-app-token-1")
    for name, last in ENGINEERS:
        sim.add_user(name, last, position="Сервис-инженер")
    sim_server = sim.serve()
    workdir = Path(tempfile.mkdtemp(prefix="connector-demo-"))
    os.environ.update(
        {
            "SIM_URL": f"{sim_server.base_url}{sim.webhook_base}",
            "SIM_TOKEN": "demo-app-token-1",
            "DEMO_DB_URL": f"sqlite:///{workdir / 'demo.db'}",
        }
    )
    config = load_config(Path(__file__).with_name("bitrix24.yaml"))
    runtime = Runtime(config)
    runtime.start()
    runtime.poll("b24")  # the safety net's first run, as `connector run` would do within poll_every
    sim.handler_url = f"{runtime.intake_url}/hooks/bitrix24/b24"
    click.echo(f"Bitrix24 simulator at {sim_server.base_url}, intake at {runtime.intake_url}")
    deal_ids = [
        sim.add_deal(
            {"TITLE": title, "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "ASSIGNED_BY_ID": "1", "UF_CRM_ADDRESS": address}
        )
        for title, address in APPLICATIONS
    ]
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
        rows.append(
            (
                deal_id,
                deal.get("TITLE", ""),
                f"{captain} {users.get(captain, '')}",
                str(task.get("ID") or task.get("id") or "-"),
                str(task.get("TITLE") or task.get("title") or "-"),
                str(task.get("DEADLINE") or task.get("deadline") or "-"),
                len(tasks),
            )
        )
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
