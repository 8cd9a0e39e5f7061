"""The configuration reference (docs/configuration.md), generated from the marshmallow schemas.

Every key's type, default, whether it is required, the values its validators allow and its
``metadata={"doc": ...}`` come from the schemas themselves; the per-CRM blocks come from
``adapters.registry.CRM_TYPES``. A CRM type whose settings module cannot be imported is
listed with a note instead of failing, and appears once it can be imported.

Regenerate with ``python -m connector.config.reference > docs/configuration.md`` (or give the
output path as an argument: ``python -m connector.config.reference docs/configuration.md``,
which writes UTF-8 on every platform). ``tests/test_docs_reference.py`` fails when the
committed file differs from ``render_reference()``.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

from marshmallow import Schema, fields, missing, validate

from adapters.registry import CHANNEL_TYPES, CRM_TYPES
from connector.config.schema import ConfigSchema
from domain.fields import HttpUrl, Id, Span
from rules.planning_schema import IndicatorsField
from rules.schema import ACTIONS, ActionsField, ConditionField

REGENERATE = "python -m connector.config.reference > docs/configuration.md"

# Short introductions of the top-level sections (the schemas say what each key means).
SECTION_INTRO: dict[str, str] = {
    "storage": "Where the connector keeps its inbox, outbox, deadlines, cursors and audit. SQLite (WAL mode) "
    "is the embedded default; PostgreSQL needs `pip install -e '.[postgres]'`. "
    "`connector init-db --config FILE` applies the Alembic migrations too.",
    "server": "The HTTP intake (waitress or Granian, `server.engine`): `POST /hooks/<type>/<name>` for webhooks, "
    "`GET /healthz`, "
    "`GET /readyz` (checks the database) and `GET /metrics` (Prometheus).",
    "calendar": "The working-time calendar used by durations in working days or hours "
    "(see [Working time](rules.md#working-time)).",
    "worker": "The worker turns stored events into rule decisions and outbox rows.",
    "dispatcher": "The dispatcher carries out outbox rows against the CRMs, with retries and dead letters.",
    "logging": "Logs go to standard error, one line per record.",
    "timers": "The scan that turns due deadline reminders and breaches into events.",
    "crms": "One block per CRM the connector talks to. The block's key is the CRM's *name*: rules refer to it "
    "(`crm: NAME`) and its webhook URL is `/hooks/<type>/<name>`. `type` chooses the settings below.",
    "territories": "The location → captain table used by `assign_captain` "
    "(see [rules.md](rules.md#steps-do)). The most specific match wins.",
    "rules": "The regulations: triggers, a condition and steps. The language is described in [rules.md](rules.md).",
    "deadlines": "Named deadlines that rules start with `start_deadline` "
    "(see [Deadlines](rules.md#deadlines)). The key is the deadline's name.",
    "reports": "Periodic reports written as tasks (see [Reports](rules.md#reports)).",
    "calendars": "Named working calendars besides the default `calendar:` (another country, other hours, "
    "shifts on named days), chosen per rule or per team (see [Calendars](rules.md#calendars)).",
    "org": "The org chart: people, teams with their leads and heads, roles; targets such as "
    "`team_lead_of(responsible)` resolve against it (see [Org chart](rules.md#org-chart-and-roles)).",
    "alerts": "One message to the admins when a CRM is paused, dead letters rise, a deadline is breached "
    "or the connector cannot store; each once, with a resolve message when it clears "
    "in the admins' chat (`channel`) or by e-mail (see [deployment.md](deployment.md#alerts)). "
    "Without this section no alert is sent.",
    "recurring": "Tasks on a schedule that belong to no deal (meetings, the weekly site update), once per "
    "occurrence (see [Recurring work](rules.md#recurring-work)).",
    "indicators": "What plans are set for and reports count, by name: counts and sums over the CRM's "
    "activities marked done and its deals (see [Plans and indicators](rules.md#plans-and-indicators)).",
    "channels": "Places rules post messages to with the `message` step (see [Messages](rules.md#messages-to-a-chat)). "
    "The block's key is the channel's *name*; it must differ from every CRM's. `type` chooses the settings below.",
}

_RULES_LINKS: dict[type[fields.Field], str] = {
    ConditionField: "a condition, see [Conditions](rules.md#conditions-when)",
    ActionsField: "see [Steps](rules.md#steps-do)",
    IndicatorsField: "see [Plans and indicators](rules.md#plans-and-indicators)",
}


# --- values ------------------------------------------------------------------------------------


def format_span(seconds: float) -> str:
    """Seconds as the shortest exact span: ``300.0`` → ``5m``, ``0.5`` → ``500ms``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    millis = seconds * 1000
    return f"{int(millis)}ms" if float(millis).is_integer() else f"{seconds}s"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value, ensure_ascii=False, default=str)


