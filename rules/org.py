"""The org chart of the config (``org:``): people, teams with their leads and heads, roles;
and the targets a step may name instead of a user id, resolved when a rule runs.

Targets (``to:`` of ``escalate``, ``responsible:`` / ``auditors:`` of ``create_task``):

* ``team_lead_of(responsible)``: the lead of the team the deal's responsible is a member of
  (for the lead themself: the lead of the parent team). ``team_lead_of(NAME)`` for a person.
* ``head_of(team)``: the head over the responsible's team (``head_of(responsible)`` is the
  same; ``head_of(TEAM)`` names a team). The head is the nearest ``head:`` going up through
  ``parent:`` teams, else the lead of the topmost team above it.
* ``role(NAME)`` or ``{role: NAME}``: every person holding the role -- a task each.
* a person's name from ``org.people``: that person's user id in the rule's CRM.

A target that finds nobody (a responsible in no team, a team without a lead) falls back along
team lead -> head -> ``org.fallback``; when even that is empty the step writes an audit note
and no task. Resolution never raises: one unmapped manager does not take other rules down.

Pure: the chart is data from the config; nothing here reads a CRM.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from domain import User
from domain.org import Department

__all__ = ["Org", "OrgRef", "Person", "Team", "org_block_from_departments", "parse_ref"]


@dataclass(frozen=True)
class Person:
    """One employee: a user id per CRM (``ids``) or one id for every CRM (``id``)."""

    key: str
    id: str | None = None
    ids: Mapping[str, str] = field(default_factory=dict)
    name: str = ""

    def id_in(self, crm: str) -> str | None:
        """This person's user id in ``crm``."""
        return self.ids.get(crm, self.id)


@dataclass(frozen=True)
class Team:
    """A team (or a department: a team others name as their ``parent``)."""

    key: str
    members: tuple[str, ...] = ()
    lead: str | None = None
    head: str | None = None
    parent: str | None = None
    calendar: str | None = None
    name: str = ""


@dataclass(frozen=True)
class OrgRef:
    """A target resolved at evaluation: ``kind`` is team_lead_of, head_of, role or person."""

    kind: str
    arg: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Resolved:
    """Who a target came to, and how (for the audit note when it fell back or found nobody)."""

    user_ids: tuple[str, ...]
    how: str


_CALL = re.compile(r"^\s*(team_lead_of|head_of|role)\s*\(\s*([A-Za-z0-9_.-]+)\s*\)\s*$")
SUBJECTS = ("responsible", "team")


def parse_ref(value: object) -> OrgRef | None:
    """An OrgRef for ``team_lead_of(x)``, ``head_of(x)``, ``role(x)`` or ``{role: x}``, else None."""
    if isinstance(value, Mapping):
        if set(value) == {"role"} and isinstance(value["role"], str) and value["role"]:
            return OrgRef("role", value["role"], f"role({value['role']})")
        return None
    if not isinstance(value, str):
        return None
    match = _CALL.match(value)
    if match is None:
        return None
    return OrgRef(match.group(1), match.group(2), value.strip())


