"""``check`` beyond the shape: does what the config names exist, and will its templates render?

The schemas say a key is a string; this says the string means something: a template's
names are the deal's (rendered against a sample deal of the rule's CRM), a user reference
is an id or a name a rule step sets, a condition's deadline is defined, a stage is one of
the CRM's. Every reference is collected with its key path so ``check --online`` can look the
same ones up in the CRM itself.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import nodes

from adapters.contracts import ConfiguredCrm, DealSource
from connector.config.loader import ConfigProblem, Path_, RawConfig, dotted
from domain import Deal, Event, EventKind
from domain.suggest import did_you_mean
from rules.actions import AssignCaptain, AssignSpec, CloseDealSpec, MoveStageSpec, ReopenSpec
from rules.model import ActionSpec, Rule, RuleContext
from rules.reports import ReportDef
from rules.templates import Template, TemplateProblem
from rules.territories import Territory

DEAL_ATTRS = frozenset(f.name for f in dataclasses.fields(Deal)) - {"fields", "crm"}

# The names a step leaves for the steps after it (``responsible: captain``).
_PROVIDES: dict[type[ActionSpec], tuple[str, ...]] = {AssignCaptain: ("captain",), AssignSpec: ("assignee",)}
USER_WORDS = ("responsible",)


@dataclass(frozen=True)
class Reference:
    """Something the config names that must exist in a CRM: a stage, pipeline, user or field."""

    kind: str  # "stage", "pipeline", "user", "field"
    crm: str | None  # None: any CRM that keeps deals (territories)
    value: str
    path: Path_


# --- templates -----------------------------------------------------------------------------

ANY = object()  # a mapping whose keys are not known here: anything goes below it
LEAF = None  # a value: its attributes are Python's (``.upper()``), not checked


def _event_shape() -> dict[str, Any]:
    return {"kind": LEAF, "source": LEAF, "at": LEAF, "data": ANY}


def rule_shape(deal_fields: Mapping[str, Any] | None, results: Iterable[str]) -> dict[str, Any]:
    """The names a rule's template may use; ``deal_fields`` None: any deal field."""
    probe = RuleContext(deal=Deal(crm="", id=""), event=_probe_event(), now=datetime.now(UTC), triggers=frozenset())
    seen = probe.template_vars({})
    deal: dict[str, Any] = {k: LEAF for k in seen["deal"]}
    deal["fields"] = ANY if deal_fields is None else {k: LEAF for k in deal_fields}
    shape: dict[str, Any] = {k: ANY for k in seen}  # names the context grows are known, not checked below
    shape |= {
        "deal": deal,
        "event": _event_shape(),
        "changes": ANY,  # any field's name, then before / after
        "now": LEAF,
        "holiday": {"date": LEAF, "name": LEAF},
    }
    shape.update({name: LEAF for name in results})
    return shape


REPORT_SHAPE: dict[str, Any] = {
    "now": LEAF,
    "day": LEAF,
    "user": LEAF,
    "stats": {k: LEAF for k in ("new", "won", "won_amount", "lost", "open", "open_amount", "tasks", "calls")},
}


def _probe_event() -> Event:
    return Event(
        crm="", deal_id="1", kind=EventKind.DEAL_UPDATED, occurred_at=datetime.now(UTC), dedup_key="check", data={}
    )


def _chains(node: nodes.Node, out: list[tuple[str, tuple[Any, ...]]], stored: set[str]) -> None:
    """Every ``name.attr["key"]`` chain in the template; a dynamic key or slice is ``None``."""
    if isinstance(node, nodes.Name):
        if node.ctx == "load":
            out.append((node.name, ()))
        else:  # a loop variable or ``{% set %}``: the template's own name
            stored.add(node.name)
        return
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        # ``x.get('KEY')`` reads KEY of x; any other method call is the object's own business.
        method, target = node.node.attr, node.node.node
        if method == "get" and node.args and isinstance(node.args[0], nodes.Const) and type(node.args[0].value) is str:
            _chains(nodes.Getitem(target, node.args[0], "load"), out, stored)
        else:
            _chains(target, out, stored)
        for child in (*node.args, *node.kwargs):
            _chains(child, out, stored)
        for extra in (node.dyn_args, node.dyn_kwargs):
            if extra is not None:
                _chains(extra, out, stored)
        return
    if isinstance(node, (nodes.Getattr, nodes.Getitem)):
        keys: list[Any] = []
        current: nodes.Node = node
        while isinstance(current, (nodes.Getattr, nodes.Getitem)):
            if isinstance(current, nodes.Getattr):
                keys.append(current.attr)
            elif isinstance(current.arg, nodes.Const) and type(current.arg.value) in (str, int):
                keys.append(current.arg.value)
            else:
                keys.append(None)
                _chains(current.arg, out, stored)
            current = current.node
        if isinstance(current, nodes.Name) and current.ctx == "load":
            out.append((current.name, tuple(reversed(keys))))
        else:
            _chains(current, out, stored)
        return
    for child in node.iter_child_nodes():
        _chains(child, out, stored)


