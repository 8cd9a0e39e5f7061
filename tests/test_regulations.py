"""docs/regulations.md stays true: every in-scope requirement names the tests that prove it
(or what it waits for), every named test exists, every example rule answers to a requirement,
and the summary counts are those of the rows."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from connector.config import load_config
from tests.test_catalogue import ENV, EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "regulations.md"
REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([^\]]+)\])?`")
RULE_NAME = re.compile(r"`([a-z0-9]+(?:-[a-z0-9]+)+)`")


def rows() -> list[list[str]]:
    out = []
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if re.match(r"^\| S\d{3}\.\d+ \|", line):
            cells = [c.strip() for c in line.strip()[1:-1].split(" | ")]
            assert len(cells) == 6, f"{cells[0]}: {len(cells)} cells, 6 expected"
            out.append(cells)
    return out


def in_scope(status: str) -> bool:
    return not status.startswith("out of scope")


def test_ids_are_unique_and_every_seed_is_there() -> None:
    ids = [r[0] for r in rows()]
    assert len(ids) == len(set(ids))
    assert {i.split(".")[0] for i in ids} == {"S000", "S001", "S002", "S003", "S004"}


def test_every_in_scope_row_names_its_tests_or_what_it_waits_for() -> None:
    bare = []
    for rid, _, _, _, status, test in rows():
        if not in_scope(status):
            assert test == "n/a", f"{rid}: out of scope, so its test is n/a"
        elif not (REF.search(test) or re.fullmatch(r"pending: .+ \(.+\)", test)):
            bare.append(rid)
    assert not bare, f"in-scope rows with no test and no pending construct: {bare}"


def test_every_named_test_exists() -> None:
    sources: dict[str, str] = {}
    wrong = []
    for rid, *_, test in rows():
        for path, name, case in REF.findall(test):
            text = sources.setdefault(path, (ROOT / path).read_text(encoding="utf-8") if (ROOT / path).exists() else "")
            if f"def {name}(" not in text or (case and f'id="{case}"' not in text):
                wrong.append(f"{rid}: {path}::{name}[{case}]")
    assert not wrong, "tests named in docs/regulations.md that do not exist:\n" + "\n".join(wrong)


def test_every_example_rule_answers_to_a_requirement() -> None:
    table = rows()
    named = {name for r in table for name in RULE_NAME.findall(r[3])}
    waiting = " ".join(r[5] for r in table if r[5].startswith("pending:"))
    known: set[str] = set()
    for path in sorted(EXAMPLES.glob("*.yaml")):
        config = load_config(path, ENV)
        rules = {r.name for r in config.rules}
        known |= rules | {r.name for r in config.reports} | {r.name for r in config.recurring}
        if path.name in waiting:
            continue  # its rows are still being written by the helper named there
        missing = rules - named
        assert not missing, f"{path.name}: rules named in no requirement row: {sorted(missing)}"
    stale = {n for n in named if n.split("-")[0] in ("isp", "b2b", "pd", "money")} - known
    assert not stale, f"docs/regulations.md names rules no example has: {sorted(stale)}"


def test_summary_counts_are_those_of_the_rows() -> None:
    counted: dict[str, Counter[str]] = {}
    for rid, _, _, _, status, _ in rows():
        c = counted.setdefault(rid[1:4], Counter())
        c["rows"] += 1
        if in_scope(status):
            c["in"] += 1
            c[status.split(":")[0].split(" ")[0]] += 1
        else:
            c["out"] += 1
    keys = ("rows", "in", "out", "ok", "partial", "wrong", "missing")
    total: Counter[str] = Counter()
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| (00\d|all) \|", line)
        if not match:
            continue
        figures = [int(x) for x in line.strip()[1:-1].split("|")[3:]]
        seed = match.group(1)
        expected = total if seed == "all" else counted[seed]
        assert figures == [expected[k] for k in keys], f"summary row {seed}: {figures}"
        if seed != "all":
            total.update(counted[seed])
