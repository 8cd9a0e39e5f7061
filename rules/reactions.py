"""What a check does about what it found: a comment on the deal, a task, or both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain import AddComment
from rules.actions import CreateTaskSpec
from rules.model import Planned, RuleContext, StepWrite
from rules.templates import Template


@dataclass
class Reaction:
    """What to do: a comment on the deal, a task, both."""

    comment: Template | None = None
    task: CreateTaskSpec | None = None

    def writes(self) -> list[StepWrite]:
        return ([StepWrite(AddComment)] if self.comment is not None else []) + (
            self.task.writes() if self.task is not None else []
        )

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        out: list[Planned] = []
        if self.comment is not None:
            text = self.comment.render(ctx.template_vars(results))
            out.append(Planned(f"{slot}:comment", AddComment(ctx.deal.id, text=text)))
        if self.task is not None:
            out.extend(self.task.plan(ctx, results, f"{slot}:task"))
        return out
