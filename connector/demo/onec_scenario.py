"""The 1C demo: an invoice raised and paid in 1C shows up on its Bitrix24 deal.

Starts a simulated Trade Management 11 base and a simulated Bitrix24 portal on loopback, runs
the connector against both (SQLite in a temp directory), raises an invoice in 1C, pays it in two
parts, and prints what reached the deal: a timeline comment per document and one hand-off task.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from connector.config import load_config
from connector.runtime import Runtime
from simulators.bitrix24 import Bitrix24Simulator
from simulators.onec import OneCSimulator

LOGIN, PASSWORD = "Интеграция", "demo-1c-password"
TOKEN = "demo-app-token-1c"
INVOICES = "Document_СчетНаОплатуКлиенту"
PAYMENTS = "Document_ПоступлениеБезналичныхДенежныхСредств"
MSK = ZoneInfo("Europe/Moscow")


def _wait(predicate: Callable[[], bool], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def run_onec_scenario(console: Console, timeout: float = 60.0) -> bool:
    """Run the scenario and print a table; True when every document reached the deal and
    exactly one hand-off task was created."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per simulated request drowns the table
    onec = OneCSimulator(users={LOGIN: PASSWORD}, clock=lambda: datetime.now(MSK).replace(tzinfo=None))
    onec_server = onec.serve()
    b24 = Bitrix24Simulator(application_token=TOKEN)
    for name, last in (("Мария", "Продажина"), ("Олег", "Аккаунтов")):
        b24.add_user(name, last, position="Менеджер")
    b24_server = b24.serve()
    workdir = Path(tempfile.mkdtemp(prefix="connector-demo-1c-"))
    environ = {
        **os.environ,
        "SIM_URL": f"{b24_server.base_url}{b24.webhook_base}",
        "SIM_TOKEN": TOKEN,
        "ONEC_URL": f"{onec_server.base_url}{onec.base_path}/",
        "ONEC_USER": LOGIN,
        "ONEC_PASSWORD": PASSWORD,
        "DEMO_ONEC_DB_URL": f"sqlite:///{workdir / 'demo.db'}",
    }
    runtime = Runtime(load_config(Path(__file__).with_name("onec.yaml"), environ))
    deadline = time.monotonic() + timeout
    steps: list[tuple[str, dict[str, Any]]] = []
    try:
        runtime.start()
        console.print(
            f"1C simulator at {onec_server.base_url}{onec.base_path}/, Bitrix24 simulator at "
            f"{b24_server.base_url}, intake at {runtime.intake_url}"
        )
        deal_id = b24.add_deal(
            {
                "TITLE": "Кружки с логотипом, 500 шт.",
                "STAGE_ID": "NEW",
                "ASSIGNED_BY_ID": "2",
                "UF_CRM_INN": "7701234567",
            }
        )
        party = onec.insert(
            "Catalog_Контрагенты", {"Description": "Ромашка ООО", "ИНН": "7701234567", "КПП": "770101001"}
        )

        def comments() -> list[dict[str, Any]]:
            return sorted((c for c in b24.comments.values() if c["ENTITY_ID"] == deal_id), key=lambda c: int(c["ID"]))

        # The assistant raises the invoice in 1C (seed 001: "Счёт и проект в 1С заводит Ассистент").
        invoice = _posted(
            onec,
            INVOICES,
            {"Контрагент_Key": party["Ref_Key"], "СуммаДокумента": 120000, "Комментарий": f"Сделка #{deal_id}"},
        )
        steps.append(("счёт", invoice))
        _wait(lambda: len(comments()) >= 1, deadline)
        for part in (50000, 70000):  # the client pays in two parts
            payment = _posted(
                onec,
                PAYMENTS,
                {
                    "Контрагент_Key": party["Ref_Key"],
                    "СуммаДокумента": part,
                    "НазначениеПлатежа": f"Оплата по счету № {invoice['Number']}",
                    "РасшифровкаПлатежа": [{"ОснованиеПлатежа": invoice["Ref_Key"], "Сумма": part}],
                },
            )
            steps.append(("оплата", payment))
            wanted = len(steps)
            _wait(lambda: len(comments()) >= wanted, deadline)  # noqa: B023 - called before the loop moves on
        _wait(lambda: len(b24.tasks_for_deal(deal_id)) >= 1, deadline)
        time.sleep(0.5)  # let a late duplicate, if any, show itself before counting
        found = comments()
        tasks = b24.tasks_for_deal(deal_id)
    finally:
        runtime.stop()
        onec_server.stop()
        b24_server.stop()
        b24.close()

    table = Table(title=f"1C -> Bitrix24: documents on deal {deal_id} «{b24.deals[deal_id]['TITLE']}»")
    for col in ("1C document", "number", "amount", "date (1C)", "comment id", "comment", "hand-off task"):
        table.add_column(col)
    task = tasks[0] if tasks else {}
    task_text = f"{task.get('ID')} {task.get('TITLE')}" if task else "-"
    for i, (label, doc) in enumerate(steps):
        comment = found[i] if i < len(found) else {}
        text = str(comment.get("COMMENT", "-")).split("\n[")[0]  # hide the connector's marker
        table.add_row(
            label,
            doc["Number"],
            str(doc["СуммаДокумента"]),
            doc["Date"],
            str(comment.get("ID", "-")),
            text,
            task_text if i == len(steps) - 1 else "",
        )
    console.print(table)
    ok = len(found) == len(steps) and len(tasks) == 1
    console.print(
        f"comments: {len(found)} of {len(steps)}, hand-off tasks: {len(tasks)} (expected 1) -> "
        f"{'OK' if ok else 'FAILED'}"
    )
    return ok


def _posted(sim: OneCSimulator, entity_set: str, fields: dict[str, Any]) -> dict[str, Any]:
    doc = sim.insert(entity_set, fields)
    return sim.set_posted(entity_set, doc["Ref_Key"])


if __name__ == "__main__":
    raise SystemExit(0 if run_onec_scenario(Console(width=200)) else 1)
