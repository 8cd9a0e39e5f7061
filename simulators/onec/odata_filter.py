"""OData 3.0 ``$filter`` as 1C:Enterprise's standard interface reads it, and entity keys.

The simulator compiles a filter against an entity set's field types and evaluates it per entity.
Clients build their filters on their own (the 1C adapter has ``adapters.onec.odata``); this
module only reads them, as the real server would.

Supported: ``eq ne gt ge lt le and or not``, parentheses, field paths (``Контрагент/ИНН`` through
a reference, ``d/Сумма`` inside a lambda), ``any``/``all`` over tabular sections, the literals
``guid'…'``, ``datetime'2024-01-01T00:00:00'``, ``'strings'`` (``''`` escapes a quote), numbers,
``true``/``false``/``null``, and the functions ``substringof startswith endswith like tolower
toupper trim length concat year month day hour minute second cast``.

Types are checked when the filter is compiled, as 1C does: a guid field compared with a plain
string, or a date with a number, is a 400 error, not an empty answer. Strings compare
case-insensitively and ignore trailing spaces (1C's database collation). A ``+`` is not a space
here: a client that form-encodes spaces gets a syntax error, which is the real server's quirk.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
EMPTY_DATE = "0001-01-01T00:00:00"

# Field types the schema speaks (the simulator's vocabulary, mapped onto Edm types in $metadata).
GUID, DATETIME, STRING, NUMBER, BOOL = "guid", "datetime", "string", "number", "bool"
ENUM, COMPOSITE, TYPE_NAME, INT64 = "enum", "composite", "type", "int64"

MAX_DEPTH = 60  # nesting limit: a hostile filter must not exhaust the interpreter's stack

_GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DT_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,7}))?)?")
_NUMBER_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?[mMdDfFlL]?")
_IDENT_RE = re.compile(r"[^\W\d]\w*")
_TYPED_LITERALS = frozenset({"guid", "datetime", "datetimeoffset", "time", "binary", "X"})
_KEYWORDS = frozenset(
    {"and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "add", "sub", "mul", "div", "mod", "isof"}
)
_CMP_OPS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})


class FilterError(ValueError):
    """A malformed or ill-typed expression; the simulator answers it with HTTP 400."""


@dataclass(frozen=True)
class Guid:
    """A guid literal value (lower-case canonical form)."""

    value: str


@dataclass(frozen=True)
class TypedRef:
    """``cast(guid'…', 'Catalog_X')``: a reference of a known type, for composite fields."""

    guid: str
    type_name: str  # without the "StandardODATA." prefix


@dataclass(frozen=True)
class Nav:
    """A navigation property in a field map: follow ``key_field`` into entity set ``target``."""

    target: str
    key_field: str


FieldMap = Mapping[str, Any]  # name -> type string | FieldMap (tabular rows) | Nav
SchemaOf = Callable[[str], FieldMap | None]
Deref = Callable[[str, str], Mapping[str, Any] | None]


# --- literals -----------------------------------------------------------------------------------


def is_guid(text: Any) -> bool:
    """True for a canonical 8-4-4-4-12 hex guid string."""
    return isinstance(text, str) and _GUID_RE.fullmatch(text) is not None


def guid_literal(value: str | uuid.UUID | Guid) -> str:
    """``guid'…'`` for a guid string or UUID; ValueError for anything else."""
    text = value.value if isinstance(value, Guid) else str(value)
    if not is_guid(text):
        raise ValueError(f"not a guid: {text!r}")
    return f"guid'{text.lower()}'"


def string_literal(value: str) -> str:
    """``'…'`` with every quote doubled."""
    return "'" + value.replace("'", "''") + "'"


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


# --- tokens -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One lexical token; ``kind`` is ident, op, string, guid, datetime, number, bool, null or end."""

    kind: str
    value: Any
    pos: int


