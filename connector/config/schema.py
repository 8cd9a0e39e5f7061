"""The config file's schema (marshmallow) and the typed Config it loads into."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from adapters.contracts import CommandSink, ConfiguredCrm, CrmSettings, DealSource, DuplicateSearch, FactSource
from adapters.registry import configured, cross_check, load_settings
from connector.config.alerts import AlertsSchema
from connector.config.channels import configured_channels, load_channels
from connector.config.loader import ConfigProblem, RawConfig, dotted, load_file, load_raw
from connector.config.meaning import check_meaning, explain
from domain import Command, CreateTask, SendMessage
from domain.fields import Span
from domain.suggest import did_you_mean
from rules.actions import CancelDeadlineSpec, StartDeadlineSpec
from rules.calendars import CalendarSet
from rules.deadlines import DeadlineDef
from rules.duplicates import FindDuplicatesSpec
from rules.indicators import Indicator
from rules.model import Rule
from rules.org import Org, unknown_calendar
from rules.org_checks import calendar_set_of, org_problems
from rules.org_schema import NamedCalendarSchema, OrgSchema
from rules.planning_schema import IndicatorsField, history_problem, report_problems
from rules.plans import Teams, teams_from_org
from rules.recurring import RecurringDef, RecurringSchema, recurring_problems
from rules.reports import ReportDef
from rules.schema import DeadlineSchema, ReportSchema, RuleSchema, TerritorySchema, build_deadline
from rules.territories import Territory


class StorageSchema(Schema):
    url = fields.String(
        load_default="sqlite:///connector.db",
        metadata={"doc": "SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://…"},
    )
    apply_migrations = fields.Boolean(load_default=True, metadata={"doc": "migrate the schema on start"})
    connect_timeout = Span(
        load_default=5.0, metadata={"doc": "PostgreSQL: give up opening a connection after this (at least 2 s)"}
    )
    keepalive = Span(
        load_default=30.0,
        metadata={
            "doc": "PostgreSQL: TCP keepalives on both ends after this much silence (probes every third of it, "
            "3 of them), so a connection to a vanished peer is dropped"
        },
    )
    statement_timeout = Span(
        load_default=30.0,
        metadata={
            "doc": "PostgreSQL: the server cancels a statement of the worker, dispatcher, scheduler or a "
            "command after this, and the client gives the connection up 0.5 s later if no answer came"
        },
    )
    lock_timeout = Span(
        load_default=10.0, metadata={"doc": "PostgreSQL: how long those wait for a row lock before giving up"}
    )
    intake_statement_timeout = Span(
        load_default=1.5,
        metadata={
            "doc": "PostgreSQL: the same limit for the intake's inserts (a delivery not stored in time gets 503)"
        },
    )
    intake_lock_timeout = Span(load_default=1.0, metadata={"doc": "PostgreSQL: the intake's lock wait"})
    idle_in_transaction_timeout = Span(
        load_default=60.0,
        metadata={
            "doc": "PostgreSQL: the server ends a session idle inside a transaction this long (a client that "
            "vanished mid-transaction frees its row locks)"
        },
    )
    idle_session_timeout = Span(
        load_default=900.0,
        metadata={
            "doc": "PostgreSQL 14+: the server ends a session idle this long (a client that vanished frees its "
            "advisory locks; pooled connections are reopened as needed); longer than any CRM call"
        },
    )
    busy_timeout = Span(load_default=5.0, metadata={"doc": "SQLite: how long a write waits for another one to finish"})
    retention = Span(
        load_default=90 * 86400.0,
        metadata={
            "doc": "processed inbox rows, written outbox rows and audit lines older than this are purged "
            "(never less than server.replay_window)"
        },
    )
    purge_every = Span(load_default=3600.0, metadata={"doc": "how often the leader purges what retention lets go"})


class ServerSchema(Schema):
    host = fields.String(
        load_default="127.0.0.1",
        metadata={"doc": "address to listen on: 127.0.0.1 behind a local proxy, 0.0.0.0 for all interfaces"},
    )
    port = fields.Integer(
        load_default=8080,
        validate=validate.Range(min=0, max=65535),
        metadata={"doc": "TCP port of the intake; 0 picks a free one"},
    )
    max_body_bytes = fields.Integer(
        load_default=256 * 1024,
        validate=validate.Range(min=1024),
        metadata={"doc": "larger webhook bodies are refused with 413"},
    )
    threads = fields.Integer(
        load_default=8,
        validate=validate.Range(min=1, max=64),
        metadata={"doc": "Python threads serving requests (embedded mode)"},
    )
    engine = fields.String(
        load_default="granian",
        validate=validate.OneOf(["granian", "waitress"]),
        metadata={
            "doc": "the embedded intake's HTTP server: granian (Rust, in the process) or waitress (pure "
            "Python, about two thirds of the rate); both read a body whole before a thread runs the app"
        },
    )
    allow_from = fields.List(
        fields.String(),
        load_default=list,
        metadata={"doc": "addresses or networks (CIDR) allowed to post webhooks; empty: any"},
    )
    behind_proxy = fields.Boolean(
        load_default=False, metadata={"doc": "take the client address from one X-Forwarded-For hop"}
    )
    replay_window = Span(
        load_default=86400.0, metadata={"doc": "deliveries stamped older than this (or from the future) are refused"}
    )
    status_token = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=16),
        metadata={
            "doc": "enables the status page at /status; sign in with it (a session "
            "cookie) or send it as a Bearer token or the basic-auth password, never in a URL"
        },
    )

    @validates_schema
    def check_networks(self, data: dict[str, Any], **kwargs: Any) -> None:
        _check_networks(data.get("allow_from") or [])


def _check_networks(values: list[str]) -> None:
    import ipaddress

    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValidationError({"allow_from": [f"{value!r} is not an address or network: {exc}"]}) from exc


class CalendarSchema(Schema):
    country = fields.String(load_default="RU", metadata={"doc": "country of the production calendar"})
    timezone = fields.String(
        load_default="Europe/Moscow", metadata={"doc": "IANA zone for working time, cron schedules and displayed times"}
    )
    work_hours = fields.String(
        load_default="09:00-18:00",
        validate=validate.Regexp(r"^\d\d:\d\d-\d\d:\d\d$", error="like 09:00-18:00"),
        metadata={"doc": "working hours of a working day"},
    )
    extra_days_off = fields.List(
        fields.Date(), load_default=list, metadata={"doc": "dates to treat as days off, on top of the calendar"}
    )
    extra_working_days = fields.List(
        fields.Date(), load_default=list, metadata={"doc": "dates to treat as working days"}
    )

    @validates_schema
    def check_timezone(self, data: dict[str, Any], **kwargs: Any) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(data["timezone"])
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValidationError({"timezone": [f"unknown time zone {data['timezone']!r}"]}) from exc


class WorkerSchema(Schema):
    every = Span(load_default=1.0, metadata={"doc": "how often the worker looks at the inbox"})
    batch = fields.Integer(
        load_default=50, validate=validate.Range(min=1, max=1000), metadata={"doc": "inbox rows claimed per tick"}
    )
    max_attempts = fields.Integer(
        load_default=10,
        validate=validate.Range(min=1),
        metadata={"doc": "tries after which `status` flags an inbox row still retried (it is never given up)"},
    )
    lease = Span(load_default=120.0, metadata={"doc": "a claimed row is free again after this"})


class DispatcherSchema(Schema):
    every = Span(load_default=1.0, metadata={"doc": "how often the dispatcher looks at the outbox"})
    batch = fields.Integer(
        load_default=200,
        validate=validate.Range(min=1, max=1000),
        metadata={"doc": "outbox rows claimed per tick (a CRM with a batch API gets them in calls of up to 50)"},
    )
    max_attempts = fields.Integer(
        load_default=8, validate=validate.Range(min=1), metadata={"doc": "tries before a write becomes a dead letter"}
    )
    concurrency = fields.Integer(
        load_default=4,
        validate=validate.Range(min=1, max=32),
        metadata={
            "doc": "writes to different deals carried out at once (one deal's writes stay in order); "
            "the CRM's rate limit still holds for all of them together"
        },
    )
    backoff = Span(load_default=10.0, metadata={"doc": "first retry delay; doubles each try"})
    backoff_max = Span(load_default=3600.0, metadata={"doc": "longest retry delay"})
    lease = Span(load_default=120.0, metadata={"doc": "a claimed row is free again after this"})
    reconcile_after = Span(
        load_default=30.0,
        metadata={
            "doc": "after a write whose answer was lost, wait this long before looking for it in the CRM "
            "(longer than the CRM may take to finish a request)"
        },
    )


class TimersSchema(Schema):
    every = Span(load_default=30.0, metadata={"doc": "how often due deadlines are looked for (one indexed query)"})
    batch = fields.Integer(
        load_default=500, validate=validate.Range(min=1), metadata={"doc": "due deadlines handled per scan"}
    )


class LoggingSchema(Schema):
    level = fields.String(
        load_default="INFO",
        validate=validate.OneOf(("DEBUG", "INFO", "WARNING", "ERROR")),
        metadata={"doc": "least severe level written"},
    )
    format = fields.String(
        load_default="text",
        validate=validate.OneOf(("text", "json")),
        metadata={"doc": "text lines, or one JSON object per line"},
    )


class ConfigSchema(Schema):
    storage = fields.Nested(StorageSchema, load_default=lambda: StorageSchema().load({}))
    server = fields.Nested(ServerSchema, load_default=lambda: ServerSchema().load({}))
    calendar = fields.Nested(CalendarSchema, load_default=lambda: CalendarSchema().load({}))
    worker = fields.Nested(WorkerSchema, load_default=lambda: WorkerSchema().load({}))
    dispatcher = fields.Nested(DispatcherSchema, load_default=lambda: DispatcherSchema().load({}))
    logging = fields.Nested(LoggingSchema, load_default=lambda: LoggingSchema().load({}))
    timers = fields.Nested(TimersSchema, load_default=lambda: TimersSchema().load({}))
    crms = fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^[a-z0-9_-]+$", error="lower-case letters, digits, - and _")),
        values=fields.Raw(),
        required=True,
    )
    territories = fields.List(fields.Nested(TerritorySchema), load_default=list)
    rules = fields.List(fields.Nested(RuleSchema), load_default=list)
    deadlines = fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.-]+$")),
        values=fields.Nested(DeadlineSchema),
        load_default=dict,
    )
    reports = fields.List(fields.Nested(ReportSchema), load_default=list)
    calendars = fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.-]+$")),
        values=fields.Nested(NamedCalendarSchema),
        load_default=dict,
        metadata={"doc": "named calendars besides the default one (`calendar:`)"},
    )
    org = fields.Nested(OrgSchema, load_default=dict)
    recurring = fields.List(fields.Nested(RecurringSchema), load_default=list)
    indicators = IndicatorsField(load_default=dict)
    channels = fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^[a-z0-9_-]+$", error="lower-case letters, digits, - and _")),
        values=fields.Raw(),
        load_default=dict,
    )
    alerts = fields.Nested(AlertsSchema, load_default=None)


@dataclass
class Config:
    """A loaded, validated configuration."""

    storage: dict[str, Any]
    server: dict[str, Any]
    calendar: dict[str, Any]
    worker: dict[str, Any]
    dispatcher: dict[str, Any]
    logging: dict[str, Any]
    crms: dict[str, CrmSettings]
    territories: list[Territory]
    rules: list[Rule]
    deadlines: dict[str, DeadlineDef] = field(default_factory=dict)
    reports: list[ReportDef] = field(default_factory=list)
    indicators: dict[str, Indicator] = field(default_factory=dict)
    timers: dict[str, Any] = field(default_factory=lambda: {"every": 30.0, "batch": 500})
    secrets: set[str] = field(default_factory=set)
    source: str = "<config>"
    calendars: CalendarSet | None = None  # every calendar by name; "default" is ``calendar``
    org: Org = field(default_factory=Org)
    recurring: list[RecurringDef] = field(default_factory=list)
    channels: dict[str, CrmSettings] = field(default_factory=dict)
    alerts: dict[str, Any] | None = None  # connector.alerts; None: no alerts are sent

    def teams_for(self, crm: str) -> Teams:
        """The org chart's teams in ``crm``'s user ids (what plans and their reports use)."""
        return teams_from_org(self.org, crm)

    @property
    def planning_crm(self) -> str | None:
        """The CRM whose user ids plan files give: that of the first plan-vs-fact report."""
        return next((r.crm for r in self.reports if r.indicators), next(iter(self.crms), None))


class ConfigError(Exception):
    """The config is refused; ``problems`` says every reason."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