_GLOBALS = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "self", "caller"})


def template_problem(template: Template, shape: Mapping[str, Any], hint: Callable[[str], str]) -> str | None:
    """What in ``template`` the shape does not know (the first such name), or None."""
    from rules.templates import _ENV  # the same environment the templates compile in

    chains: list[tuple[str, tuple[Any, ...]]] = []
    stored: set[str] = set()
    _chains(_ENV.parse(template.source), chains, stored)
    for root, keys in chains:
        if root in stored or root in _GLOBALS:
            continue
        if root not in shape:
            return f"unknown name {root!r} in {template.source!r}{did_you_mean(root, shape)}; {hint('')}"
        level: Any = shape[root]
        walked = root
        for key in keys:
            if level is ANY or level is LEAF or key is None:
                break
            if key not in level:
                where = f"{walked}.{key}"
                known = sorted(str(k) for k in level)
                suggestion = did_you_mean(str(key), known)
                listed = "" if suggestion else f"; {walked} has: {', '.join(known)}"
                return f"unknown attribute {where} in {template.source!r}{suggestion}{listed}"
            walked, level = f"{walked}.{key}", level[key]
    return None


class _AnyFields(dict[str, Any]):
    """Deal fields of a CRM whose field list is not known offline: any name reads as empty."""

    def __missing__(self, key: str) -> str:
        return ""


class _AnyChanges(dict[str, Any]):
    """Changes of any field, each with its ``before`` and ``after``."""

    def __missing__(self, key: str) -> dict[str, str]:
        return {"before": "", "after": ""}


def render_problem(template: Template, variables: dict[str, Any]) -> str | None:
    """An undefined name met while rendering against the sample (a safety net for names the
    walk above cannot follow, such as ``{% set d = deal %}{{ d.titel }}``)."""
    from jinja2 import UndefinedError

    try:
        template.render(variables)
    except TemplateProblem as exc:
        if isinstance(exc.__cause__, UndefinedError):
            return f"cannot render against a sample deal: {exc.__cause__}"
    except Exception:  # noqa: BLE001 - other failures depend on the sample's values, not the template's names
        return None
    return None


def sample_variables(deal: Deal, results: Iterable[str]) -> dict[str, Any]:
    """What a rule's templates see for the sample deal of its CRM."""
    if not deal.fields:
        deal = dataclasses.replace(deal, fields=_AnyFields())
    elif not isinstance(deal.fields, _AnyFields):
        deal = dataclasses.replace(deal, fields=_AnyFields(deal.fields))
    ctx = RuleContext(deal=deal, event=_probe_event(), now=datetime.now(UTC), triggers=frozenset())
    variables = ctx.template_vars({name: "1" for name in results})
    variables["event"]["data"] = _AnyFields()
    variables["changes"] = _AnyChanges()
    return variables


def step_templates(step: ActionSpec) -> Iterator[tuple[tuple[str | int, ...], Template]]:
    """Each template of a step, with its key path under the step (``("title",)``)."""
    aliases = {"values": (), "fields": (), "task_type": ("type",), "target": ("in",)}
    for f in dataclasses.fields(step):  # type: ignore[arg-type]  # every step is a dataclass
        value = getattr(step, f.name)
        base: tuple[str | int, ...] = aliases.get(f.name, (f.name,))
        if isinstance(value, Template):
            yield base, value
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Template):
                    yield (*base, i), item
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, Template):
                    yield (*base, key), item


# --- the checks ----------------------------------------------------------------------------


@dataclass
class Meaning:
    """The outcome: problems, and every reference for ``check --online``."""

    problems: list[ConfigProblem] = dataclasses.field(default_factory=list)
    references: list[Reference] = dataclasses.field(default_factory=list)