def _read_string(text: str, start: int) -> tuple[str, int]:
    """The quoted string starting at ``text[start] == "'"``; ``''`` is an escaped quote."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "'":
            if i + 1 < len(text) and text[i + 1] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise FilterError(f"Незакрытая строковая константа в позиции {start}")


def tokenize(text: str) -> list[Token]:
    """Split an expression into tokens; raises FilterError on anything 1C would not read."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch in "(),:/=":
            tokens.append(Token("op", ch, i))
            i += 1
            continue
        if ch == "'":
            value, j = _read_string(text, i)
            tokens.append(Token("string", value, i))
            i = j
            continue
        if ch in "0123456789" or (ch == "-" and i + 1 < n and text[i + 1] in "0123456789"):
            m = _NUMBER_RE.match(text, i)
            assert m is not None  # a digit always starts a number
            raw = m.group().rstrip("mMdDfFlL")
            try:
                number = Decimal(raw)
            except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid forms
                raise FilterError(f"Неверное число в позиции {i}") from exc
            if not number.is_finite():
                raise FilterError(f"Неверное число в позиции {i}")
            tokens.append(Token("number", number, i))
            i = m.end()
            continue
        m = _IDENT_RE.match(text, i)
        if not m:
            raise FilterError(f"Неожиданный символ {ch!r} в позиции {i}")
        word, j = m.group(), m.end()
        if word in _TYPED_LITERALS and j < n and text[j] == "'":
            raw, j = _read_string(text, j)
            tokens.append(_typed_literal(word, raw, i))
        elif word in ("true", "false"):
            tokens.append(Token("bool", word == "true", i))
        elif word == "null":
            tokens.append(Token("null", None, i))
        else:
            tokens.append(Token("ident", word, i))
        i = j
    tokens.append(Token("end", None, n))
    return tokens


def _typed_literal(word: str, raw: str, pos: int) -> Token:
    if word == "guid":
        if not is_guid(raw):
            raise FilterError(f"Неверное значение guid в позиции {pos}: {raw!r}")
        return Token("guid", raw.lower(), pos)
    if word == "datetime":
        parsed = parse_datetime(raw)
        if parsed is None:  # a zone suffix (Z, +03:00) lands here too: 1C dates have none
            raise FilterError(f"Неверное значение даты в позиции {pos}: {raw!r}")
        return Token("datetime", parsed, pos)
    raise FilterError(f"Литерал {word}'…' не поддерживается")


def parse_key(text: str) -> list[tuple[str | None, Any]]:
    """An entity key as in ``Set(guid'…')`` or ``Set(Ref_Key=guid'…', LineNumber=1)``.

    Values come back as Guid, datetime, Decimal, str, bool or None.
    """
    tokens = tokenize(text)
    parts: list[tuple[str | None, Any]] = []
    i = 0
    while True:
        name: str | None = None
        if tokens[i].kind == "ident" and tokens[i + 1].kind == "op" and tokens[i + 1].value == "=":
            name = tokens[i].value
            i += 2
        tok = tokens[i]
        if tok.kind not in ("guid", "datetime", "number", "string", "bool", "null"):
            raise FilterError("Неверный ключ сущности")
        parts.append((name, Guid(tok.value) if tok.kind == "guid" else tok.value))
        i += 1
        if tokens[i].kind == "end":
            return parts
        if tokens[i].kind != "op" or tokens[i].value != ",":
            raise FilterError("Неверный ключ сущности")
        i += 1


# --- syntax tree ------------------------------------------------------------------------------


@dataclass
class _Ctx:
    entity: Mapping[str, Any]
    deref: Deref | None
    scope: dict[str, Mapping[str, Any]]


class _Node:
    type: str = BOOL

    def eval(self, ctx: _Ctx) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class _Literal(_Node):
    value: Any
    type: str

    def eval(self, ctx: _Ctx) -> Any:
        return self.value