def _code(text: str) -> str:
    return f"`{text}`"


def _default(field: fields.Field) -> str:
    """What a key is when left out: required, a default, or absent."""
    if field.required:
        return "**required**"
    default = field.load_default
    if default is missing:
        return "optional"
    if callable(default):
        default = default()
    if isinstance(field, fields.Nested) and (isinstance(default, dict) or not _plain_value(default)):
        return "all defaults"
    if isinstance(field, Span) and isinstance(default, (int, float)) and not isinstance(default, bool):
        return _code(format_span(float(default)))
    return _code(_scalar(default))


# --- types -------------------------------------------------------------------------------------


def _nested_schema(field: fields.Field) -> type[Schema] | None:
    """The schema class of a Nested field (a class or an instance), else None."""
    if not isinstance(field, fields.Nested):
        return None
    nested = field.nested
    if isinstance(nested, Schema):
        return type(nested)
    if isinstance(nested, type) and issubclass(nested, Schema):
        return nested
    return None


def _plain_value(value: object) -> bool:
    """Whether a default is plain data (a section may load into an object of its own)."""
    return value is None or isinstance(value, (str, int, float, bool, list, tuple, dict))


def type_name(field: fields.Field) -> str:
    """A reader's name for the field's type."""
    named: list[tuple[type[fields.Field], str]] = [
        (Span, "time span"),
        (Id, "id"),
        (HttpUrl, "http(s) URL"),
        (ConditionField, "condition"),
        (ActionsField, "list of steps"),
        (IndicatorsField, "mapping string → indicator"),
        (fields.Nested, "mapping"),
        (fields.Boolean, "boolean"),
        (fields.Integer, "integer"),
        (fields.Float, "number"),
        (fields.DateTime, "date-time"),
        (fields.Date, "date (YYYY-MM-DD)"),
        (fields.String, "string"),
        (fields.Raw, "any"),
    ]
    if isinstance(field, fields.List):
        return f"list of {_plural(type_name(field.inner))}"
    if isinstance(field, fields.Dict):
        key = type_name(field.key_field) if field.key_field is not None else "string"
        value = type_name(field.value_field) if field.value_field is not None else "any"
        return f"mapping {key} → {value}"
    for cls, name in named:
        if isinstance(field, cls):
            return name
    return type(field).__name__


def _plural(name: str) -> str:
    if name.startswith(("list of", "mapping ")):
        return name
    return {"any": "values", "date (YYYY-MM-DD)": "dates (YYYY-MM-DD)"}.get(name, name + "s")


# --- validators --------------------------------------------------------------------------------


def _validator_text(v: Any, unit: str) -> str:
    if isinstance(v, validate.OneOf):
        return "one of " + ", ".join(_code(_scalar(c)) for c in v.choices)
    if isinstance(v, validate.Range):
        low = None if v.min is None else f"{'≥' if v.min_inclusive else '>'} {_scalar(v.min)}"
        high = None if v.max is None else f"{'≤' if v.max_inclusive else '<'} {_scalar(v.max)}"
        return ", ".join(p for p in (low, high) if p)
    if isinstance(v, validate.Length):
        if v.equal is not None:
            return f"exactly {_count(v.equal, unit)}"
        parts = []
        if v.min is not None:
            parts.append(f"at least {_count(v.min, unit)}")
        if v.max is not None:
            parts.append(f"at most {_count(v.max, unit)}")
        return ", ".join(parts)
    if isinstance(v, validate.Regexp):
        text = "matches " + _code(str(v.regex.pattern))
        if v.error and v.error != validate.Regexp.default_message:
            text += f" ({v.error})"
        return text
    return type(v).__name__