def check_meaning(
    raw: RawConfig,
    rules: list[tuple[int, Rule]],
    reports: list[tuple[int, ReportDef]],
    territories: list[tuple[int, Territory]],
    crms: Mapping[str, ConfiguredCrm],
    deal_fields: Mapping[str, Mapping[str, Any]] | None = None,
) -> Meaning:
    """Check what the config's names mean; ``deal_fields``: each CRM's field list, when known."""
    out = Meaning()

    def problem(path: Path_, message: str) -> None:
        out.problems.append(ConfigProblem(dotted(path), message, raw.line_of(path)))

    data = raw.data
    raw_deadlines = data.get("deadlines")
    deadline_names = sorted(raw_deadlines) if isinstance(raw_deadlines, dict) else []
    roles = _named_people(data)

    def stages_of(crm: str) -> tuple[str, ...]:
        target = crms.get(crm)
        return tuple(getattr(target.settings, "stages", ()) or ()) if target is not None else ()

    def id_pattern(crm: str | None) -> list[str]:
        targets = list(crms.values()) if crm is None else [crms[crm]] if crm in crms else []
        sources = [t.adapter_class for t in targets if t.can(DealSource)]
        return [str(getattr(source, "user_id_pattern", r"\d+")) for source in sources] or [r"\d+"]

    def user(crm: str | None, value: str, path: Path_, provided: Iterable[str] = ()) -> None:
        if not isinstance(value, str):
            return  # a reference of another kind (an org chart's), checked where it is defined
        words = [*USER_WORDS, *sorted(provided), *sorted(roles)]
        if value in words:
            return
        if any(re.fullmatch(p, value) for p in id_pattern(crm)):
            out.references.append(Reference("user", crm, value, path))
            return
        if value in {n for names in _PROVIDES.values() for n in names}:
            setter = next(cls for cls, names in _PROVIDES.items() if value in names)
            problem(path, f"{value!r} is set by a {_step_name(setter)} step earlier in this rule, and there is none")
            return
        allowed = ", ".join(repr(w) for w in words)
        setters = [n for names in _PROVIDES.values() for n in names]
        problem(
            path,
            f"{value!r} is not a user: give a user id (digits) or one of {allowed}"
            f"{did_you_mean(value, [*words, *setters])}",
        )

    for i, rule in rules:
        crm = crms.get(rule.crm)
        fields = None if deal_fields is None else deal_fields.get(rule.crm)
        sample = (
            crm.adapter_class.sample_deal(rule.crm)  # type: ignore[attr-defined]  # checked by can()
            if crm is not None and crm.can(DealSource)
            else Deal(crm=rule.crm, id="1", title="Sample deal")
        )
        provided: list[str] = []
        for j, step in enumerate(rule.actions):
            base: Path_ = ("rules", i, "do", j, step.name)
            shape = rule_shape(fields, provided + (["reason"] if isinstance(step, CloseDealSpec) else []))
            variables = sample_variables(sample, provided + ["reason"])
            for sub, template in step_templates(step):
                path = (*base, *sub)
                found = template_problem(template, shape, lambda _: "templates see deal, event, changes, now, holiday")
                found = found or render_problem(template, variables)
                if found:
                    problem(path, found)
            for sub, value in _step_users(step):
                user(rule.crm, value, (*base, *sub), provided)
            for sub, kind, value in _step_names(step):
                if kind != "field" or value not in DEAL_ATTRS:
                    out.references.append(Reference(kind, rule.crm, value, (*base, *sub)))
            provided += [n for cls, names in _PROVIDES.items() if isinstance(step, cls) for n in names]
            provided += list(getattr(step, "provides", ()))
        raw_rule = _raw_item(data, "rules", i)
        _walk_condition(raw_rule.get("when"), ("rules", i, "when"), rule.crm, deadline_names, out, problem)

    for i, report in reports:
        if getattr(report, "indicators", ()):
            continue  # a plan-vs-fact report: its own names and recipients, checked where it is defined
        for key in ("title", "text"):
            template = getattr(report, key)
            found = template_problem(template, REPORT_SHAPE, lambda _: "report templates see now, day, user, stats")
            if found:
                problem(("reports", i, key), found)
        if isinstance(report.to, str) and report.to != "responsible":
            user(report.crm, report.to, ("reports", i, "to"))
        _walk_condition(
            _raw_item(data, "reports", i).get("when"), ("reports", i, "when"), report.crm, deadline_names, out, problem
        )

    if isinstance(raw_deadlines, dict):
        for name, block in raw_deadlines.items():
            if isinstance(block, dict):
                _walk_condition(
                    block.get("done_when"), ("deadlines", name, "done_when"), None, deadline_names, out, problem
                )

    for i, territory in territories:
        for key in ("captain", "backup"):
            value = getattr(territory, key)
            if not isinstance(value, str) or value in roles:
                continue
            if any(re.fullmatch(p, value) for p in id_pattern(None)):
                out.references.append(Reference("user", None, value, ("territories", i, key)))
            else:
                problem(("territories", i, key), f"{value!r} is not a user id: give the user's id (digits), not a name")

    for ref in out.references:
        if ref.kind == "stage" and ref.crm is not None and (stages := stages_of(ref.crm)) and ref.value not in stages:
            problem(
                ref.path,
                f"no stage {ref.value!r} in crms.{ref.crm}.stages{did_you_mean(ref.value, stages)}",
            )
    return out


