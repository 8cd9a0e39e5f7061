"""1C's write commands: the counterparty command lives in the domain (it is not 1C-shaped)."""

from __future__ import annotations

from domain import CreateCounterparty

__all__ = ["CreateCounterparty"]
