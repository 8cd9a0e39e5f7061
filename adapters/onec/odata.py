"""The OData 3.0 wire forms the 1C adapter writes and reads: literals for ``$filter`` and entity
keys, the query string, and 1C's dates.

1C reads a ``+`` in the query string as a plus, never a space, so ``build_query`` encodes spaces
as ``%20``. Dates in 1C are naive wall time in the base's zone: ``datetime_literal`` refuses an
aware value rather than guess its zone.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S"

_SAFE_QUERY = "$'(),:/*;"  # left alone by build_query; space, '+', '&', '=', '#', '%' are encoded
_GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DT_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,7}))?)?")


@dataclass(frozen=True)
class Guid:
    """A guid value, so ``format_literal`` writes ``guid'…'`` rather than a string."""

    value: str


@dataclass(frozen=True)
class TypedRef:
    """``cast(guid'…', 'Catalog_X')``: a reference of a known type, for composite fields."""

    guid: str
    type_name: str  # without the "StandardODATA." prefix


def is_guid(text: Any) -> bool:
    """True for a canonical 8-4-4-4-12 hex guid string."""
    return isinstance(text, str) and _GUID_RE.fullmatch(text) is not None


def guid_literal(value: str | uuid.UUID | Guid) -> str:
    """``guid'…'`` for a guid string or UUID; ValueError for anything else."""
    text = value.value if isinstance(value, Guid) else str(value)
    if not is_guid(text):
        raise ValueError(f"not a guid: {text!r}")
    return f"guid'{text.lower()}'"


def datetime_literal(value: datetime | date) -> str:
    """``datetime'2024-01-01T00:00:00'``: 1C dates are naive wall time, so aware values are refused."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError("1C dates carry no time zone: convert to the base's local time first")
        return f"datetime'{value.strftime(DATETIME_FORMAT)}'"
    return f"datetime'{value.isoformat()}T00:00:00'"


def string_literal(value: str) -> str:
    """``'…'`` with every quote doubled."""
    return "'" + value.replace("'", "''") + "'"


def format_literal(value: Any) -> str:
    """The OData 3.0 literal for a Python value (a plain ``str`` is a string: wrap guids in ``Guid``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Guid, uuid.UUID)):
        return guid_literal(value)
    if isinstance(value, TypedRef):
        return f"cast({guid_literal(value.guid)}, {string_literal(value.type_name)})"
    if isinstance(value, (datetime, date)):
        return datetime_literal(value)
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return string_literal(value)
    raise TypeError(f"no OData literal for {type(value).__name__}")


def build_query(params: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """A query string 1C reads right: UTF-8 percent-encoding, spaces as ``%20`` (never ``+``)."""
    pairs = params.items() if isinstance(params, Mapping) else params
    return "&".join(f"{quote(str(k), safe='$')}={quote(str(v), safe=_SAFE_QUERY)}" for k, v in pairs)


def parse_datetime(text: str) -> datetime | None:
    """A 1C/OData datetime string (no zone) as a naive datetime, None when it is not one."""
    m = _DT_RE.fullmatch(text) if isinstance(text, str) else None
    if not m:
        return None
    y, mo, d, h, mi, s, frac = m.groups()
    try:
        micro = int((frac or "0").ljust(6, "0")[:6])
        return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0), micro)
    except ValueError:
        return None
