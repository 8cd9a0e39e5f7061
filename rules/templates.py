"""Sandboxed Jinja2 templates for task titles, descriptions and comments.

The sandbox keeps a config author from reaching Python internals; undefined names are
errors, so a typo shows up in ``check`` and dry-runs instead of as an empty task title.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.runtime import missing
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _date(value: Any, fmt: str = "%d.%m.%Y %H:%M") -> str:
    return value.strftime(fmt) if isinstance(value, datetime) else str(value or "")


def _iso(value: Any) -> str:
    """A moment as ISO 8601 in UTC, to the second: the same text whichever zone it came in
    (a webhook's moment and a replayed one must stamp a field alike)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(microsecond=0).isoformat()
    return value.replace(microsecond=0).isoformat() if isinstance(value, datetime) else str(value or "")


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with each template's globals as one flat dict.

    Jinja's default is a ChainMap over the environment's globals, and every render copies
    the globals into a new context by iterating it (twice): that was a third of a render's
    time. Nothing changes the globals once templates exist, so a copy sees the same names.
    """

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """The template's globals over the environment's, flattened into one dict."""
        return {**self.globals, **(d or {})}


_ENV = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
_ENV.filters["date"] = _date
_ENV.filters["iso"] = _iso

# A plain template, as text and substitutions: a literal, or (name, lookups) where each lookup
# is ("attr" | "item", key) or ("filter", (filter name, constant arguments)), applied in order --
# "{{ deal.fields.X }}" is ("deal", (("attr", "fields"), ("attr", "X"))).
_Lookup = tuple[str, Any]
# Filters the plain path may call: ours, plain functions of (value, *constant text arguments)
# (Jinja's own filters may want the environment or the context passed in).
_PLAIN_FILTERS = frozenset({"date", "iso"})
_Part = str | tuple[str, tuple[_Lookup, ...]]


# Names Jinja's compiled code may bind itself rather than look up (``self`` is the template).
_SPECIAL_NAMES = frozenset({"self", "super", "loop", "caller", "varargs", "kwargs"})


# Everything getattr() might find on a dict (dir(dict) is a superset of a dict instance's
# attributes): a key named like one goes through the sandbox's getattr.
_DICT_ATTRS = frozenset(dir(dict)) | frozenset(dir(type))


class TemplateProblem(ValueError):
    """A template that does not compile or cannot render."""


class Template:
    """A compiled template; ``str(template)`` is its source."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._template = _ENV.from_string(source)
            self._plain = _plain_parts(_ENV.parse(source))
        except TemplateError as exc:
            raise TemplateProblem(f"template error: {exc}") from exc

    def render(self, context: dict[str, Any]) -> str:
        """The text for ``context``; a problem (an undefined name, say) raises TemplateProblem."""
        try:
            if self._plain is not None:
                return _render_plain(self._plain, context).strip()
            return self._template.render(context).strip()
        except TemplateError as exc:
            raise TemplateProblem(f"cannot render {self.source!r}: {exc}") from exc

    def __str__(self) -> str:
        return self.source


def _plain_parts(tree: nodes.Template) -> tuple[_Part, ...] | None:
    """The parts of a template that is only text and ``{{ name.attr["key"] | date('...') }}``
    substitutions, else None (other filters, tests, operators, statements: those render
    through Jinja)."""
    parts: list[_Part] = []
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):
            return None
        for node in statement.nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append(node.data)  # already as the lexer leaves it (newlines, whitespace control)
                continue
            lookups: list[_Lookup] = []
            while True:
                inner: nodes.Expr | None
                if isinstance(node, nodes.Getattr):
                    lookups.append(("attr", node.attr))
                    inner = node.node
                elif (
                    isinstance(node, nodes.Getitem)
                    and isinstance(node.arg, nodes.Const)
                    and type(node.arg.value) in (str, int)
                ):
                    lookups.append(("item", node.arg.value))
                    inner = node.node
                elif (
                    isinstance(node, nodes.Filter)
                    and node.name in _PLAIN_FILTERS
                    and not node.kwargs
                    and node.dyn_args is None
                    and node.dyn_kwargs is None
                    and (args := _constant_texts(node.args)) is not None
                ):
                    lookups.append(("filter", (node.name, args)))
                    inner = node.node
                else:
                    break
                if inner is None:
                    return None
                node = inner
            if not isinstance(node, nodes.Name) or node.ctx != "load" or node.name in _SPECIAL_NAMES:
                return None
            parts.append((node.name, tuple(reversed(lookups))))
    return tuple(parts)


def _constant_texts(args: list[nodes.Expr]) -> tuple[str, ...] | None:
    """The arguments when every one is a constant text, else None."""
    values: list[str] = []
    for arg in args:
        if not isinstance(arg, nodes.Const) or type(arg.value) is not str:
            return None
        values.append(arg.value)
    return tuple(values)


def _render_plain(parts: tuple[_Part, ...], context: dict[str, Any]) -> str:
    """What Jinja's compiled code does for these parts, without building a Jinja context.

    That code resolves a name in the render's variables, then the environment's globals,
    else it is undefined (StrictUndefined: an error once printed); it reads each attribute
    or item through the sandbox (``environment.getattr`` / ``getitem``, which refuse unsafe
    attributes) and prints ``str()`` of the result. Building the context was most of a
    render's cost, and most templates are plain substitutions.
    """
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        name, lookups = part
        value = context[name] if name in context else _ENV.globals.get(name, missing)
        if value is missing:
            value = _ENV.undefined(name=name)
        for kind, key in lookups:
            if kind == "filter":  # a filter of ours: Jinja's code calls it directly, with the constant arguments
                filter_name, args = key
                value = _ENV.filters[filter_name](value, *args)
            elif type(value) is dict and key in value and (kind == "item" or key not in _DICT_ATTRS):
                # What the sandbox ends with for a plain dict (getitem tries the item first;
                # getattr tries the attribute, which dict does not have) -- without its
                # AttributeError on the way.
                value = value[key]
            elif kind == "attr":
                value = _ENV.getattr(value, key)
            else:
                value = _ENV.getitem(value, key)
        out.append(str(value))
    return "".join(out)
