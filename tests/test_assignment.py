"""Assignment within a group: round-robin balances what the rule gave, least-loaded what is open now."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.settings import Bitrix24Settings
from domain import Deal, Event, EventKind, UpdateDeal, User
from rules.actions import AssignSpec
from rules.model import CountAssignment, RuleContext
from simulators.bitrix24 import Bitrix24Simulator

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _ctx(**kw) -> RuleContext:  # type: ignore[no-untyped-def]
    deal = Deal(crm="b24", id="1", responsible_id="1")
    return RuleContext(
        deal=deal,
        event=Event("b24", EventKind.DEAL_CREATED, "1", NOW, "k"),
        now=NOW,
        triggers=frozenset({"deal.created"}),
        **kw,
    )


def _chosen(spec: AssignSpec, ctx: RuleContext) -> str:
    results: dict[str, object] = {}
    spec.plan(ctx, results, "0:assign")
    return str(results["assignee"])


def test_round_robin_takes_turns_from_the_counts() -> None:
    spec = AssignSpec(strategy="round_robin", group=["11", "12", "13"], rule="r")
    counts: dict[str, int] = {}
    picks = []
    for _ in range(6):
        results: dict[str, object] = {}
        planned = spec.plan(_ctx(assigned={"r": counts}), results, "0:assign")
        picks.append(results["assignee"])
        for p in planned:
            if isinstance(p.action, CountAssignment):
                counts[p.action.user_id] = counts.get(p.action.user_id, 0) + 1
    assert picks == ["11", "12", "13", "11", "12", "13"]


def test_round_robin_skips_inactive_users() -> None:
    spec = AssignSpec(strategy="round_robin", group=["11", "12"], rule="r")
    assert _chosen(spec, _ctx(users={"11": User("11", active=False)})) == "12"


def test_least_loaded_from_open_deals_in_the_crm() -> None:
    simulator = Bitrix24Simulator(application_token="token-123456", rate=50, burst=50)
    for name in ("a", "b", "c"):
        simulator.add_user(name)
    server = simulator.serve()
    try:
        for user, stage in (("2", "NEW"), ("2", "NEW"), ("3", "NEW"), ("3", "WON"), ("3", "LOSE")):
            simulator.add_deal({"TITLE": "x", "STAGE_ID": stage, "ASSIGNED_BY_ID": user})
        adapter = Bitrix24Adapter(
            "b24",
            Bitrix24Settings(webhook_url=server.base_url + simulator.webhook_base, application_token="t" * 8, rate=50),
        )
        before = simulator.calls["batch"]
        load = adapter.open_deal_counts(["2", "3", "4"])
        assert load == {"2": 2, "3": 1, "4": 0}  # closed deals do not count
        assert simulator.calls["batch"] == before + 1  # one request for the whole group
        spec = AssignSpec(strategy="least_loaded", group=["2", "3", "4"], rule="r")
        assert _chosen(spec, _ctx(workload=load)) == "4"
        planned = spec.plan(_ctx(workload=load), {}, "0:assign")
        assert [p.action for p in planned if isinstance(p.action, UpdateDeal)][0].values == {"responsible_id": "4"}
    finally:
        server.stop()
        simulator.close()