def _named_people(data: Mapping[str, Any]) -> set[str]:
    """People and roles the config names (``org.people``, ``org.roles``, ``roles``): a user
    reference may be one of them."""
    names: set[str] = set()
    org = data.get("org")
    for section in (org.get("people"), org.get("roles")) if isinstance(org, Mapping) else ():
        if isinstance(section, Mapping):
            names |= {str(k) for k in section}
    if isinstance(data.get("roles"), Mapping):
        names |= {str(k) for k in data["roles"]}
    return names


def _step_name(cls: type[ActionSpec]) -> str:
    return str(getattr(cls, "name", "") or cls.__name__)


def _raw_item(data: Mapping[str, Any], section: str, index: int) -> Mapping[str, Any]:
    items = data.get(section)
    item = items[index] if isinstance(items, list) and index < len(items) else None
    return item if isinstance(item, Mapping) else {}


def _step_users(step: ActionSpec) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """The user references of a step that are not templates."""
    from rules.actions import CreateTaskSpec, EscalateSpec

    if isinstance(step, CreateTaskSpec):
        if isinstance(step.responsible, str):
            yield ("responsible",), step.responsible
        for k, auditor in enumerate(step.auditors):
            if isinstance(auditor, str):
                yield ("auditors", k), auditor
    elif isinstance(step, EscalateSpec) and isinstance(step.to, str):
        yield ("to",), step.to
    elif isinstance(step, AssignCaptain) and step.fallback is not None:
        yield ("fallback",), step.fallback
    elif isinstance(step, AssignSpec):
        for k, member in enumerate(step.group):
            yield ("group", k), member


def _step_names(step: ActionSpec) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """Stages and fields a step names (for the stage list and ``check --online``)."""
    from rules.actions import UpdateFieldsSpec

    if isinstance(step, MoveStageSpec) and "{" not in step.stage.source:
        yield ("stage",), "stage", step.stage.source
    elif isinstance(step, ReopenSpec):
        yield ("default_stage",), "stage", step.default_stage
    elif isinstance(step, UpdateFieldsSpec):
        for key in step.values:
            yield (key,), "field", key
    elif isinstance(step, CloseDealSpec):
        for key in ("reason_from", "reason_field"):
            if getattr(step, key):
                yield (key,), "field", getattr(step, key)
    elif isinstance(step, (AssignCaptain, AssignSpec)):
        yield ("field",), "field", step.field
        if isinstance(step, AssignCaptain) and step.territory_field:
            yield ("territory_field",), "field", step.territory_field
    for sub, template in step_templates(step):
        for name in _deal_fields_named(template):
            yield sub, "field", name
    # A step of its own module says what it names (a stage guard's stages, its required fields).
    yield from getattr(step, "names", lambda: ())()


def _deal_fields_named(template: Template) -> list[str]:
    from rules.templates import _ENV

    chains: list[tuple[str, tuple[Any, ...]]] = []
    _chains(_ENV.parse(template.source), chains, set())
    return [
        str(keys[1]) for root, keys in chains if root == "deal" and len(keys) > 1 and keys[0] == "fields" and keys[1]
    ]


