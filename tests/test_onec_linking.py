"""Linking 1C documents to deals: ordered strategies, exactly one match links, never a guess."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from adapters.onec.linking import Linker, LinkSubject
from domain import Deal

DOC, INV, PARTY = (
    "aaaaaaaa-0000-0000-0000-000000000001",
    "aaaaaaaa-0000-0000-0000-000000000002",
    "aaaaaaaa-0000-0000-0000-000000000003",
)


class FakeDeals:
    """Deals as field dicts; records every search."""

    def __init__(self, deals: dict[str, dict[str, str]]) -> None:
        self.name = "b24"
        self.deals = deals
        self.searches: list[tuple[str, str]] = []

    def get_deals(self, deal_ids: Iterable[str]) -> dict[str, Deal]:
        return {d: Deal(crm="b24", id=d) for d in deal_ids if d in self.deals}

    def find_deal_ids(self, field: str, value: str, limit: int = 2) -> list[str]:
        self.searches.append((field, value))
        return [d for d, f in self.deals.items() if f.get(field) == value][:limit]


STRATEGIES: list[dict[str, Any]] = [
    {"by": "comment", "pattern": r"(?:сделка|deal)\s*#?(\d+)"},
    {"by": "deal_field", "field": "UF_CRM_1C_REF"},
    {"by": "inn", "field": "UF_CRM_INN"},
]


@pytest.mark.parametrize("text", ["Сделка #15, макет согласован", "по сделке: сделка 15", "DEAL 15", "deal#15"])
def test_deal_id_in_the_comment_links(text: str) -> None:
    deals = FakeDeals({"15": {}, "16": {}})
    result = Linker(STRATEGIES, deals).link(LinkSubject(texts=(text,)))
    assert (result.deal_id, result.strategy) == ("15", "comment")
    assert deals.searches == []  # the first strategy decided


def test_two_deal_ids_in_the_text_are_ambiguous_and_weaker_strategies_are_not_asked() -> None:
    deals = FakeDeals({"15": {}, "16": {"UF_CRM_INN": "7701234567"}})
    result = Linker(STRATEGIES, deals).link(LinkSubject(texts=("сделка 15", "сделка 16"), inn="7701234567"))
    assert result.deal_id is None and "ambiguous by comment" in result.reason and "15, 16" in result.reason
    assert deals.searches == []


def test_a_deal_named_in_the_comment_that_does_not_exist_is_unlinked() -> None:
    result = Linker(STRATEGIES, FakeDeals({"15": {}})).link(LinkSubject(texts=("сделка 999",)))
    assert result.deal_id is None and "deal 999" in result.reason


def test_deal_field_prefers_document_refs_over_the_counterparty() -> None:
    # The client has two deals (its Ref_Key on both); the invoice's Ref_Key sits on one of them.
    deals = FakeDeals({"1": {"UF_CRM_1C_REF": PARTY}, "2": {"UF_CRM_1C_REF": PARTY}, "3": {"UF_CRM_1C_REF": INV}})
    subject = LinkSubject(texts=("ТД00-000077",), document_refs=(DOC, INV), counterparty_ref=PARTY)
    result = Linker(STRATEGIES, deals).link(subject)
    assert (result.deal_id, result.strategy) == ("3", "deal_field:UF_CRM_1C_REF")


def test_counterparty_ref_links_when_it_is_on_one_deal_only() -> None:
    deals = FakeDeals({"1": {"UF_CRM_1C_REF": PARTY}, "2": {}})
    result = Linker(STRATEGIES, deals).link(LinkSubject(document_refs=(DOC,), counterparty_ref=PARTY))
    assert result.deal_id == "1"


def test_counterparty_on_two_deals_is_ambiguous() -> None:
    deals = FakeDeals({"1": {"UF_CRM_1C_REF": PARTY}, "2": {"UF_CRM_1C_REF": PARTY}})
    result = Linker(STRATEGIES, deals).link(LinkSubject(document_refs=(DOC,), counterparty_ref=PARTY))
    assert result.deal_id is None and "ambiguous" in result.reason


def test_match_document_only_ignores_the_counterparty() -> None:
    deals = FakeDeals({"1": {"UF_CRM_1C_REF": PARTY}})
    linker = Linker([{"by": "deal_field", "field": "UF_CRM_1C_REF", "match": "document"}], deals)
    assert linker.link(LinkSubject(document_refs=(DOC,), counterparty_ref=PARTY)).deal_id is None


def test_inn_links_one_deal_and_refuses_two() -> None:
    one = FakeDeals({"7": {"UF_CRM_INN": "7701234567"}})
    assert Linker(STRATEGIES, one).link(LinkSubject(inn="7701234567")).deal_id == "7"
    two = FakeDeals({"7": {"UF_CRM_INN": "7701234567"}, "8": {"UF_CRM_INN": "7701234567"}})
    result = Linker(STRATEGIES, two).link(LinkSubject(inn="7701234567"))
    assert result.deal_id is None and "ambiguous by inn:UF_CRM_INN" in result.reason


def test_nothing_found_explains_every_strategy_tried() -> None:
    result = Linker(STRATEGIES, FakeDeals({})).link(LinkSubject(texts=("без ссылок",), document_refs=(DOC,)))
    assert result.deal_id is None and result.reason.startswith("no deal found")
    assert "comment" in result.reason and "UF_CRM_1C_REF" in result.reason and "no INN" in result.reason


def test_order_of_strategies_is_the_configs() -> None:
    deals = FakeDeals({"15": {}, "7": {"UF_CRM_INN": "7701234567"}})
    subject = LinkSubject(texts=("сделка 15",), inn="7701234567")
    assert Linker(STRATEGIES, deals).link(subject).deal_id == "15"
    assert Linker([STRATEGIES[2], STRATEGIES[0]], deals).link(subject).deal_id == "7"


def test_default_strategy_is_the_comment() -> None:
    assert Linker(None, FakeDeals({"5": {}})).link(LinkSubject(texts=("Сделка 5",))).deal_id == "5"
