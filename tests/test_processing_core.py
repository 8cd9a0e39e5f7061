"""The processing core the worker and the dry-run share: errors per rule, not per run; the
dry-run sees the rules' own writes and the workload as the live connector would."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from adapters.contracts import DealSource
from connector.config import load_config_text
from connector.dryrun.replay import HistoryItem, Replay
from connector.dryrun.report import write_csv
from connector.runtime import build_calendar
from connector.status import gather
from connector.storage.models import InboxRow, OutboxRow
from connector.storage.store import Store
from connector.worker import Worker
from domain import Deal, Event, EventKind, User
from domain.clock import utcnow
from tests.test_dispatcher import Recording

MSK = ZoneInfo("Europe/Moscow")

CONFIG = """
storage: {url: "sqlite://"}
crms: {b24: {type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/c/", application_token: "tok-12345"}}
rules:
  - name: broken
    crm: b24
    on: [deal.created]
    do:
      # `check` accepts it; it fails only when evaluated
      - create_task: {title: "{{ (deal.amount or 0) // 0 }}", responsible: "1", due: 1h}
  - name: sound
    crm: b24
    on: [deal.created]
    do:
      - create_task: {title: "Позвонить: {{ deal.title }}", responsible: "1", due: 1h}
"""

WRITES_BACK = """
storage: {url: "sqlite://"}
crms: {b24: {type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/c/", application_token: "tok-12345"}}
rules:
  - name: route
    crm: b24
    on: [deal.created]
    do:
      - assign: {strategy: least_loaded, group: ["7", "8"]}
      - update_fields: {UF_CRM_ROUTED: "Y"}
  - name: after-routing
    crm: b24
    on: [deal.updated]
    when: {field: UF_CRM_ROUTED, changed: true}
    do:
      - create_task: {title: "Связаться: {{ deal.title }}", responsible: responsible, due: 1h}
"""


def _deal(deal_id: str, owner: str, at: datetime, stage: str = "NEW") -> Deal:
    return Deal(
        crm="b24",
        id=deal_id,
        title=f"Сделка {deal_id}",
        stage=stage,
        pipeline="0",
        responsible_id=owner,
        created_at=at,
        updated_at=at,
        fields={"ASSIGNED_BY_ID": owner, "STAGE_ID": stage},
    )


class OneDeal(Recording, DealSource):
    def get_deals(self, deal_ids: Iterable[str]) -> dict[str, Deal]:
        return {i: _deal(i, "1", utcnow()) for i in deal_ids}

    def changed_deals(self, since: datetime | None) -> Iterator[Deal]:
        return iter(())

    def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        return {}

    def open_deal_counts(self, user_ids: list[str]) -> dict[str, int]:
        return {}


def test_a_broken_rule_fails_alone_in_the_worker() -> None:
    cfg = load_config_text(CONFIG)
    store = Store("sqlite://")
    now = utcnow()
    store.inbox.add(Event("b24", EventKind.DEAL_CREATED, "5", now, "k1"), now)
    Worker(cfg, store, {"b24": OneDeal()}, clock=lambda: now, calendar=build_calendar(cfg)).tick()
    with store.sessions() as s:
        assert s.scalars(select(InboxRow)).one().status == "done"
        assert [r.rule for r in s.scalars(select(OutboxRow))] == ["sound"]
    failed = [a for a in store.audit.for_deal("b24", "5") if a.action == "rule_error"]
    assert [a.rule for a in failed] == ["broken"] and "division" in failed[0].message
    assert any("broken" in line and "rule error" in line for line in gather(store, cfg, now).attention)


def test_a_broken_rule_fails_alone_in_the_dry_run(tmp_path: Path) -> None:
    cfg = load_config_text(CONFIG)
    at = datetime(2026, 11, 23, 10, tzinfo=MSK)
    result = Replay(cfg, build_calendar(cfg)).run([HistoryItem(at, EventKind.DEAL_CREATED, _deal("5", "1", at))])
    assert [(rule, "division" in error) for rule, error in result.errors] == [("broken", True)]
    assert ("sound", "create_task") in result.by_rule and ("broken", "rule_error") in result.by_rule
    write_csv(result, tmp_path / "out.csv")
    rows = list(csv.DictReader((tmp_path / "out.csv").open(encoding="utf-8")))
    assert {(r["rule"], r["action"]) for r in rows} >= {("broken", "rule_error"), ("sound", "create_task")}


def test_the_dry_run_sees_its_own_writes_and_the_workload() -> None:
    cfg = load_config_text(WRITES_BACK)
    at = datetime(2026, 11, 23, 10, tzinfo=MSK)
    history = [
        HistoryItem(at, EventKind.DEAL_CREATED, _deal("1", "7", at, stage="PREPARATION")),  # 7 has an open deal
        HistoryItem(at + timedelta(hours=1), EventKind.DEAL_CREATED, _deal("2", "1", at + timedelta(hours=1))),
        # a person changes the title later: our assignment and field still stand
        HistoryItem(
            at + timedelta(hours=2),
            EventKind.DEAL_UPDATED,
            Deal(**{**_deal("2", "1", at + timedelta(hours=1)).__dict__, "title": "Новое название"}),
        ),
    ]
    replay = Replay(cfg, build_calendar(cfg))
    result = replay.run(history)
    assigned = [o.detail for o in result.outcomes if o.rule == "route" and o.action == "update_deal"]
    # Deal 1 went to 8 (7 already had one open deal), deal 2 then to 7 (8 had deal 1 by then).
    assert assigned[:2] == ["set responsible_id=8", "set UF_CRM_ROUTED=Y"]
    assert assigned[2:] == ["set responsible_id=7", "set UF_CRM_ROUTED=Y"]
    tasks = [o.detail for o in result.outcomes if o.rule == "after-routing"]
    assert len(tasks) == 2 and "for user 7" in tasks[1]
    kept = replay._deals[("b24", "2")]
    assert (kept.title, kept.responsible_id, kept.fields["UF_CRM_ROUTED"]) == ("Новое название", "7", "Y")
    assert kept.fields["ASSIGNED_BY_ID"] == "7"
    assert not result.not_simulated


def test_the_cores_quick_rule_context_is_the_dataclass_one() -> None:
    """``RuleContext.for_event`` sets the fields in one step: it must take every field (one
    added later too) and make what the dataclass makes."""
    import dataclasses
    import inspect
    from datetime import UTC

    from rules.calendar import WorkCalendar
    from rules.model import RuleContext

    names = [f.name for f in dataclasses.fields(RuleContext)]
    assert sorted(inspect.signature(RuleContext.for_event).parameters) == sorted(names)
    now = datetime(2026, 11, 23, 10, tzinfo=UTC)
    values: dict[str, object] = {name: None for name in names}
    values |= {
        "deal": Deal(crm="b24", id="1"),
        "event": Event("b24", EventKind.DEAL_UPDATED, "1", now, "k"),
        "now": now,
        "triggers": frozenset({"deal.updated"}),
        "changes": {"stage": ("A", "B")},
        "users": {},
        "territories": (),
        "calendar": WorkCalendar(),
        "workload": {"7": 2},
        "assigned": {},
        "deadlines": {},
    }
    quick, plain = RuleContext.for_event(**values), RuleContext(**values)  # type: ignore[arg-type]
    assert quick == plain and quick.__dict__ == plain.__dict__
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.now = now  # type: ignore[misc]


def test_the_quick_constructors_make_what_the_dataclasses_make() -> None:
    """``Event.of``, ``Decision.of`` and ``Outcome.of`` set the fields in one step: each must
    take every field (one added later too) and make what the dataclass makes."""
    import dataclasses
    import inspect
    from datetime import UTC

    from connector.dryrun.replay import Outcome
    from domain import EventSource
    from rules.model import Decision, Note

    now = datetime(2026, 11, 23, 10, tzinfo=UTC)
    values: dict[type, dict[str, object]] = {
        Event: {
            "crm": "b24",
            "kind": EventKind.DEAL_UPDATED,
            "deal_id": "1",
            "occurred_at": now,
            "dedup_key": "k",
            "source": EventSource.REPLAY,
            "previous": {"stage": "A"},
            "data": {"deadline": "d"},
            "raw": {"x": 1},
        },
        Decision: {"rule": "r", "key": "r|b24|1|once|0:x", "action": Note("n"), "triggers": frozenset({"t"})},
        Outcome: {
            "at": now,
            "crm": "b24",
            "deal_id": "1",
            "rule": "r",
            "trigger": "t",
            "action": "note",
            "detail": "d",
            "key": "k",
        },
    }
    for cls, given in values.items():
        names = [f.name for f in dataclasses.fields(cls)]
        assert sorted(inspect.signature(cls.of).parameters) == sorted(names), cls  # type: ignore[attr-defined]
        quick, plain = cls.of(**given), cls(**given)  # type: ignore[attr-defined]
        assert quick == plain and quick.__dict__ == plain.__dict__, cls
        with pytest.raises(dataclasses.FrozenInstanceError):
            quick.crm = "other"
    # Event's defaults: fresh dictionaries, as the dataclass's default factories give.
    made = Event.of(
        crm="b24", kind=EventKind.DEAL_UPDATED, deal_id="1", occurred_at=now, dedup_key="k", source=EventSource.REPLAY
    )
    assert made == Event("b24", EventKind.DEAL_UPDATED, "1", now, "k", EventSource.REPLAY)
    assert made.data == {} and made.data is not Event.of(**values[Event] | {"data": None}).data  # type: ignore[arg-type]


ONCE_PER_DEAL = """
storage: {url: "sqlite://"}
calendar: {country: RU, timezone: Europe/Moscow, work_hours: "09:00-18:00"}
crms: {b24: {type: bitrix24, webhook_url: "https://p.bitrix24.ru/rest/1/c/", application_token: "tok-12345"}}
deadlines:
  connection: {due: 3 working days, start_from: created, remind_before: 4 working hours}
rules:
  - name: start
    crm: b24
    on: [deal.created, deal.updated]
    when: {field: UF_CRM_FLAG, equals: "Y"}
    once_per: deal
    do:
      - start_deadline: connection
"""


class _Memory:
    """The core's memory of one deal whose every decision key is (or is not) taken."""

    def __init__(self, decided: bool) -> None:
        self.asked: list[list[str]] = []
        self._decided = decided

    def snapshot(self, crm: str, deal_id: str) -> dict[str, object] | None:
        return None

    def running_deadlines(self, crm: str, deal_id: str) -> list[object]:
        return []

    def deadline(self, crm: str, deal_id: str, name: str) -> None:
        return None

    def assignments(self) -> dict[str, dict[str, int]]:
        return {}

    def decided(self, keys: list[str]) -> bool:
        self.asked.append(list(keys))
        return self._decided


def test_a_once_per_deal_rule_already_decided_is_not_planned_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import rules.deadlines
    from connector.processing import Processor

    cfg = load_config_text(ONCE_PER_DEAL)
    processor = Processor(cfg, build_calendar(cfg))
    at = datetime(2026, 11, 23, 10, tzinfo=MSK)
    deal = Deal(**{**_deal("5", "1", at).__dict__, "fields": {"UF_CRM_FLAG": "Y"}})
    event = Event("b24", EventKind.DEAL_UPDATED, "5", at, "k1")
    planned: list[str] = []
    real_start = rules.deadlines.start

    def start(definition: rules.deadlines.DeadlineDef, ctx: object, **kw: bool) -> object:
        planned.append(definition.name)
        return real_start(definition, ctx, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rules.deadlines, "start", start)

    fresh = _Memory(decided=False)
    decisions = processor.process(event, deal, fresh, now=at).decisions  # type: ignore[arg-type]
    assert [d.key for d in decisions] == ["start|b24|5|once|0:start_deadline"] and planned == ["connection"]
    assert fresh.asked == [["start|b24|5|once|0:start_deadline"]]

    taken = _Memory(decided=True)
    assert processor.process(event, deal, taken, now=at).decisions == []  # type: ignore[arg-type]
    assert planned == ["connection"] and taken.asked == fresh.asked


def test_a_failing_condition_is_still_seen_when_the_rule_was_decided() -> None:
    import dataclasses

    from connector.processing import Processor
    from rules.model import RuleContext

    def failing(ctx: RuleContext) -> bool:
        raise ValueError("this deal's value")

    cfg = load_config_text(ONCE_PER_DEAL)
    cfg.rules[:] = [dataclasses.replace(cfg.rules[0], condition=failing)]
    at = datetime(2026, 11, 23, 10, tzinfo=MSK)
    processed = Processor(cfg, build_calendar(cfg)).process(
        Event("b24", EventKind.DEAL_UPDATED, "5", at, "k1"),
        _deal("5", "1", at),
        _Memory(decided=True),  # type: ignore[arg-type]
        now=at,
    )
    assert [e.rule for e in processed.errors] == ["start"]


def test_the_worker_asks_its_database_what_was_decided() -> None:
    from connector.storage.audit import Audit
    from connector.worker import _KeptInDatabase
    from domain import CreateTask

    store = Store("sqlite://")
    now = utcnow()
    with store.sessions() as session:
        Audit.record(
            session, at=now, crm="b24", deal_id="5", rule="r", trigger="t", action="note", message="m", key="a"
        )
        store.outbox.stage(session, key="b", crm="b24", command=CreateTask("5"), rule="r", now=now, trigger="t")
        memory = _KeptInDatabase(session)
        assert memory.decided(["a"]) and memory.decided(["b"]) and memory.decided(["a", "b"])
        assert not memory.decided(["a", "c"]) and not memory.decided(["c"])
