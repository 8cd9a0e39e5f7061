"""``jsonable`` and ``Command.describe`` answer exactly as the JSON round trip does.

``jsonable`` converts plain values directly and must equal
``json.loads(json.dumps(value, default=_default, ensure_ascii=False))``; ``describe`` formats
the command's values and must equal formatting its stored payload (``to_payload()``): same
values, same types, same key order, same errors.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum, StrEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import (
    AddComment,
    CloseDeal,
    Command,
    CreateCounterparty,
    CreateTask,
    Deal,
    UpdateDeal,
)
from domain.jsonable import _default
from domain.jsonable import jsonable as _jsonable


def round_trip(value: Any) -> Any:
    """What ``jsonable`` must equal."""
    return json.loads(json.dumps(value, default=_default, ensure_ascii=False))


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0 nor True; NaN is NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or repr(a) == repr(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


class Colour(StrEnum):
    RED = "красный"


class Level(IntEnum):
    HIGH = 3


class Plain(Enum):
    A = 1


class Text(str):
    def __str__(self) -> str:  # the encoder writes the text itself, not this
        return "overridden"


class Number(float):
    pass


class Items(list[int]):
    def __iter__(self):  # type: ignore[no-untyped-def]  # the encoder iterates a subclass through this
        return iter([0])


MSK = timezone(timedelta(hours=3))

REPRESENTATIVE: list[Any] = [
    None,
    True,
    False,
    0,
    -7,
    2**70,
    1.5,
    -0.0,
    1e16,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "Подключение №1 — «ёлка»",
    "\ud800 lone surrogate",
    "tab\tand\nnewline \x00",
    Decimal("10.50"),
    Decimal("-0"),
    Decimal("1E+3"),
    Decimal("NaN"),
    datetime(2026, 3, 1, 9, 30, tzinfo=MSK),
    datetime(2026, 3, 1, 9, 30, 0, 123456, tzinfo=UTC),
    datetime(2026, 3, 1, 9, 30),
    (1, "a", (2, 3)),
    [1, [2, [3]]],
    {3, 1, 2},
    frozenset({"x"}),
    [],
    {},
    (),
    {"a": 1, "b": {"c": [Decimal("1.1"), datetime(2026, 1, 2, tzinfo=UTC)]}},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key", "s": "str key"},
    {True: "bool key"},
    {1: "first", "1": "second"},
    {float("nan"): 1, float("inf"): 2, float("-inf"): 3},
    Colour.RED,
    {Colour.RED: Colour.RED},
    Level.HIGH,
    {Level.HIGH: Level.HIGH},
    Text("text"),
    {Text("key"): 1},
    Number(2.5),
    Items([1, 2]),
    {"UF_CRM_SOURCE": "agent", "UF_CRM_AGREED_TIME": "2026-03-02T10:00:00+03:00", "UF_CRM_PAID": "Y"},
]

REFUSED: list[Any] = [
    date(2026, 1, 1),
    Plain.A,
    object(),
    {"nested": [date(2026, 1, 1)]},
    {(1, 2): "tuple key"},
    {date(2026, 1, 1): 1},
    {Decimal("1"): 1},
    10**5000,
    {10**5000: 1},
]


@pytest.mark.parametrize("value", REPRESENTATIVE, ids=repr)
def test_direct_conversion_matches_the_round_trip(value: Any) -> None:
    assert same(_jsonable(value), round_trip(value))


@pytest.mark.parametrize("value", REFUSED, ids=lambda v: type(v).__name__)
def test_what_json_refuses_is_refused_with_its_own_error(value: Any) -> None:
    with pytest.raises(Exception) as old:
        round_trip(value)
    with pytest.raises(Exception) as new:
        _jsonable(value)
    assert type(new.value) is type(old.value)
    assert str(new.value) == str(old.value)


def test_a_cycle_is_refused_as_json_refuses_it() -> None:
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="Circular reference"):
        _jsonable(looped)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.decimals()
    | st.datetimes(timezones=st.just(UTC)),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text() | st.integers() | st.floats() | st.booleans(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_direct_conversion_matches_the_round_trip_on_generated_values(value: Any) -> None:
    assert same(_jsonable(value), round_trip(value))


def test_deal_snapshot_is_json_ready_and_unchanged() -> None:
    fields: dict[Any, Any] = {
        "UF_CRM_SOURCE": "agent",
        "UF_CRM_AMOUNT": Decimal("1500.00"),
        "UF_CRM_TAGS": ("a", "b"),
        "UF_CRM_VISIT": datetime(2026, 3, 2, 10, tzinfo=MSK),
        5: None,
    }
    deal = Deal(crm="b24", id="1", title="Подключение №1", fields=fields)
    snapshot = deal.snapshot()
    assert same(snapshot["fields"], round_trip(fields))
    assert json.loads(json.dumps(snapshot, ensure_ascii=False)) == snapshot


def describe_from_payload(action: Command) -> str:
    """What ``describe`` must equal: formatting the stored payload."""
    payload = action.to_payload()
    if action.kind == "create_task":
        due = str(payload.get("deadline") or "none")[:16].replace("T", " ")
        return f"task {payload['title']!r} for user {payload['responsible_id']} due {due}"
    if action.kind == "update_deal":
        return "set " + ", ".join(f"{k}={v}" for k, v in payload["values"].items())
    if action.kind == "close_deal":
        return f"close as {payload['outcome']}: {payload['reason']}"
    if action.kind == "add_comment":
        return f"comment {payload['text'][:80]!r}"
    if action.kind == "create_counterparty":
        return f"counterparty {payload['name']!r} (INN {payload.get('inn') or '—'}) in {payload['target']}"
    return action.kind


COMMANDS: list[Command] = [
    CreateTask(
        "1",
        title="Выезд к клиенту «Иванов»",
        responsible_id="17",
        deadline=datetime(2026, 3, 2, 18, tzinfo=MSK),
        auditors=("5", "6"),
        priority="high",
    ),
    CreateTask("1", title="no deadline", responsible_id="17"),
    CreateTask("1", title=Colour.RED, responsible_id=Level.HIGH),  # type: ignore[arg-type]
    CreateTask("1", title="t", responsible_id="1", deadline="2026-03-02T18:00:00+03:00"),  # type: ignore[arg-type]
    UpdateDeal("1", values={"responsible_id": "17", "stage": "C1:ROUTE"}),
    UpdateDeal(
        "1",
        values={
            "UF_CRM_AMOUNT": Decimal("10.5"),
            "UF_CRM_WHEN": datetime(2026, 1, 1, tzinfo=UTC),
            "UF_CRM_TAGS": ("a", "b"),
            7: Colour.RED,  # type: ignore[dict-item]
            "f": 1.5,
            "n": None,
            "b": True,
        },
    ),
    UpdateDeal("1", values={}),
    CloseDeal("1", outcome="lost", reason="Нет технической возможности (нет опор)", reason_field="UF_CRM_LOST"),
    AddComment("1", text="Клиент не дома; новое время согласовано. " * 5),
    AddComment("1", text=Text("subclass")),
    CreateCounterparty("1", target="1c", name="ООО «Ромашка»", inn="1655000000"),
    CreateCounterparty("1", target="1c", name="ИП Петров"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.kind)
def test_describe_matches_formatting_the_payload(command: Command) -> None:
    assert command.describe() == describe_from_payload(command)
