"""Territory table: which captain service engineer answers for a location.

A territory matches on any of city, district, street and postcode prefix (``"4201*"``);
every key it names must match. The most specific match wins: more keys, then a longer
postcode prefix, then the earlier row.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from domain import Location, User

_NOISE = re.compile(
    r"\b(г|гор|город|р-н|район|мкр|микрорайон|ул|улица|пр-т|проспект|пер|переулок|ш|шоссе|наб|набережная|"
    r"б-р|бульвар)\b\.?",
    re.IGNORECASE,
)
_SPACES = re.compile(r"[\s.,]+")

MATCH_KEYS = ("city", "district", "street", "postcode")


# Every deal's address is matched against every territory, and addresses repeat (a city,
# its districts): the two regular-expression passes run once per distinct text.
@functools.lru_cache(maxsize=4096)
def normalise(text: str) -> str:
    """Case, ё/е, punctuation and words like "г." or "район" do not decide a match."""
    text = text.lower().replace("ё", "е")
    text = _NOISE.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True)
class Territory:
    """One row of the table."""

    match: Mapping[str, str]
    captain: str
    backup: str | None = None
    name: str = ""
    _norm: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for key, value in self.match.items():
            self._norm[key] = value.rstrip("*").strip() if key == "postcode" else normalise(value)

    def score(self, location: Location) -> tuple[int, int] | None:
        """(keys matched, postcode prefix length) when every key matches, else None."""
        for key, want in self._norm.items():
            if key == "postcode":
                if not want or not location.postcode.startswith(want):
                    return None
            else:
                have = normalise(getattr(location, key))
                if not have or not (have == want or f" {want} " in f" {have} "):
                    return None
        return len(self._norm), len(self._norm.get("postcode", ""))

    def describe(self) -> str:
        return self.name or ", ".join(f"{k}={v}" for k, v in self.match.items())


@dataclass(frozen=True)
class CaptainChoice:
    """The outcome of a lookup, with the reason written to the audit."""

    user_id: str | None
    territory: Territory | None
    reason: str


def choose_captain(
    territories: Sequence[Territory],
    location: Location | None,
    users: Mapping[str, User],
    fallback: str | None,
) -> CaptainChoice:
    """Pick the captain for ``location``; ``users`` tells who is active (unknown = active)."""
    best: tuple[tuple[int, int], int, Territory] | None = None
    if location is not None:
        for index, territory in enumerate(territories):
            score = territory.score(location)
            if score is not None and (best is None or score > best[0]):
                best = (score, index, territory)
    if best is None:
        where = location.text if location and location.text else "no address"
        return CaptainChoice(fallback, None, f"no territory matches ({where}); fallback user {fallback}")
    territory = best[2]
    if _active(users, territory.captain):
        return CaptainChoice(territory.captain, territory, f"territory {territory.describe()}")
    if territory.backup and _active(users, territory.backup):
        return CaptainChoice(
            territory.backup,
            territory,
            f"territory {territory.describe()}: captain {territory.captain} inactive, backup {territory.backup}",
        )
    return CaptainChoice(
        fallback,
        territory,
        f"territory {territory.describe()}: captain and backup inactive; fallback user {fallback}",
    )


def _active(users: Mapping[str, User], user_id: str) -> bool:
    user = users.get(user_id)
    return user is None or user.active
