"""The ``alerts`` section: who hears of trouble, and how often."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from domain.fields import Span


class EmailSchema(Schema):
    host = fields.String(required=True, metadata={"doc": "the SMTP server"})
    port = fields.Integer(
        load_default=587, validate=validate.Range(min=1, max=65535), metadata={"doc": "its port (465 for ssl)"}
    )
    security = fields.String(
        load_default="starttls",
        validate=validate.OneOf(("starttls", "ssl", "none")),
        metadata={"doc": "starttls (port 587), ssl (port 465), or none (a relay on this host or network)"},
    )
    username = fields.String(load_default="", metadata={"doc": "login, if the server wants one"})
    password = fields.String(load_default="", metadata={"doc": 'its password: write "${SMTP_PASSWORD}"'})
    sender = fields.String(data_key="from", required=True, metadata={"doc": "the From address"})
    to = fields.List(
        fields.String(), required=True, validate=validate.Length(min=1), metadata={"doc": "the admins' addresses"}
    )
    timeout = Span(load_default=10.0, metadata={"doc": "give up on the SMTP server after this"})


class AlertsSchema(Schema):
    channel = fields.String(
        load_default=None,
        metadata={"doc": "post alerts to this configured channel (the admins' chat, under `channels`)"},
    )
    email = fields.Nested(
        EmailSchema, load_default=None, metadata={"doc": "send alerts by e-mail over SMTP (when no channel)"}
    )
    every = Span(load_default=60.0, metadata={"doc": "how often the leading process looks for trouble"})
    min_interval = Span(
        load_default=600.0,
        allow_zero=True,
        metadata={
            "doc": "at most one message per this span: what happens meanwhile goes into the next one, "
            "so a flapping CRM cannot flood the admins"
        },
    )

    @validates_schema
    def _one_way(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("channel") and not data.get("email"):
            raise ValidationError("say where alerts go: channel: NAME (one of channels) or email: {host, from, to}")
