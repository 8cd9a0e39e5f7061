""" "Did you mean …?" for a misspelt key, action or name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like ``word``, when one is close enough to be the intended one."""
    options = [str(c) for c in choices]
    found = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    if not found:  # case slips ("Title") are a typo too
        lowered = {o.lower(): o for o in options}
        hit = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.6)
        return lowered[hit[0]] if hit else None
    return found[0]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'title'?"`` for the closest choice, else ``""``."""
    match = closest(word, choices)
    return f"; did you mean {match!r}?" if match is not None and match != word else ""
