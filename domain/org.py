"""A CRM's departments, as far as the org chart needs them (CRM-neutral)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Department:
    """One department of a CRM's company structure: its head and the users in it."""

    id: str
    name: str = ""
    parent_id: str | None = None
    head_id: str | None = None
    member_ids: tuple[str, ...] = ()
