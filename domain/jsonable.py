"""JSON-ready copies of the plain values deals and commands hold."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any


def jsonable(value: Any) -> Any:
    """``value`` exactly as ``json.loads(json.dumps(value, default=_default, ensure_ascii=False))``
    gives it back.

    Plain values (what deals and commands hold) are copied directly: a dry-run converts a
    snapshot per event and every command's values, and the JSON round trip makes a replay
    about 1.5 times slower (bench/dry_run.py). Anything else (a subclass, a key that is not
    text, a cycle, an integer too long for text) takes the round trip itself, so json
    decides and raises.
    """
    cls = type(value)
    if cls is str:
        return value  # most values asked for (a command's texts for the audit line)
    if cls is datetime:
        return value.isoformat()
    try:
        return _convert(value)
    except (_NotPlain, RecursionError):
        return json.loads(json.dumps(value, default=_default, ensure_ascii=False))


class _NotPlain(Exception):
    """A value the direct conversion leaves to the JSON round trip."""


# Ints past this many bits may be too long for int <-> str (sys.get_int_max_str_digits, at
# least 640 digits): for them the round trip decides, raising what json raises.
_INT_BITS_SURELY_SHORT = 2000
# Exact types the round trip gives back as they are (float: repr round-trips, NaN included).
_UNCHANGED = frozenset({str, bool, float, type(None)})
# Exact types json hands to ``_default``.
_ENCODED_BY_DEFAULT = frozenset({datetime, Decimal, set, frozenset})


def _convert(value: Any) -> Any:
    cls = type(value)
    if cls in _UNCHANGED:
        return value
    if cls is int:
        if value.bit_length() > _INT_BITS_SURELY_SHORT:
            raise _NotPlain
        return value
    if cls is list or cls is tuple:
        return [_convert(v) for v in value]
    if cls is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain  # how json writes other keys (and their collisions) is json's to say
            out[key] = item if type(item) is str else _convert(item)
        return out
    if cls in _ENCODED_BY_DEFAULT:
        return _convert(_default(value))
    raise _NotPlain


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