def _flatten(messages: Any, path: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    if isinstance(messages, dict):
        out = []
        for key, value in messages.items():
            if key in ("_schema", "value"):  # marshmallow's own levels, not config keys
                out.extend(_flatten(value, path))
                continue
            parts: tuple[str | int, ...] = tuple(int(p) if p.isdigit() else p for p in str(key).split("."))
            out.extend(_flatten(value, path + parts))
        return out
    if isinstance(messages, list):
        if all(isinstance(m, str) for m in messages):
            return [(path, m) for m in messages]
        out = []
        for i, m in enumerate(messages):
            out.extend(_flatten(m, path + (i,)) if not isinstance(m, str) else [(path, m)])
        return out
    return [(path, str(messages))]


def validate_raw(raw: RawConfig, source: str) -> Config:
    """Validate parsed YAML; raise ConfigError listing every problem."""
    problems = list(raw.problems)
    if problems and not raw.data:
        raise ConfigError(source, problems)

    def add(messages: Any, base: tuple[str | int, ...] = ()) -> None:
        for path, message in _flatten(messages, base):
            problems.append(ConfigProblem(dotted(path), explain(raw.data, path, message), raw.line_of(path)))

    data: dict[str, Any] = {}
    try:
        data = ConfigSchema().load(raw.data)
    except ValidationError as exc:
        add(exc.messages)
        # The cross-checks below still run on what did validate, so one run lists every problem.
        data = exc.valid_data if isinstance(exc.valid_data, dict) else {}
    rules = [(i, r) for i, r in enumerate(data.get("rules") or []) if isinstance(r, Rule)]
    reports = [(i, r) for i, r in enumerate(data.get("reports") or []) if isinstance(r, ReportDef)]

    crms: dict[str, CrmSettings] = {}
    for name, block in (raw.data.get("crms") or {}).items() if isinstance(raw.data.get("crms"), dict) else []:
        if not isinstance(block, dict):
            add(["must be a mapping"], ("crms", name))
            continue
        try:
            crms[name] = load_settings(block)
        except ValidationError as exc:
            add(exc.messages, ("crms", name))
    known = configured(crms)
    named = set(raw.data.get("crms") or {})  # a CRM whose block has errors is still named
    if named == set(known):  # a refused block is its own problem; its neighbours' checks would only echo it
        for name, messages in cross_check(known).items():
            add(messages, ("crms", name))
    channels = load_channels(raw.data.get("channels"), named, add)
    known.update(configured_channels(channels))
    named |= set(raw.data.get("channels") or {}) if isinstance(raw.data.get("channels"), dict) else set()

    for i, rule in rules:
        if not named:
            pass  # the empty crms is reported once, not again per rule
        elif rule.crm not in named:
            add({"crm": [f"no CRM named {rule.crm!r} under crms{did_you_mean(rule.crm, named)}"]}, ("rules", i))
        elif rule.crm in known and not known[rule.crm].can(DealSource):
            add({"crm": [f"{rule.crm!r} keeps no deals for a rule to act on ({_kind(known[rule.crm])})"]}, ("rules", i))
        for j, step in enumerate(rule.actions if rule.crm in named else ()):
            if isinstance(step, FindDuplicatesSpec) and rule.crm in known and not known[rule.crm].can(DuplicateSearch):
                cannot = f"{rule.crm!r} ({_kind(known[rule.crm])}) cannot search duplicates"
                add({step.name: [cannot]}, ("rules", i, "do", j))
            for write in step.writes():
                problem = _cannot_write(write.crm or rule.crm, write.command, known, named)
                if problem:
                    add({step.name: [f"{write.param}: {problem}" if write.param else problem]}, ("rules", i, "do", j))
    for i, report in reports:
        if not named:
            pass
        elif report.crm not in named:
            add({"crm": [f"no CRM named {report.crm!r} under crms"]}, ("reports", i))
        elif report.crm in known:
            target = known[report.crm]
            problem = _cannot_write(report.crm, CreateTask, known, named)
            if not target.can(DealSource):
                add({"crm": [f"{report.crm!r} keeps no deals to report on ({_kind(target)})"]}, ("reports", i))
            elif problem:
                add({"crm": [problem]}, ("reports", i))
            elif report.indicators and not target.can(FactSource):
                add(
                    {"crm": [f"{report.crm!r} reads no activities or deals to count ({_kind(target)})"]}, ("reports", i)
                )
            elif history := history_problem(report, data.get("indicators"), target.adapter_class):
                add({"indicators": [history]}, ("reports", i))
            elif report.ahead and not getattr(target.adapter_class, "planned_activities", False):
                add({"ahead": [f"{report.crm!r} reads no planned activities ({_kind(target)})"]}, ("reports", i))
        org = data.get("org")
        teams = teams_from_org(org, report.crm) if isinstance(org, Org) else None
        add(report_problems(report, data.get("indicators"), teams), ("reports", i))
        if report.channel is not None and (problem := _cannot_write(report.channel, SendMessage, known, named)):
            add({"channel": [problem]}, ("reports", i))
    # Named in the file, even where a deadline's own keys are wrong (those are reported above).
    raw_deadlines = raw.data.get("deadlines")
    deadline_names = set(raw_deadlines) if isinstance(raw_deadlines, dict) else set()
    for i, rule in rules:
        for j, step in enumerate(rule.actions):
            if isinstance(step, (StartDeadlineSpec, CancelDeadlineSpec)) and step.deadline not in deadline_names:
                add({step.name: [f"no deadline named {step.deadline!r} under deadlines"]}, ("rules", i, "do", j))
    calendars = calendar_set_of(data, add)
    for path, message in org_problems(raw.data, data, rules, calendars):
        add([message], path)
    recurring = [(i, r) for i, r in enumerate(data.get("recurring") or []) if isinstance(r, RecurringDef)]
    org = data["org"] if isinstance(data.get("org"), Org) else Org()
    calendar_names = calendars.names if calendars is not None else frozenset(raw.data.get("calendars") or {})
    for path, message in recurring_problems(recurring, org, calendar_names | {"default"}, named):
        add([message], path)
    for i, report in reports:
        if report.calendar is not None and report.calendar not in calendar_names | {"default"}:
            add({"calendar": [unknown_calendar(report.calendar, calendar_names)]}, ("reports", i))
    for i, item in recurring:
        problem = _cannot_write(item.crm, CreateTask, known, named) if item.crm in named else None
        if problem:
            add({"crm": [problem]}, ("recurring", i))
    seen: set[str] = set()
    for i, rule in rules:
        if rule.name in seen:
            add({"name": [f"rule name {rule.name!r} is used twice"]}, ("rules", i))
        seen.add(rule.name)
    if isinstance(raw.data.get("crms"), dict) and not raw.data["crms"]:
        add({"crms": ["no CRM is configured: add a block under crms with its type (docs/configuration.md#crms)"]})
    territories = [(i, t) for i, t in enumerate(data.get("territories") or []) if isinstance(t, Territory)]
    problems += check_meaning(raw, rules, reports, territories, known).problems
    problems = sorted(one_per_cause(problems, raw.problems), key=lambda p: p.line or 0)

    alerts = data.get("alerts")
    if isinstance(alerts, dict) and alerts.get("channel") and alerts["channel"] not in (raw.data.get("channels") or {}):
        problems.append(
            ConfigProblem(
                "alerts.channel",
                f"no channel named {alerts['channel']!r} under channels",
                raw.line_of(("alerts", "channel")),
            )
        )
    if problems:
        raise ConfigError(source, problems)
    return Config(
        storage=data["storage"],
        server=data["server"],
        calendar=data["calendar"],
        worker=data["worker"],
        dispatcher=data["dispatcher"],
        logging=data["logging"],
        crms=crms,
        territories=data["territories"],
        rules=data["rules"],
        deadlines={n: build_deadline(n, d) for n, d in data["deadlines"].items()},
        timers=data["timers"],
        reports=data["reports"],
        indicators=data["indicators"],
        secrets=raw.secrets,
        source=source,
        calendars=calendars,
        org=org,
        recurring=data["recurring"],
        channels=channels,
        alerts=data["alerts"],
    )


def one_per_cause(problems: list[ConfigProblem], causes: list[ConfigProblem]) -> list[ConfigProblem]:
    """Drop what follows from another problem at the same key: an unset variable leaves its key
    empty, and "must be a URL" would only repeat it."""
    first: set[str] = {c.path for c in causes}
    # A misspelt key is also a missing one: "unknown key 'macth'; did you mean 'match'?" says both.
    for problem in problems:
        if m := re.search(r"^unknown key .*; did you mean '([^']+)'\?", problem.message):
            parent = problem.path.rsplit(".", 1)[0] if "." in problem.path else ""
            first.add(f"{parent}.{m.group(1)}" if parent else m.group(1))
    out: list[ConfigProblem] = []
    seen: set[tuple[str, str]] = set()
    for problem in problems:
        if problem.path in first and problem not in causes:
            continue
        if (problem.path, problem.message) in seen:
            continue
        seen.add((problem.path, problem.message))
        out.append(problem)
    return out


def _kind(crm: ConfiguredCrm) -> str:
    return f"type {crm.settings.type}"


def _cannot_write(crm: str, command: type[Command], known: dict[str, ConfiguredCrm], named: set[str]) -> str | None:
    """Why ``crm`` cannot carry out ``command``, or None when it can (or its own block is wrong)."""
    if crm not in named:
        if command is SendMessage:
            return f"no channel named {crm!r} under channels"
        return f"no CRM named {crm!r} under crms"
    target = known.get(crm)
    if target is None:
        return None  # its block is refused: reported above
    sink = target.adapter_class
    if not (issubclass(sink, CommandSink) and sink.accepts(command)):
        return f"{crm!r} ({_kind(target)}) cannot carry out {command.kind}"
    return None


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read, substitute and validate a config file."""
    return validate_raw(load_file(path, environ), str(path))


def load_config_text(text: str, environ: dict[str, str] | None = None, source: str = "<config>") -> Config:
    """Like ``load_config`` for YAML text (tests, the demo)."""
    return validate_raw(load_raw(text, environ), source)
