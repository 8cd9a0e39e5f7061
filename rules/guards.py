"""Stage guards: a deal that enters a stage without what the regulation requires there (or
skips a stage the regulation orders) is moved back to the stage it came from, with a comment
and a task saying why (seed 003: the meeting protocol before moving on).

A guard acts only on a move it can see (``changes.stage``: from where, to where) and only on a
move forward in its ``order``; moving back is always allowed. Its own return must not come
back as a new move: it also plans ``ExpectStage``, and the processing core records the stage it sets
in the deal's snapshot, so the CRM's echo of that move is no change and fires nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from domain import UpdateDeal
from rules.model import ActionSpec, ExpectStage, Note, Planned, RuleContext, StepWrite
from rules.reactions import Reaction


def _empty(value: Any) -> bool:
    if isinstance(value, (list, tuple, dict)):
        return not value
    return value is None or str(value).strip() in ("", "0", "0.00")


@dataclass
class GuardStageSpec(ActionSpec):
    """``guard_stage: {stage: S, require: [FIELD, …], order: [S1, S2, …], comment, task}``."""

    stages: list[str]
    require: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    reaction: Reaction = field(default_factory=Reaction)
    name: str = "guard_stage"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(UpdateDeal), *self.reaction.writes()]

    def names(self) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
        """The stages and fields it names, for ``check`` to hold against the CRM's."""
        for i, stage in enumerate(self.stages):
            yield ("stage", i), "stage", stage
        for i, stage in enumerate(self.order):
            yield ("order", i), "stage", stage
        for i, name in enumerate(self.require):
            yield ("require", i), "field", name

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        before, after = ctx.changes.get("stage", (None, None))
        if after not in self.stages or before == after:
            return []  # not a move into a guarded stage
        if before is None:
            return [Planned(f"{slot}:note", Note(f"guard: entered {after} from an unknown stage; not returned"))]
        before, after = str(before), str(after)
        if self.order and before in self.order and self.order.index(before) > self.order.index(after):
            return []  # moving back is always allowed
        missing = [name for name in self.require if _empty(ctx.deal.get(name))]
        skipped: list[str] = []
        if self.order and before in self.order:
            skipped = self.order[self.order.index(before) + 1 : self.order.index(after)]
        if not missing and not skipped:
            return []
        reasons = ([f"не заполнено: {', '.join(missing)}"] if missing else []) + (
            [f"пропущены этапы: {', '.join(skipped)}"] if skipped else []
        )
        results["guard"] = {
            "from": before,
            "to": after,
            "missing": missing,
            "skipped": skipped,
            "reason": "; ".join(reasons),
        }
        out = [
            Planned(f"{slot}:note", Note(f"guard: {after} refused ({results['guard']['reason']}); back to {before}")),
            Planned(slot, UpdateDeal(ctx.deal.id, values={"stage": before})),
            Planned(f"{slot}:expect", ExpectStage(before)),
        ]
        return out + self.reaction.plan(ctx, results, slot)