def _count(n: int, unit: str) -> str:
    """``1 character``, ``8 characters``, ``1 entry``."""
    if n != 1:
        return f"{n} {unit}"
    return f"{n} {unit[:-3] + 'y' if unit.endswith('ies') else unit[:-1]}"


def allowed(field: fields.Field) -> str:
    """What the field's validators (and its inner fields' validators) allow."""
    unit = "items" if isinstance(field, fields.List) else "entries" if isinstance(field, fields.Dict) else "characters"
    parts = [_validator_text(v, unit) for v in field.validators]
    if isinstance(field, fields.List) and field.inner.validators:
        parts.append("each: " + allowed(field.inner))
    if isinstance(field, fields.Dict):
        if field.key_field is not None and field.key_field.validators:
            parts.append("keys: " + allowed(field.key_field))
        if field.value_field is not None and field.value_field.validators:
            parts.append("values: " + allowed(field.value_field))
    if isinstance(field, Span):
        parts.append("zero or longer" if field.allow_zero else "longer than zero")
    for cls, text in _RULES_LINKS.items():
        if isinstance(field, cls):
            parts.append(text)
    if isinstance(field, ActionsField):
        parts.append("steps: " + ", ".join(_code(name) for name in ACTIONS))
    return "; ".join(p for p in parts if p)


# --- tables ------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or " "


def _description(field: fields.Field) -> str:
    doc = str(field.metadata.get("doc", ""))
    if field.metadata.get("secret"):
        doc = (doc + ". " if doc else "") + "**Secret**: give it as `${VAR}` from the environment."
    return doc


def _schema_doc(schema: type[Schema]) -> str:
    """The schema class's own docstring, reST double backticks made Markdown."""
    doc = schema.__dict__.get("__doc__")
    return inspect.cleandoc(doc).replace("``", "`") if doc else ""