@dataclass
class _Prop(_Node):
    """A field path; steps are (name, Nav | None). ``root`` is a lambda variable or None."""

    root: str | None
    steps: list[tuple[str, Nav | None]]
    type: str
    row_fields: FieldMap | None = None  # for a tabular section: its rows' fields

    def eval(self, ctx: _Ctx) -> Any:
        return self._walk(ctx, self.steps)

    def companion(self, ctx: _Ctx, suffix: str) -> Any:
        """The sibling ``<last>_Type`` field of a composite value."""
        *head, (last, _) = self.steps
        return self._walk(ctx, [*head, (last + suffix, None)])

    def _walk(self, ctx: _Ctx, steps: list[tuple[str, Nav | None]]) -> Any:
        node: Any = ctx.scope[self.root] if self.root is not None else ctx.entity
        for name, nav in steps:
            if node is None:
                return None
            if nav is not None:
                key = node.get(nav.key_field) if isinstance(node, Mapping) else None
                if not key or key == EMPTY_GUID or ctx.deref is None:
                    return None
                node = ctx.deref(nav.target, str(key))
                continue
            node = node.get(name) if isinstance(node, Mapping) else None
        return node


@dataclass
class _Not(_Node):
    operand: _Node
    type: str = BOOL

    def eval(self, ctx: _Ctx) -> Any:
        return not _truthy(self.operand.eval(ctx))


@dataclass
class _Logic(_Node):
    op: str
    left: _Node
    right: _Node
    type: str = BOOL

    def eval(self, ctx: _Ctx) -> Any:
        if self.op == "and":
            return _truthy(self.left.eval(ctx)) and _truthy(self.right.eval(ctx))
        return _truthy(self.left.eval(ctx)) or _truthy(self.right.eval(ctx))


@dataclass
class _Compare(_Node):
    op: str
    left: _Node
    right: _Node
    kind: str  # the common type the operands compare as
    type: str = BOOL

    def eval(self, ctx: _Ctx) -> Any:
        a, b = self.left.eval(ctx), self.right.eval(ctx)
        # A composite field against cast(guid, type): both the value and its type must match.
        for side, other_value in ((self.left, b), (self.right, a)):
            if isinstance(other_value, TypedRef) and isinstance(side, _Prop) and side.type == COMPOSITE:
                actual_type = str(side.companion(ctx, "_Type") or "").removeprefix("StandardODATA.")
                if actual_type != other_value.type_name:
                    return self.op == "ne"
        x, y = _normalize(a, self.kind), _normalize(b, self.kind)
        if self.op == "eq":
            return x == y
        if self.op == "ne":
            return x != y
        if x is None or y is None:
            return False
        try:
            if self.op == "gt":
                return x > y
            if self.op == "ge":
                return x >= y
            if self.op == "lt":
                return x < y
            return x <= y
        except TypeError:  # stored data of an unexpected shape: no match rather than a crash
            return False


@dataclass
class _Call(_Node):
    name: str
    args: list[_Node]
    type: str

    def eval(self, ctx: _Ctx) -> Any:
        values = [a.eval(ctx) for a in self.args]
        return _FUNCTIONS[self.name][2](*values)


@dataclass
class _Lambda(_Node):
    kind: str  # any | all
    collection: _Prop
    var: str | None
    body: _Node | None
    type: str = BOOL

    def eval(self, ctx: _Ctx) -> Any:
        rows = self.collection.eval(ctx)
        rows = [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []
        if self.body is None or self.var is None:  # any() without a predicate: "not empty"
            return bool(rows)
        results = (_truthy(self.body.eval(_Ctx(ctx.entity, ctx.deref, {**ctx.scope, self.var: r}))) for r in rows)
        return any(results) if self.kind == "any" else all(results)


def _truthy(value: Any) -> bool:
    return value is True


def _normalize(value: Any, kind: str) -> Any:
    """A comparable form of ``value`` when compared as ``kind`` (None stays None)."""
    if value is None:
        return None
    if isinstance(value, TypedRef):
        return value.guid
    if isinstance(value, Guid):
        return value.value
    if kind in (GUID, COMPOSITE):
        return str(value).lower()
    if kind == DATETIME:
        if isinstance(value, datetime):
            return value
        return parse_datetime(str(value))
    if kind == NUMBER:
        if isinstance(value, bool):
            return None
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None
    if kind == BOOL:
        return value if isinstance(value, bool) else None
    if kind == STRING:
        return str(value).rstrip(" ").casefold()
    return value


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _both(a: Any, b: Any) -> bool:
    return a is not None and b is not None


def _ci(value: Any) -> str:
    return str(value).casefold()


def _like(text: Any, pattern: Any) -> bool:
    if text is None or pattern is None:
        return False
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in _ci(pattern))
    return re.fullmatch(regex, _ci(text), flags=re.DOTALL) is not None


