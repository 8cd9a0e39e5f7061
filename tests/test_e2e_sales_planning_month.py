"""End to end on the Bitrix24 simulator: examples/sales-planning.yaml's monthly report to the
CEO over a scripted March of seed 003's sales ladder, for the indicators that follow meetings by
their kind, deals step by step, a deal's non-standard situation and the contract stage."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.config import load_config_text
from connector.runtime import Runtime
from simulators import SimulatorServer
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import TOKEN

# On the simulator in real threads: the full suite runs it, the fast tier does not.
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sales-planning.yaml"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[Bitrix24Simulator, Runtime, Clock]]:
    clock = Clock(datetime(2026, 2, 20, 7, tzinfo=UTC))
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50, clock=clock)
    for name in ("UF_CRM_NONSTANDARD_AT", "UF_CRM_CLIENT_KIND"):
        simulator.add_deal_user_field(name)
    server: SimulatorServer = simulator.serve()
    monkeypatch.setenv("B24_WEBHOOK_URL", server.base_url + simulator.webhook_base)
    monkeypatch.setenv("B24_APP_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)  # the report's CSV file lands under reports/
    text = EXAMPLE.read_text(encoding="utf-8").replace("sqlite:///data/sales-planning.db", db_url)
    rt = Runtime(load_config_text(text), clock=clock)
    try:
        yield simulator, rt, clock
    finally:
        rt.stop()
        server.stop()
        simulator.close()


def _log(simulator: Bitrix24Simulator, deal: str, user: str, when: str, kind: str) -> None:
    """An activity logged as done on the deal: a call, a plain meeting, or a meeting of the
    portal's own type (PROVIDER_ID REST_APP, as crm.activity.type.add registers them)."""
    fields = {"OWNER_TYPE_ID": "2", "OWNER_ID": deal, "RESPONSIBLE_ID": user, "COMPLETED": "Y", "END_TIME": when}
    if kind == "call":
        fields["TYPE_ID"] = "2"
    elif kind == "meeting":
        fields["TYPE_ID"] = "1"
    else:
        fields |= {"PROVIDER_ID": "REST_APP", "PROVIDER_TYPE_ID": kind}
    simulator.add_activity(fields)


def test_meeting_kinds_deal_steps_nonstandard_and_contracts_in_the_monthly_report(world) -> None:  # type: ignore[no-untyped-def]
    simulator, rt, clock = world
    # Manager 11's deal A: a call and a plain meeting in February (one cycle before the month),
    # then in March a call, a cold meeting (cycle two) and a needs-identification meeting; A's
    # contract is prepared on 20 March.
    a = simulator.add_deal({"TITLE": "A", "ASSIGNED_BY_ID": "11", "CATEGORY_ID": "2", "STAGE_ID": "C2:COLD"})
    _log(simulator, a, "11", "2026-02-20T11:00:00+03:00", "call")
    _log(simulator, a, "11", "2026-02-24T11:00:00+03:00", "meeting")
    _log(simulator, a, "11", "2026-03-02T11:00:00+03:00", "call")
    _log(simulator, a, "11", "2026-03-03T11:00:00+03:00", "COLD_MEETING")
    _log(simulator, a, "11", "2026-03-10T11:00:00+03:00", "NEEDS_MEETING")
    clock.now = datetime(2026, 3, 20, 9, tzinfo=UTC)
    simulator.update_deal(a, {"STAGE_ID": "C2:CONTRACT"})
    # Manager 12's deal B: a call and a cold meeting, no working meeting yet; a non-standard
    # situation recorded on 12 March.
    b = simulator.add_deal({"TITLE": "B", "ASSIGNED_BY_ID": "12", "CATEGORY_ID": "2", "STAGE_ID": "C2:COLD"})
    _log(simulator, b, "12", "2026-03-05T11:00:00+03:00", "call")
    _log(simulator, b, "12", "2026-03-06T11:00:00+03:00", "COLD_MEETING")
    simulator.update_deal(b, {"UF_CRM_NONSTANDARD_AT": "2026-03-12"})
    # Manager 21's deal C: a cold call with no meeting after it; a working meeting planned, not
    # held: it counts nowhere.
    c = simulator.add_deal({"TITLE": "C", "ASSIGNED_BY_ID": "21", "CATEGORY_ID": "2", "STAGE_ID": "C2:COLD"})
    _log(simulator, c, "21", "2026-03-10T11:00:00+03:00", "call")
    simulator.add_activity(
        {"OWNER_TYPE_ID": "2", "OWNER_ID": c, "RESPONSIBLE_ID": "21", "COMPLETED": "N",
         "END_TIME": "2026-03-11T11:00:00+03:00", "PROVIDER_ID": "REST_APP", "PROVIDER_TYPE_ID": "NEEDS_MEETING"}
    )  # fmt: skip

    clock.now = datetime(2026, 4, 3, 6, tzinfo=UTC)  # Friday 3 April, 09:00 Moscow: the report is due
    assert rt.run_report("monthly-to-ceo") == 1
    with open(Path("reports") / "monthly-to-ceo-2026-03.csv", encoding="utf-8") as f:
        facts = {(r["name"] or r["scope"], r["indicator"]): r["fact"] for r in csv.DictReader(f)}
    wanted = ("cold_meetings", "needs_meetings", "meetings", "call_to_meeting", "cold_to_working",
              "call_meeting_cycles", "nonstandard", "contracts_prepared")  # fmt: skip
    got = {(who, name): facts[(who, name)] for who in ("11", "12", "21", "group-1", "all") for name in wanted}
    assert got == {
        ("11", "cold_meetings"): "1", ("11", "call_to_meeting"): "100",
        ("11", "needs_meetings"): "1", ("11", "meetings"): "2", ("11", "cold_to_working"): "100",
        ("11", "call_meeting_cycles"): "2", ("11", "nonstandard"): "0", ("11", "contracts_prepared"): "1",
        ("12", "cold_meetings"): "1", ("12", "call_to_meeting"): "100",
        ("12", "needs_meetings"): "0", ("12", "meetings"): "1", ("12", "cold_to_working"): "0",
        ("12", "call_meeting_cycles"): "1", ("12", "nonstandard"): "1", ("12", "contracts_prepared"): "0",
        ("21", "cold_meetings"): "0", ("21", "call_to_meeting"): "0",
        ("21", "needs_meetings"): "0", ("21", "meetings"): "0", ("21", "cold_to_working"): "",
        ("21", "call_meeting_cycles"): "0", ("21", "nonstandard"): "0", ("21", "contracts_prepared"): "0",
        ("group-1", "cold_meetings"): "2", ("group-1", "call_to_meeting"): "100",
        ("group-1", "needs_meetings"): "1", ("group-1", "meetings"): "3", ("group-1", "cold_to_working"): "50",
        ("group-1", "call_meeting_cycles"): "1.5", ("group-1", "nonstandard"): "1",
        ("group-1", "contracts_prepared"): "1",
        ("all", "cold_meetings"): "2", ("all", "call_to_meeting"): "66.7",
        ("all", "needs_meetings"): "1", ("all", "meetings"): "3", ("all", "cold_to_working"): "50",
        ("all", "call_meeting_cycles"): "1", ("all", "nonstandard"): "1", ("all", "contracts_prepared"): "1",
    }  # fmt: skip
