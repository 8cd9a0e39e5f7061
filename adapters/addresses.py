"""Russian postal addresses as one line of text, split into the parts territories match on.

Both a Bitrix24 ``address`` user field and a Pipedrive address field hold such a line.
"""

from __future__ import annotations

import re
from typing import Any

from domain import Location

_POSTCODE = re.compile(r"\b(\d{6})\b")
_COORDS = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*;\s*(-?\d+(?:\.\d+)?)\s*$")
_DISTRICT_HINTS = ("р-н", "район", "мкр", "микрорайон", "district")
_STREET_HINTS = (
    "ул.",
    "улица",
    "пр-т",
    "проспект",
    "пер.",
    "переулок",
    "ш.",
    "шоссе",
    "наб.",
    "бульвар",
    "б-р",
    "пр.",
    "street",
    "st.",
)
_CITY_PREFIX = re.compile(r"^(г\.|город|гор\.)\s*", re.IGNORECASE)


def parse_address(value: Any) -> Location:
    """Parse an ``address`` user field (``"text|lat;lon|id"``) or plain address text.

    The text is split on commas: a six-digit part is the postcode, a part with a district
    or street word is that, the first remaining part is the city.
    """
    text = value if isinstance(value, str) else ""
    lat = lon = None
    if "|" in text:
        pieces = text.split("|")
        text = pieces[0]
        if len(pieces) > 1 and (m := _COORDS.match(pieces[1])):
            lat, lon = float(m.group(1)), float(m.group(2))
    postcode = ""
    city = district = street = ""
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low = part.lower()
        if m := _POSTCODE.search(part):
            if part == m.group(1):
                postcode = m.group(1)
                continue
            postcode = postcode or m.group(1)
        if not district and any(h in low for h in _DISTRICT_HINTS):
            district = part
        elif not street and any(low.startswith(h) or f" {h}" in low for h in _STREET_HINTS):
            street = part
        elif not city and not any(ch.isdigit() for ch in part):
            city = strip_city_prefix(part)
    return Location(text=text.strip(), city=city, district=district, street=street, postcode=postcode, lat=lat, lon=lon)


def strip_city_prefix(text: str) -> str:
    """A city's name without a leading "г." / "город" / "гор."."""
    return _CITY_PREFIX.sub("", text)