def _date_part(attr: str) -> Callable[[Any], Any]:
    def part(value: Any) -> Any:
        parsed = value if isinstance(value, datetime) else parse_datetime(str(value or ""))
        return None if parsed is None else Decimal(getattr(parsed, attr))

    return part


def _cast(value: Any, type_name: Any) -> Any:
    if value is None:
        return None
    return TypedRef(
        value.value if isinstance(value, Guid) else str(value).lower(), str(type_name).removeprefix("StandardODATA.")
    )


_TEXT = (STRING,)
# name -> (argument types, result type, implementation)
_FUNCTIONS: dict[str, tuple[tuple[str, ...], str, Callable[..., Any]]] = {
    "substringof": (_TEXT * 2, BOOL, lambda a, b: _both(a, b) and _ci(a) in _ci(b)),
    "startswith": (_TEXT * 2, BOOL, lambda a, b: _both(a, b) and _ci(a).startswith(_ci(b))),
    "endswith": (_TEXT * 2, BOOL, lambda a, b: _both(a, b) and _ci(a).endswith(_ci(b))),
    "like": (_TEXT * 2, BOOL, _like),
    "tolower": (_TEXT, STRING, lambda a: None if a is None else str(a).lower()),
    "toupper": (_TEXT, STRING, lambda a: None if a is None else str(a).upper()),
    "trim": (_TEXT, STRING, lambda a: None if a is None else str(a).strip()),
    "length": (_TEXT, NUMBER, lambda a: None if a is None else Decimal(len(str(a)))),
    "concat": (_TEXT * 2, STRING, lambda a, b: None if a is None or b is None else f"{a}{b}"),
    **{name: ((DATETIME,), NUMBER, _date_part(name)) for name in ("year", "month", "day", "hour", "minute", "second")},
    "cast": ((GUID, STRING), "ref", _cast),
}


def _base(t: str) -> str:
    """The comparison family of a field type."""
    if t in (ENUM, TYPE_NAME):
        return STRING
    if t == INT64:
        return NUMBER
    return t


def _common_kind(left: str, right: str) -> str | None:
    """The type two operands compare as, None when 1C would refuse the comparison."""
    a, b = _base(left), _base(right)
    if "collection" in (a, b):
        return None
    if a == "null":
        return b if b != "null" else STRING
    if b == "null" or a == b:
        return a
    pair = {a, b}
    if COMPOSITE in pair and pair & {STRING, GUID, "ref"}:
        return COMPOSITE
    if pair == {GUID, "ref"}:
        return GUID
    return None


def _accepts(param: str, actual: str) -> bool:
    got = _base(actual)
    if got == "null":
        return True
    if param == STRING:
        return got in (STRING, COMPOSITE)
    return got == param


