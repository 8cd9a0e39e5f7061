"""Write commands only 1C understands: the domain's commands are deal-shaped, 1C has no deals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from connector.domain import COMMANDS, Command


@dataclass(frozen=True)
class CreateCounterparty(Command):
    """Create a counterparty (``Catalog_Контрагенты``) from a CRM card.

    ``deal_id`` is the deal the card came from (kept for the audit; 1C stores no deal). The
    assistant of seed 001 types these by hand ("Заполнение контактов в 1С по данным карточки в CRM").
    """

    kind: ClassVar[str] = "create_counterparty"
    name: str = ""
    full_name: str = ""
    inn: str = ""
    kpp: str = ""
    phone: str = ""
    email: str = ""
    comment: str = ""


# The outbox rebuilds commands by kind (connector.domain.command_from_payload): register ours so a
# stored create_counterparty row can be dispatched. Why here: domain.py must not know 1C.
COMMANDS.setdefault(CreateCounterparty.kind, CreateCounterparty)
