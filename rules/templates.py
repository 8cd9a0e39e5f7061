"""Sandboxed Jinja2 templates for task titles, descriptions and comments.

The sandbox keeps a config author from reaching Python internals; undefined names are
errors, so a typo shows up in ``check`` and dry-runs instead of as an empty task title.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _date(value: Any, fmt: str = "%d.%m.%Y %H:%M") -> str:
    return value.strftime(fmt) if isinstance(value, datetime) else str(value or "")


_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
_ENV.filters["date"] = _date


class TemplateProblem(ValueError):
    """A template that does not compile or cannot render."""


class Template:
    """A compiled template; ``str(template)`` is its source."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._template = _ENV.from_string(source)
        except TemplateError as exc:
            raise TemplateProblem(f"template error: {exc}") from exc

    def render(self, context: dict[str, Any]) -> str:
        try:
            return self._template.render(context).strip()
        except TemplateError as exc:
            raise TemplateProblem(f"cannot render {self.source!r}: {exc}") from exc

    def __str__(self) -> str:
        return self.source
