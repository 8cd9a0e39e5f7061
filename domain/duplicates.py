"""Records of a CRM that share a client's phone, e-mail or INN with a deal."""

from __future__ import annotations

from dataclasses import dataclass

# What a duplicate can be found by: a normalised phone (E.164), a lower-cased e-mail, an INN.
DUPLICATE_KEYS = ("phone", "email", "inn")


@dataclass(frozen=True)
class Duplicate:
    """Another record with the same value: ``kind`` in neutral words (deal, contact, company,
    lead), its id in its CRM, and what matched."""

    kind: str
    id: str
    by: str
    value: str

    def describe(self) -> str:
        return f"{self.kind} {self.id} ({self.by} {self.value})"