# --- parser -----------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, fields: FieldMap, schema_of: SchemaOf | None) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.fields = fields
        self.schema_of = schema_of
        self.scope: dict[str, FieldMap] = {}
        self.depth = 0

    # token helpers
    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def take(self) -> Token:
        tok = self.peek()
        self.i += 1
        return tok

    def is_op(self, value: str, offset: int = 0) -> bool:
        tok = self.peek(offset)
        return tok.kind == "op" and tok.value == value

    def is_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "ident" and tok.value in words

    def expect_op(self, value: str) -> None:
        if not self.is_op(value):
            raise FilterError(f"Ожидался символ {value!r} в позиции {self.peek().pos}")
        self.take()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError("Слишком сложное выражение отбора")

    # grammar: or > and > eq/ne > gt/ge/lt/le > not > primary
    def parse(self) -> _Node:
        if self.peek().kind == "end":
            raise FilterError("Пустое выражение отбора")
        node = self.or_expr()
        if self.peek().kind != "end":
            raise FilterError(f"Неожиданная лексема в позиции {self.peek().pos}")
        if _base(node.type) not in (BOOL, "null"):
            raise FilterError("Выражение отбора должно иметь тип Булево")
        return node

    def or_expr(self) -> _Node:
        node = self.and_expr()
        while self.is_word("or"):
            self.take()
            node = _Logic("or", self._bool(node), self._bool(self.and_expr()))
        return node

    def and_expr(self) -> _Node:
        node = self.eq_expr()
        while self.is_word("and"):
            self.take()
            node = _Logic("and", self._bool(node), self._bool(self.eq_expr()))
        return node

    def eq_expr(self) -> _Node:
        node = self.rel_expr()
        while self.is_word("eq", "ne"):
            op = self.take().value
            node = self._compare(op, node, self.rel_expr())
        return node

    def rel_expr(self) -> _Node:
        node = self.unary()
        while self.is_word("gt", "ge", "lt", "le"):
            op = self.take().value
            node = self._compare(op, node, self.unary())
        return node

    def unary(self) -> _Node:
        self.enter()
        try:
            if self.is_word("not"):
                self.take()
                return _Not(self._bool(self.unary()))
            return self.primary()
        finally:
            self.depth -= 1

    def primary(self) -> _Node:
        tok = self.peek()
        if self.is_op("("):
            self.take()
            self.enter()
            node = self.or_expr()
            self.depth -= 1
            self.expect_op(")")
            return node
        literal_types = {
            "string": STRING,
            "guid": GUID,
            "datetime": DATETIME,
            "number": NUMBER,
            "bool": BOOL,
            "null": "null",
        }
        if tok.kind in literal_types:
            self.take()
            value = Guid(tok.value) if tok.kind == "guid" else tok.value
            return _Literal(value, literal_types[tok.kind])
        if tok.kind == "ident":
            if tok.value in _KEYWORDS:
                raise FilterError(f"Неожиданный оператор {tok.value!r} в позиции {tok.pos}")
            if self.is_op("(", 1):
                return self.call()
            return self.path()
        raise FilterError(f"Неожиданная лексема в позиции {tok.pos}")

    def call(self) -> _Node:
        tok = self.take()
        spec = _FUNCTIONS.get(tok.value)
        if spec is None:
            raise FilterError(f"Неизвестная функция {tok.value!r}")
        params, result, _ = spec
        self.expect_op("(")
        args: list[_Node] = []
        self.enter()
        while True:
            args.append(self.or_expr())
            if self.is_op(","):
                self.take()
                continue
            break
        self.depth -= 1
        self.expect_op(")")
        if len(args) != len(params):
            raise FilterError(f"Функция {tok.value} ожидает {len(params)} параметр(а)")
        for param, arg in zip(params, args, strict=True):
            if not _accepts(param, arg.type):
                raise FilterError(f"Неверный тип параметра функции {tok.value}")
        if tok.value == "cast" and not isinstance(args[1], _Literal):
            raise FilterError("Второй параметр cast должен быть строковой константой")
        return _Call(tok.value, args, result)

    def path(self) -> _Node:
        first = self.take()
        root: str | None = None
        fields: FieldMap | None = self.fields
        names = [str(first.value)]
        if first.value in self.scope:  # a lambda variable: the path walks one tabular row
            root, fields, names = str(first.value), self.scope[first.value], []
        while self.is_op("/") and self.peek(1).kind == "ident" and self.peek(1).value not in ("any", "all"):
            self.take()
            names.append(str(self.take().value))
        if not names:
            raise FilterError(f"Переменная {first.value} используется без свойства")
        steps: list[tuple[str, Nav | None]] = []
        field_type, row_fields = "", None
        for idx, name in enumerate(names):
            spec = fields.get(name) if fields is not None else None
            if spec is None:
                raise FilterError(f"Свойство {name!r} не найдено")
            if isinstance(spec, Nav):
                target = self.schema_of(spec.target) if self.schema_of else None
                if target is None:
                    raise FilterError(f"Свойство {name!r} не найдено")
                fields, field_type = target, "nav"
            elif isinstance(spec, Mapping):
                fields, row_fields, field_type = None, spec, "collection"
            else:
                fields, field_type = None, str(spec)
            steps.append((name, spec if isinstance(spec, Nav) else None))
            if idx < len(names) - 1 and field_type != "nav":
                raise FilterError(f"Свойство {name!r} не имеет вложенных свойств")
        if self.is_op("/") and self.peek(1).kind == "ident":  # /any( or /all(
            if field_type != "collection" or row_fields is None:
                raise FilterError("any/all применимы только к табличным частям")
            self.take()
            kind = str(self.take().value)
            return self.lambda_(kind, _Prop(root, steps, "collection", row_fields), row_fields)
        if field_type == "nav":
            raise FilterError("Ссылку нельзя сравнивать: укажите поле …_Key")
        return _Prop(root, steps, field_type, row_fields)

    def lambda_(self, kind: str, collection: _Prop, row_fields: FieldMap) -> _Node:
        self.expect_op("(")
        if self.is_op(")"):
            self.take()
            if kind == "all":
                raise FilterError("all требует условия")
            return _Lambda(kind, collection, None, None)
        var = self._expect_ident()
        if var in self.fields or var in self.scope or var in _KEYWORDS:
            raise FilterError(f"Недопустимое имя переменной {var!r}")
        self.expect_op(":")
        self.scope[var] = row_fields
        self.enter()
        try:
            body = self._bool(self.or_expr())
        finally:
            self.depth -= 1
            del self.scope[var]
        self.expect_op(")")
        return _Lambda(kind, collection, var, body)

    def _expect_ident(self) -> str:
        tok = self.take()
        if tok.kind != "ident" or tok.value in _KEYWORDS:
            raise FilterError(f"Ожидалось имя свойства в позиции {tok.pos}")
        return str(tok.value)

    def _bool(self, node: _Node) -> _Node:
        if _base(node.type) not in (BOOL, "null"):
            raise FilterError("Операнд логической операции должен иметь тип Булево")
        return node

    def _compare(self, op: str, left: _Node, right: _Node) -> _Node:
        kind = _common_kind(left.type, right.type)
        if kind is None:
            raise FilterError(f"Несовместимые типы операндов: {left.type} {op} {right.type}")
        return _Compare(op, left, right, kind)


