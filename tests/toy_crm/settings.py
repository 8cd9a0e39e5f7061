"""The ``crms.<name>`` block of a toy board."""

from __future__ import annotations

from dataclasses import dataclass

from marshmallow import fields, validate

from adapters.contracts import CrmSettings, SettingsSchema, defaults_from


@dataclass(frozen=True, kw_only=True)
class ToySettings(CrmSettings):
    type: str = "toy"
    board: str
    token: str


@defaults_from(ToySettings)
class ToySettingsSchema(SettingsSchema):
    type = fields.String(required=True)
    board = fields.String(required=True, metadata={"doc": "which in-memory board"})
    token = fields.String(required=True, validate=validate.Length(min=8), metadata={"secret": True})
