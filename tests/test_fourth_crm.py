"""A fourth CRM added from the tests alone: its own package (tests/toy_crm) and one
``register_crm_type`` call. A webhook comes in, a rule fires, a task is written to it, through
the real runtime (intake on waitress, worker, dispatcher), with nothing in the connector
changed."""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from adapters.registry import register_crm_type, unregister_crm_type
from connector.config import load_config_text
from connector.runtime import Runtime
from tests.helpers import wait_for
from tests.toy_crm.adapter import ToyAdapter
from tests.toy_crm.board import BOARDS, Board
from tests.toy_crm.settings import ToySettingsSchema

PACKAGE = Path(__file__).parent / "toy_crm"
TOKEN = "toy-token-12345"
CONFIG = """
storage: {{url: "sqlite:///{db}"}}
server: {{host: 127.0.0.1, port: 0}}
worker: {{every: 0.05s}}
dispatcher: {{every: 0.05s}}
crms:
  board: {{type: toy, board: fourth, token: "${{TOY_TOKEN}}"}}
rules:
  - name: call-the-client
    crm: board
    on: [deal.created]
    do:
      - create_task: {{title: "Позвонить: {{{{ deal.title }}}}", responsible: responsible, due: 24h}}
"""


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Board]:
    register_crm_type("toy", settings=ToySettingsSchema, adapter=ToyAdapter)
    monkeypatch.setenv("TOY_TOKEN", TOKEN)
    board = BOARDS.setdefault("fourth", Board())
    yield board
    BOARDS.pop("fourth", None)
    unregister_crm_type("toy")


@pytest.mark.slow
def test_a_webhook_becomes_a_task_in_the_fourth_crm(toy: Board, tmp_path: Path) -> None:
    runtime = Runtime(load_config_text(CONFIG.format(db=tmp_path / "c.db")))
    runtime.start()
    try:
        toy.deals["7"] = {"title": "Ромашка", "owner": "42"}
        hook = f"{runtime.intake_url}/hooks/toy/board"
        delivery = json.dumps({"event": "deal.created", "deal": "7", "id": "d-1"})
        refused = requests.post(hook, data=delivery, headers={"X-Toy-Token": "wrong-token-1"}, timeout=5)
        assert refused.status_code == 403
        for _ in range(2):  # the second delivery is a duplicate: acknowledged, dropped
            answer = requests.post(hook, data=delivery, headers={"X-Toy-Token": TOKEN}, timeout=5)
            assert answer.status_code == 200, answer.text
        assert answer.json()["duplicates"] == 1
        assert wait_for(lambda: len(toy.tasks) == 1)
        task = toy.tasks[0]
        assert (task["deal"], task["title"], task["responsible"]) == ("7", "Позвонить: Ромашка", "42")
        assert "[crmc:" in task["text"]  # the marker a retried write looks for
        # The task exists once the CRM call returned; its audit line is committed right after.
        assert wait_for(lambda: [a.action for a in runtime.store.audit.for_deal("board", "7")][-1] == "create_task")
        audit = runtime.store.audit.for_deal("board", "7")
        assert "written" in audit[-1].message
    finally:
        runtime.stop()
    assert len(toy.tasks) == 1


def test_the_fourth_crm_uses_only_what_a_crm_package_may() -> None:
    allowed = ("adapters.contracts", "adapters.webhooks", "domain", "tests.toy_crm", "marshmallow")
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            for module in modules:
                top = module.split(".")[0]
                assert module.startswith(allowed) or top in sys.stdlib_module_names, f"{path.name} imports {module}"
