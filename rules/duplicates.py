"""The ``find_duplicates`` step: repeat clients and double entries, and phone numbers that
are not numbers (seed 004: "identify repeat clients", "phone number errors").

The search itself is the CRM's (Bitrix24 ``crm.duplicate.findbycomm``, Pipedrive's search):
the worker runs it before evaluation for the values this step names and puts what it found
in ``RuleContext.duplicates``; the step only decides what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from domain import Deal, UpdateDeal
from domain.duplicates import Duplicate
from rules.identity import Checked, check, field_values
from rules.model import ActionSpec, Note, Planned, RuleContext, StepWrite
from rules.reactions import Reaction


@dataclass
class FindDuplicatesSpec(ActionSpec):
    """``find_duplicates: {phone: FIELD, email: FIELD, inn: FIELD, …}``: the deal's values
    checked, other records with the same ones looked for, and the reactions configured."""

    fields: dict[str, str]  # phone / email / inn -> the deal field holding it
    region: str = "RU"
    found: Reaction = field(default_factory=Reaction)
    link: str | None = None  # a deal field that gets "contact 12, deal 7" when found
    invalid: Reaction = field(default_factory=Reaction)
    name: str = "find_duplicates"

    def writes(self) -> list[StepWrite]:
        return self.found.writes() + self.invalid.writes() + ([StepWrite(UpdateDeal)] if self.link else [])

    def names(self) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
        """The deal fields it reads and writes, for ``check --online`` to hold against the CRM's."""
        for by, name in self.fields.items():
            yield (by,), "field", name
        if self.link:
            yield ("link",), "field", self.link

    def checked(self, deal: Deal) -> dict[str, list[Checked]]:
        """The deal's values per key, each checked (the worker searches the valid ones)."""
        return {
            by: [check(by, raw, self.region) for raw in field_values(deal.get(name))]
            for by, name in self.fields.items()
        }

    def search_values(self, deal: Deal) -> dict[str, list[str]]:
        """What to look for in the CRM: the valid values, normalised, per key."""
        return {
            by: list(dict.fromkeys(c.value for c in checked if c.value))
            for by, checked in self.checked(deal).items()
            if any(c.value for c in checked)
        }

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        checked = self.checked(ctx.deal)
        problems = [c.problem for by, values in checked.items() for c in values if c.problem]
        out: list[Planned] = []
        if problems:
            results["invalid"] = problems
            out.extend(self.invalid.plan(ctx, results, f"{slot}:invalid"))
        if ctx.duplicates is None:
            return out + [
                Planned(
                    f"{slot}:note", Note("duplicates not looked for: the CRM cannot search them, or this is a dry-run")
                )
            ]
        found = _unique(d for by in self.fields for d in ctx.duplicates.get(by, ()))
        results["duplicates"] = [{"kind": d.kind, "id": d.id, "by": d.by, "value": d.value} for d in found]
        if not found:
            return out
        out.append(Planned(f"{slot}:note", Note("duplicates: " + ", ".join(d.describe() for d in found))))
        out.extend(self.found.plan(ctx, results, f"{slot}:found"))
        if self.link:
            text = ", ".join(f"{d.kind} {d.id}" for d in found)
            if str(ctx.deal.get(self.link) or "") != text:
                out.append(Planned(f"{slot}:link", UpdateDeal(ctx.deal.id, values={self.link: text})))
        return out


def _unique(found: Any) -> list[Duplicate]:
    seen: dict[tuple[str, str], Duplicate] = {}
    for d in found:
        seen.setdefault((d.kind, d.id), d)
    return list(seen.values())


def lookups_of(steps: Any) -> list[FindDuplicatesSpec]:
    """The ``find_duplicates`` steps among a rule's steps."""
    return [s for s in steps if isinstance(s, FindDuplicatesSpec)]


def search_plan(specs: list[FindDuplicatesSpec], deal: Deal) -> Mapping[str, list[str]]:
    """Every value to search for the deal, per key, over all the steps that name it."""
    plan: dict[str, list[str]] = {}
    for spec in specs:
        for by, values in spec.search_values(deal).items():
            plan.setdefault(by, [])
            plan[by] += [v for v in values if v not in plan[by]]
    return plan
