"""``connector check --online``: the connection test.

Each CRM is asked who the credentials are and what they may do, and what exists there
(pipelines and stages, users, deal fields, 1C entity sets); every stage, user and field the
config names is looked up in it. Each one that is missing is a problem at its key and line,
as offline problems are. The webhook URLs the CRM side must be given are printed too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.causes import root_cause
from adapters.contracts import CrmAdapter, CrmInventory, CrmSettings, Inspectable, WebhookReceiver
from adapters.registry import build_adapter, configured
from connector.config.loader import ConfigProblem, Path_, RawConfig, dotted
from connector.config.meaning import DEAL_ATTRS, Reference, check_meaning
from connector.config.schema import Config
from domain.errors import AdapterError
from domain.suggest import did_you_mean

Builder = Callable[[str, CrmSettings], CrmAdapter[Any]]


@dataclass
class OnlineReport:
    """What the connection test found: problems (exit 2 if any) and lines for the operator."""

    problems: list[ConfigProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_online(raw: RawConfig, config: Config, build: Builder = build_adapter) -> OnlineReport:
    """Inspect every configured CRM and look up the config's references in it."""
    report = OnlineReport()

    def problem(path: Path_, message: str) -> None:
        report.problems.append(ConfigProblem(dotted(path), message, raw.line_of(path)))

    inventories: dict[str, CrmInventory] = {}
    for name, settings in config.crms.items():
        adapter = build(name, settings)
        try:
            if not isinstance(adapter, Inspectable):
                report.notes.append(f"{name} ({settings.type}): cannot be inspected; not checked online")
                continue
            try:
                inventory = adapter.inspect()
            except AdapterError as exc:
                problem(("crms", name), f"cannot read {name}: {exc}{root_cause(exc)} (check the URL and credentials)")
                continue
            inventories[name] = inventory
            _describe(report, name, settings.type, inventory)
            if inventory.missing_permissions:
                problem(
                    ("crms", name),
                    f"the credentials lack {', '.join(inventory.missing_permissions)}: grant them in the CRM "
                    "(a webhook's scopes, the user's rights, the published OData sets)",
                )
            for key, message in inventory.settings_problems.items():
                problem(("crms", name, *key.split(".")), message)
            if isinstance(adapter, WebhookReceiver):
                report.notes.append(
                    f"{name}: give the CRM this webhook URL: {_webhook_url(config, settings.type, name)}"
                    + (f" — {inventory.webhook_setup}" if inventory.webhook_setup else "")
                )
        finally:
            adapter.close()

    rules = list(enumerate(config.rules))
    reports = list(enumerate(config.reports))
    territories = list(enumerate(config.territories))
    meaning = check_meaning(raw, rules, reports, territories, configured(config.crms))
    for ref in meaning.references:
        missing = _missing(ref, inventories)
        if missing:
            problem(ref.path, missing)
    report.problems.sort(key=lambda p: p.line or 0)
    return report


def _describe(report: OnlineReport, name: str, kind: str, inventory: CrmInventory) -> None:
    parts = [f"{name} ({kind}): connected as {inventory.account or '?'}"]
    if inventory.permissions:
        parts.append(f"permissions: {', '.join(inventory.permissions)}")
    if inventory.pipelines is not None:
        parts.append(f"{len(inventory.pipelines)} pipeline(s), {sum(map(len, inventory.pipelines.values()))} stage(s)")
    if inventory.users is not None:
        parts.append(f"{len(inventory.users)} user(s)")
    if inventory.fields is not None:
        parts.append(f"{len(inventory.fields)} deal field(s)")
    report.notes.append("; ".join(parts))


def _webhook_url(config: Config, kind: str, name: str) -> str:
    host = str(config.server["host"])
    shown = "THIS-HOST" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - a listen address, not a bind
    return f"http://{shown}:{config.server['port']}/hooks/{kind}/{name} (behind your HTTPS proxy: https://…)"


def _missing(ref: Reference, inventories: Mapping[str, CrmInventory]) -> str | None:
    """Why ``ref`` does not exist in its CRM, or None (it exists, or the CRM was not read)."""
    targets = [ref.crm] if ref.crm is not None else list(inventories)
    found = [inventories[n] for n in targets if n in inventories]
    if not found:
        return None
    where = ref.crm or " / ".join(n for n in targets if n in inventories)
    if ref.kind == "stage":
        stages = {s for inv in found if inv.pipelines is not None for ss in inv.pipelines.values() for s in ss}
        if all(inv.pipelines is None for inv in found) or ref.value in stages:
            return None
        # Numeric ids (Pipedrive's) are not spelt: one digit off is another stage, so list them.
        close = "" if ref.value.isdigit() else did_you_mean(ref.value, stages)
        return f"no stage {ref.value!r} in {where}{close or _listed(stages)}"
    if ref.kind == "pipeline":
        pipelines = {p for inv in found if inv.pipelines is not None for p in inv.pipelines}
        if all(inv.pipelines is None for inv in found) or ref.value in pipelines:
            return None
        return f"no pipeline {ref.value!r} in {where}{_listed(pipelines)}"
    if ref.kind == "user":
        known = [inv.users for inv in found if inv.users is not None]
        if not known:
            return None
        for users in known:
            if ref.value in users:
                user = users[ref.value]
                return None if user.active else f"user {ref.value} ({user.name}) is deactivated in {where}"
        return f"no user {ref.value} in {where}: give the id of an existing user (the CRM's user list)"
    if ref.kind == "field":
        names = {f for inv in found if inv.fields is not None for f in inv.fields}
        if all(inv.fields is None for inv in found) or ref.value in names or ref.value in DEAL_ATTRS:
            return None
        return f"no deal field {ref.value!r} in {where}{did_you_mean(ref.value, names)}"
    return None


def _listed(values: set[str]) -> str:
    shown = sorted(values)
    return f"; it has: {', '.join(shown[:20])}{', …' if len(shown) > 20 else ''}" if shown else ""
