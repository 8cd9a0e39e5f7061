"""The ``message`` step: post a text to a configured channel (a chat, a mailbox)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain import SendMessage
from rules.model import ActionSpec, Planned, RuleContext, StepWrite
from rules.templates import Template


@dataclass
class MessageSpec(ActionSpec):
    """``message: {channel: sales_chat, text: "…"}``: one message per firing of the rule."""

    channel: str
    text: Template
    name: str = "message"

    def writes(self) -> list[StepWrite]:
        return [StepWrite(SendMessage, crm=self.channel, param="channel")]

    def plan(self, ctx: RuleContext, results: dict[str, Any], slot: str) -> list[Planned]:
        text = self.text.render(ctx.template_vars(results)).strip()
        if not text:
            return []  # a template that renders nothing (an {% if %} that did not hold) posts nothing
        return [Planned(slot, SendMessage(ctx.deal.id, channel=self.channel, text=text))]