class Org:
    """The org chart, with lookups by a CRM user id."""

    def __init__(
        self,
        people: Iterable[Person] = (),
        teams: Iterable[Team] = (),
        roles: Mapping[str, Iterable[str]] | None = None,
        fallback: str | None = None,
    ) -> None:
        self.people = {p.key: p for p in people}
        self.teams = {t.key: t for t in teams}
        self.roles = {name: tuple(keys) for name, keys in (roles or {}).items()}
        self.fallback = fallback
        self._any = bool(self.people or self.teams or self.roles)
        # Most org charts give no team a calendar; then no rule needs the responsible's team.
        self.has_team_calendars = any(team.calendar for team in self.teams.values())
        self._by_id: dict[tuple[str | None, str], str] = {}
        for person in self.people.values():
            if person.id is not None:
                self._by_id.setdefault((None, person.id), person.key)
            for crm, user_id in person.ids.items():
                self._by_id.setdefault((crm, user_id), person.key)
        self._team_of: dict[str, Team] = {}
        for team in self.teams.values():
            for member in team.members:
                self._team_of.setdefault(member, team)
        for team in self.teams.values():  # a lead listed in no team belongs to the one they lead
            if team.lead is not None:
                self._team_of.setdefault(team.lead, team)

    def __bool__(self) -> bool:
        return self._any  # asked for every rule of every event: answered from a field

    # -- lookups --------------------------------------------------------------------------

    def person_of(self, crm: str, user_id: str | None) -> str | None:
        """The person whose user id in ``crm`` is ``user_id``."""
        if not user_id:
            return None
        return self._by_id.get((crm, user_id)) or self._by_id.get((None, user_id))

    def team_of(self, person: str | None) -> Team | None:
        """The first team (in config order) listing ``person`` as a member, else one they lead."""
        return self._team_of.get(person) if person else None

    def team_calendar(self, crm: str, user_id: str | None) -> str | None:
        """The calendar of the team of the user, going up through parents; None if none is set."""
        for team in self._ancestry(self.team_of(self.person_of(crm, user_id))):
            if team.calendar:
                return team.calendar
        return None

    def _ancestry(self, team: Team | None) -> Iterator[Team]:
        seen: set[str] = set()
        while team is not None and team.key not in seen:
            seen.add(team.key)
            yield team
            team = self.teams.get(team.parent) if team.parent else None

    def lead_above(self, person: str | None) -> str | None:
        """The lead of ``person``'s team; for a team's own lead, the nearest lead above."""
        for team in self._ancestry(self.team_of(person)):
            if team.lead and team.lead != person:
                return team.lead
        return None

    def head_over(self, team: Team | None) -> str | None:
        """The nearest ``head`` going up from ``team``, else the lead of its topmost ancestor."""
        chain = list(self._ancestry(team))
        for t in chain:
            if t.head:
                return t.head
        if len(chain) > 1 and chain[-1].lead:
            return chain[-1].lead
        return None

    # -- resolution -----------------------------------------------------------------------

    def resolve(self, ref: OrgRef, crm: str, responsible_id: str | None) -> Resolved:
        """The user ids ``ref`` names for a deal of ``crm`` whose responsible is ``responsible_id``."""
        subject = self.person_of(crm, responsible_id) if ref.arg in SUBJECTS else ref.arg
        chain: list[tuple[str, str | None]] = []
        if ref.kind == "role":
            ids = self._ids(crm, self.roles.get(ref.arg, ()))
            if ids:
                return Resolved(ids, f"role {ref.arg}")
            chain.append(("org.fallback", self.fallback))
        elif ref.kind == "person":
            chain.append((f"person {ref.arg}", ref.arg))
        elif ref.kind == "team_lead_of":
            team = self.team_of(subject)
            chain += [
                (f"team lead of {subject or responsible_id}", self.lead_above(subject)),
                ("head", self.head_over(team)),
                ("org.fallback", self.fallback),
            ]
        else:  # head_of
            team = self.teams.get(ref.arg) if ref.arg not in SUBJECTS else self.team_of(subject)
            chain += [
                (f"head over {team.key if team else subject or responsible_id}", self.head_over(team)),
                ("org.fallback", self.fallback),
            ]
        for how, person in chain:
            ids = self._ids(crm, (person,) if person else ())
            if ids:
                return Resolved(ids, how)
        return Resolved((), f"{ref}: nobody found for user {responsible_id or '-'} and no org.fallback")

    def _ids(self, crm: str, people: Iterable[str]) -> tuple[str, ...]:
        found: list[str] = []
        for key in people:
            person = self.people.get(key)
            user_id = person.id_in(crm) if person else None
            if user_id and user_id not in found:
                found.append(user_id)
        return tuple(found)

    # -- checks ---------------------------------------------------------------------------

    def problems(self, calendars: Iterable[str]) -> list[tuple[tuple[str | int, ...], str]]:
        """What in the chart names something that does not exist: (key path, message)."""
        known_calendars = set(calendars)
        out: list[tuple[tuple[str | int, ...], str]] = []

        def person(path: tuple[str | int, ...], key: str | None) -> None:
            if key is not None and key not in self.people:
                out.append((path, f"no person named {key!r} under org.people"))

        for tkey, team in self.teams.items():
            base: tuple[str | int, ...] = ("org", "teams", tkey)
            for i, member in enumerate(team.members):
                person((*base, "members", i), member)
            person((*base, "lead"), team.lead)
            person((*base, "head"), team.head)
            if team.parent is not None and team.parent not in self.teams:
                out.append(((*base, "parent"), f"no team named {team.parent!r} under org.teams"))
            if team.calendar is not None and team.calendar not in known_calendars:
                out.append(((*base, "calendar"), unknown_calendar(team.calendar, known_calendars)))
            if tkey in {t.key for t in self._ancestry(self.teams.get(team.parent or ""))}:
                out.append(((*base, "parent"), "teams' parents go round in a circle"))
        for role, keys in self.roles.items():
            for i, key in enumerate(keys):
                person(("org", "roles", role, i), key)
        person(("org", "fallback"), self.fallback)
        return out

    def ref_problem(self, ref: OrgRef) -> str | None:
        """Why ``ref`` can never resolve (an unknown role, team or person), else None."""
        if ref.kind == "role" and ref.arg not in self.roles:
            known = ", ".join(sorted(self.roles)) or "none (add org.roles)"
            return f"no role named {ref.arg!r} under org.roles; known: {known}"
        if ref.kind == "head_of" and ref.arg not in SUBJECTS and ref.arg not in self.teams:
            return f"no team named {ref.arg!r} under org.teams (or say head_of(team) for the responsible's team)"
        if ref.kind == "team_lead_of" and ref.arg not in SUBJECTS and ref.arg not in self.people:
            return f"no person named {ref.arg!r} under org.people (or say team_lead_of(responsible))"
        if ref.kind in ("team_lead_of", "head_of") and not self.teams:
            return f"{ref} needs org.teams"
        return None


def unknown_calendar(name: str, known: Iterable[str]) -> str:
    """The message for a calendar name that is not configured."""
    return f"no calendar named {name!r}; known: {', '.join(sorted(known))} (define it under calendars)"


def org_block_from_departments(
    crm: str, departments: Sequence[Department], users: Mapping[str, User]
) -> dict[str, Any]:
    """An ``org:`` block for the config from a CRM's departments: a person per active user
    (their id in ``crm``), a team per department with its head as ``lead``, its parent and
    its members. Heads of department above the team leads are the admin's to mark (``head:``)."""
    people: dict[str, Any] = {}
    wanted = {u for d in departments for u in (*d.member_ids, *((d.head_id,) if d.head_id else ()))}
    for user_id in sorted(wanted, key=_natural):
        user = users.get(user_id)
        people[f"user{user_id}"] = {"ids": {crm: user_id}, "name": user.name if user else ""}
    known = {d.id for d in departments}
    teams: dict[str, Any] = {}
    for dept in sorted(departments, key=lambda d: _natural(d.id)):
        team: dict[str, Any] = {"name": dept.name}
        if dept.parent_id in known:
            team["parent"] = f"dept{dept.parent_id}"
        if dept.head_id:
            team["lead"] = f"user{dept.head_id}"
        team["members"] = [f"user{m}" for m in sorted(dept.member_ids, key=_natural)]
        teams[f"dept{dept.id}"] = team
    return {"people": people, "teams": teams}


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (1 << 62, text)