def _walk_condition(
    spec: Any,
    path: Path_,
    crm: str | None,
    deadlines: list[str],
    out: Meaning,
    problem: Callable[[Path_, str], None],
) -> None:
    """Deadline names, stages, pipelines and fields a raw ``when`` names."""
    if isinstance(spec, list):
        for k, item in enumerate(spec):
            _walk_condition(item, (*path, k), crm, deadlines, out, problem)
        return
    if not isinstance(spec, Mapping):
        return
    for key, value in spec.items():
        here = (*path, key)
        if key in ("all", "any", "not"):
            _walk_condition(value, here, crm, deadlines, out, problem)
        elif key == "deadline":
            for name in value if isinstance(value, list) else [value]:
                if str(name) not in deadlines:
                    hint = did_you_mean(str(name), deadlines) or (
                        f"; defined: {', '.join(deadlines)}" if deadlines else "; none is defined under deadlines"
                    )
                    problem(here, f"no deadline named {name!r} under deadlines, so this never holds{hint}")
        elif key in ("stage", "pipeline") and crm is not None:
            for value_item in value if isinstance(value, list) else [value]:
                out.references.append(Reference(key, crm, str(value_item), here))
        elif key == "stage_changed" and isinstance(value, Mapping) and crm is not None:
            for side in ("from", "to"):
                items = value.get(side)
                for value_item in items if isinstance(items, list) else [] if items is None else [items]:
                    out.references.append(Reference("stage", crm, str(value_item), (*here, side)))
        elif key == "field" and isinstance(value, str) and crm is not None and value not in DEAL_ATTRS:
            out.references.append(Reference("field", crm, value, here))


# --- "did you mean" for marshmallow's own messages -----------------------------------------


def _value_at(data: Any, path: Path_) -> Any:
    for part in path:
        if isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
            continue
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


def _keys_at(data: Mapping[str, Any], path: Path_) -> list[str]:
    """The keys a schema allows at ``path`` (a mapping's path), as far as the schemas tell."""
    from marshmallow import Schema, fields

    from adapters.registry import CRM_TYPES
    from connector.config.schema import ConfigSchema

    schema: type[Schema] | Schema = ConfigSchema
    parts = list(path)
    while parts:
        part = parts.pop(0)
        declared = schema._declared_fields.get(str(part)) if not isinstance(part, int) else None
        if declared is None:
            return []
        if str(part) == "crms" and schema is ConfigSchema:
            if not parts:
                return []
            block = _value_at(data, ("crms", parts.pop(0)))
            kind = block.get("type") if isinstance(block, Mapping) else None
            if kind not in CRM_TYPES or parts:
                return []
            return [f.data_key or n for n, f in CRM_TYPES[kind].settings()._declared_fields.items()]
        if isinstance(declared, fields.List):
            declared = declared.inner
            if parts and isinstance(parts[0], int):
                parts.pop(0)
        elif isinstance(declared, fields.Dict) and declared.value_field is not None:
            declared = declared.value_field
            if parts:
                parts.pop(0)
        if not isinstance(declared, fields.Nested):
            return []
        nested = declared.nested
        schema = nested if isinstance(nested, (Schema, type)) else schema  # type: ignore[assignment]
    return [f.data_key or n for n, f in schema._declared_fields.items()]


def explain(data: Mapping[str, Any], path: Path_, message: str) -> str:
    """Marshmallow's message with the closest allowed key or value."""
    if message == "Unknown field." and path:
        allowed = _keys_at(data, path[:-1])
        hint = did_you_mean(str(path[-1]), allowed) or (f"; allowed: {', '.join(allowed)}" if allowed else "")
        return f"unknown key {path[-1]!r}{hint}"
    if message == "Missing data for required field." and path:
        return f"{path[-1]!r} is required here: add it (docs/configuration.md lists every key)"
    if message == "Field may not be null.":
        return "is empty: give it a value, or leave the key out where it has a default"
    if message.startswith("Not a valid "):
        kind = message.removeprefix("Not a valid ").rstrip(".")  # the value is not repeated: it may be a secret
        return f"must be {'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"
    if message.startswith("Must be one of: "):
        choices = [c.strip() for c in message.removeprefix("Must be one of: ").rstrip(".").split(",")]
        value = _value_at(data, path)
        if isinstance(value, str):
            return f"{value!r} is not allowed" + (did_you_mean(value, choices) or f"; one of {', '.join(choices)}")
    return message