def anchor(title: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + "." if dot else text


Child = tuple[str, type[Schema]]


def _children(name: str, field: fields.Field, prefix: str) -> Child | None:
    """A nested schema under this key, with the path its keys are written at."""
    path = f"{prefix}.{name}" if prefix else name
    if (schema := _nested_schema(field)) is not None:
        return path, schema
    if isinstance(field, fields.List) and (schema := _nested_schema(field.inner)) is not None:
        return f"{path}[]", schema
    if (
        isinstance(field, fields.Dict)
        and field.value_field is not None
        and (schema := _nested_schema(field.value_field)) is not None
    ):
        return f"{path}.<name>", schema
    return None


def _table(
    schema: type[Schema], prefix: str, fixed: dict[str, str] | None = None, notes: dict[str, str] | None = None
) -> tuple[list[str], list[Child]]:
    """The Markdown table of one schema's keys, and the nested schemas found under them.

    ``fixed`` replaces a key's allowed values; ``notes`` stands in for a missing doc.
    """
    lines = ["| key | type | default | allowed values | description |", "|---|---|---|---|---|"]
    children: list[Child] = []
    for name, field in schema._declared_fields.items():
        key = field.data_key or name
        path = f"{prefix}.{key}" if prefix else key
        allowed_text = (fixed or {}).get(key) or allowed(field)
        lines.append(
            "| "
            + " | ".join(
                _cell(t)
                for t in (
                    _code(path),
                    type_name(field),
                    _default(field),
                    allowed_text,
                    _description(field) or (notes or {}).get(key, ""),
                )
            )
            + " |"
        )
        child = _children(key, field, prefix)
        if child is not None:
            children.append(child)
    return lines, children


def _section(
    out: list[str],
    level: int,
    title: str,
    schema: type[Schema],
    prefix: str,
    intro: str = "",
    fixed: dict[str, str] | None = None,
) -> None:
    out += [f"{'#' * level} {title}", ""]
    for text in (intro, _schema_doc(schema)):
        if text:
            out += [text, ""]
    lines, children = _table(schema, prefix, fixed)
    out += lines + [""]
    for path, child in children:
        _section(out, min(level + 1, 6), _code(path), child, path)


def _crm_title(type_key: str, section: str = "crms") -> str:
    return f"`{section}.<name>` with `type: {type_key}`"


def _crm_sections(out: list[str], section: str = "crms") -> None:
    types = CHANNEL_TYPES if section == "channels" else CRM_TYPES
    for type_key, crm_type in types.items():
        title = _crm_title(type_key, section)
        try:
            settings = crm_type.settings()
        except Exception as exc:  # a settings module being written, or broken: note it, go on
            out += [
                f"### {title}",
                "",
                f"_Not listed: the settings schema of `{type_key}` could not be imported "
                f"({type(exc).__name__}). It appears here once it can; then regenerate this page._",
                "",
            ]
            continue
        _section(out, 3, title, settings, f"{section}.<name>", fixed={"type": _code(type_key)})


# --- the page ----------------------------------------------------------------------------------

VALUE_FORMATS = """\
## Value formats

- **Secrets and other environment values**: any string may contain `${VAR}` (or `${VAR:-default}`);
  the value comes from the environment when the config is loaded, a missing variable is refused
  with its name, and substituted values are never printed by `check`, logs or errors.
- **time span**: a number of seconds or a number with a unit: `500ms`, `30s`, `5m` (`min`), `2h`, `1d`.
- **durations** in rules, deadlines and reports (`due`, `remind_before`): calendar time such as
  `24h`, `30 min`, `2 days`, or working time on the calendar below such as `3 working days`,
  `4 working hours`, `90 working minutes` (`3 рабочих дня` works too); see [rules.md](rules.md).
- **id**: a CRM object id, a number or a string of digits.
- **cron** (`schedule`): five fields, minute hour day month weekday, in `calendar.timezone`,
  e.g. `0 19 * * mon-fri`.
"""


def render_reference() -> str:
    """The whole configuration reference as Markdown (deterministic: schema declaration order)."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from the marshmallow schemas; do not edit by hand. -->",
        f"This page is generated from the schemas in the code: regenerate it with `{REGENERATE}` "
        'after changing a schema (edit the field\'s `metadata={"doc": ...}`, not this page). '
        "`connector check --config CONFIG` validates a file against the same schemas (and what its "
        "names mean) and names the key path and line of every problem. "
        "[config.example.yaml](../config.example.yaml) is a working example.",
        "",
        "Keys are written as paths: `a.b` is key `b` inside section `a`, `a[]` an entry of the list `a`, "
        "`a.<name>` an entry of the mapping `a` under a name of your choice. A key left out takes "
        "its default; *optional* keys without a default are simply absent.",
        "",
        VALUE_FORMATS,
    ]
    notes = {}
    for name, field in ConfigSchema._declared_fields.items():
        child = _children(name, field, "")
        title = _code(child[0]) if child else _code(name)
        notes[name] = f"{_first_sentence(SECTION_INTRO.get(name, ''))} [More](#{anchor(title)})".strip()
    top_lines, _ = _table(ConfigSchema, "", notes=notes)
    out += ["## Top-level sections", ""] + top_lines + [""]
    for name, field in ConfigSchema._declared_fields.items():
        if name in ("crms", "channels"):
            out += [f"## `{name}`", "", SECTION_INTRO[name], ""]
            key_field = field.key_field if isinstance(field, fields.Dict) else None
            if key_field is not None and key_field.validators:
                out += [f"{'CRM' if name == 'crms' else 'Channel'} names: {allowed(key_field)}.", ""]
            types = CRM_TYPES if name == "crms" else CHANNEL_TYPES
            out += [
                "Known types: " + ", ".join(f"[{_code(t)}](#{anchor(_crm_title(t, name))})" for t in types) + ".",
                "",
            ]
            _crm_sections(out, name)
            continue
        child = _children(name, field, "")
        if child is None:
            continue
        path, schema = child
        _section(out, 2, _code(path), schema, path, intro=SECTION_INTRO.get(name, ""))
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the reference, or write it to the path given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    if args and (args[0].startswith("-") or len(args) > 1):  # not a path: `--help` must not become a file
        print(f"usage: python -m connector.config.reference [OUT.md]   (e.g. {REGENERATE})", file=sys.stderr)
        return 0 if args[0] in ("-h", "--help") else 2
    text = render_reference()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8", newline="\n")
    else:
        sys.stdout.buffer.write(text.encode("utf-8"))  # UTF-8 and \n whatever the console's code page
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