def sort_key(value: Any, field_type: str) -> tuple[int, Any]:
    """An ``$orderby`` key for a stored value of ``field_type``; empty values sort first."""
    kind = _base(field_type)
    if kind == COMPOSITE:
        kind = STRING
    normal = _normalize(value, kind)
    if normal is None:
        return (0, "")
    if isinstance(normal, bool):
        return (1, int(normal))
    return (1, normal)


# --- public entry points ----------------------------------------------------------------------


class CompiledFilter:
    """A parsed, type-checked ``$filter``: call ``matches(entity)`` per entity."""

    def __init__(self, root: _Node, deref: Deref | None) -> None:
        self._root = root
        self._deref = deref

    def matches(self, entity: Mapping[str, Any]) -> bool:
        """True when ``entity`` satisfies the filter (null comparisons are false, as in SQL)."""
        return _truthy(self._root.eval(_Ctx(entity, self._deref, {})))


def compile_filter(
    text: str, fields: FieldMap, *, schema_of: SchemaOf | None = None, deref: Deref | None = None
) -> CompiledFilter:
    """Parse ``text`` against ``fields`` (name -> type | row FieldMap | Nav); FilterError if bad.

    ``schema_of(set)`` gives a navigation target's fields, ``deref(set, guid)`` its entity.
    """
    return CompiledFilter(_Parser(text, fields, schema_of).parse(), deref)
