"""Which deal a 1C document belongs to: ordered strategies from the config, never a guess.

Strategies (``link:`` under the 1C CRM, tried in order):
  {by: comment, pattern: "(?:сделка|deal)\\s*#?(\\d+)"}  a deal id written in the document's comment,
      number or payment purpose (or in the invoice a payment pays)
  {by: deal_field, field: UF_CRM_1C_REF, match: any}  a deal field holding the document's (or its
      invoice's / order's) Ref_Key, else the counterparty's Ref_Key (match: document|counterparty|any)
  {by: inn, field: UF_CRM_INN}  the counterparty's INN in a deal field
The first strategy that finds anything decides: exactly one deal links; several are ambiguous and
leave the document unlinked (a weaker strategy is not asked to break the tie: that would be a guess).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.contracts import DealLookup
from adapters.onec.settings import DEFAULT_PATTERN


@dataclass(frozen=True)
class LinkSubject:
    """What a document offers for linking."""

    texts: tuple[str, ...] = ()  # comment, number, purpose; the related invoice's too
    document_refs: tuple[str, ...] = ()  # the document, the invoice it pays, its order
    counterparty_ref: str = ""
    inn: str = ""


@dataclass(frozen=True)
class LinkResult:
    """The linked deal, or None with the reason (for the audit line)."""

    deal_id: str | None
    reason: str
    strategy: str | None = None


class Linker:
    """Applies the configured strategies against the deal CRM."""

    def __init__(self, strategies: Sequence[Mapping[str, Any]] | None, deal_adapter: DealLookup) -> None:
        self.strategies = list(strategies) if strategies else [{"by": "comment", "pattern": DEFAULT_PATTERN}]
        self.deal_adapter = deal_adapter
        self._patterns = {
            i: re.compile(str(s.get("pattern") or DEFAULT_PATTERN), re.IGNORECASE)
            for i, s in enumerate(self.strategies)
            if s.get("by") == "comment"
        }

    def link(self, subject: LinkSubject) -> LinkResult:
        """The one deal ``subject`` belongs to, or None and why."""
        tried: list[str] = []
        for i, strategy in enumerate(self.strategies):
            by = str(strategy.get("by"))
            found, label = self._candidates(i, strategy, subject)
            tried.append(label)
            if found is None:
                continue
            name = f"{by}:{strategy.get('field')}" if strategy.get("field") else by
            ids, why = found
            if len(ids) == 1:
                return LinkResult(ids[0], why, name)
            if not ids:
                return LinkResult(None, why, name)
            return LinkResult(None, f"ambiguous by {name}: deals {', '.join(ids)} ({why})", name)
        return LinkResult(None, "no deal found (" + "; ".join(tried) + ")")

    def _candidates(
        self, index: int, strategy: Mapping[str, Any], subject: LinkSubject
    ) -> tuple[tuple[list[str], str] | None, str]:
        """(deal ids, explanation) when the strategy found anything, else None; and what was tried."""
        by = strategy.get("by")
        if by == "comment":
            regex = self._patterns[index]
            ids = _unique(m.group(1) for text in subject.texts if text for m in regex.finditer(text))
            if not ids:
                return None, "no deal id in comment or number"
            existing = self.deal_adapter.get_deals(ids)
            if len(ids) == 1 and ids[0] not in existing:
                return ([], f"deal {ids[0]} named in the document does not exist"), "comment"
            return (ids, "deal id in the document's text"), "comment"
        field = str(strategy.get("field"))
        if by == "deal_field":
            match = strategy.get("match", "any")
            groups: list[tuple[str, tuple[str, ...]]] = []
            if match in ("document", "any"):
                groups.append(("document", subject.document_refs))
            if match in ("counterparty", "any"):
                groups.append(("counterparty", (subject.counterparty_ref,) if subject.counterparty_ref else ()))
            for what, refs in groups:
                ids = _unique(d for ref in refs if ref for d in self.deal_adapter.find_deal_ids(field, ref))
                if ids:
                    return (ids, f"{field} holds the {what}'s Ref_Key"), f"{field}"
            return None, f"no deal with the Ref_Key in {field}"
        if by == "inn":
            if not subject.inn:
                return None, "counterparty has no INN"
            ids = _unique(self.deal_adapter.find_deal_ids(field, subject.inn))
            if ids:
                return (ids, f"{field} holds INN {subject.inn}"), field
            return None, f"no deal with INN {subject.inn} in {field}"
        return None, f"unknown strategy {by!r}"


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values))
