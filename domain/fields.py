"""Marshmallow fields shared by the config schemas of the core and the adapters."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

from marshmallow import ValidationError, fields

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, None: 1}


def parse_span(value: Any) -> timedelta:
    """``"5m"``, ``"30s"``, ``"2h"``, ``"500ms"`` or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    m = _SPAN.match(str(value))
    if not m:
        raise ValueError(f"not a time span: {value!r} (use e.g. 30s, 5m, 2h)")
    unit = m.group(2).lower() if m.group(2) else None
    return timedelta(seconds=float(m.group(1)) * _UNITS[unit])


class Span(fields.Field):
    """A time span such as ``5m``; loads as seconds (float). ``allow_zero`` admits ``0``."""

    def __init__(self, *, allow_zero: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allow_zero = allow_zero

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        try:
            seconds = parse_span(value).total_seconds()
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        if seconds < 0 or (seconds == 0 and not self.allow_zero):
            raise ValidationError("must be zero or longer" if self.allow_zero else "must be longer than zero")
        return seconds


class Id(fields.Field):
    """A CRM object id: a number or a string of digits (YAML gives either)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
            raise ValidationError("an id (a number)")
        return str(value).strip()


class HttpUrl(fields.Field):
    """An http(s) URL; the message never repeats the value (it may hold a secret)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError("must be a URL")
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValidationError("must be an http:// or https:// URL")
        return value
