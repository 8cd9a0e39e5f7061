"""Plain field values that read the same whatever the CRM: decimal amounts.

Each CRM's ``mapping`` uses these (addresses: ``adapters.addresses``); no CRM package imports
another's.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any


def to_decimal(value: Any) -> Decimal | None:
    """An amount as a ``Decimal``; None when empty or not a number."""
    if value in (None, "") or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None
