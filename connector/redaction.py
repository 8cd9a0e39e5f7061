"""Secrets never leave the process as text: one redactor over every log record (ours and every
library's: urllib3, requests, APScheduler, gunicorn, waitress) and every error text the
CLI or the status page shows.

It masks each configured secret (what the config took from the environment, and every
setting a CRM marks secret, inline or not) and Bitrix24's webhook code wherever a path
``/rest/<user>/<code>/`` appears: urllib3's request lines, requests' "Max retries exceeded
with url: …", a traceback's chained exceptions. A record is masked when it is made (a
log-record factory), so a handler of any library (gunicorn's own included) writes it
masked; its exception text is rendered and masked then too.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from connector.config import Config

MASK = "***"
# A Bitrix24 inbound webhook's path: its code gives full REST access with the user's rights.
_WEBHOOK_CODE = re.compile(r"(/rest/\d+/)([A-Za-z0-9_\-]+)")
SHORTEST = 4  # shorter values are not masked (they would mask ordinary words and numbers)


class Redactor:
    """Masks the given secrets and any Bitrix24 webhook code in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            if not secret or len(secret) < SHORTEST:
                continue
            values.add(secret)
            values.add(quote(secret, safe=""))  # as it reads in a query string or a form
            values.update(m.group(2) for m in _WEBHOOK_CODE.finditer(secret))  # the code alone too
        ordered = sorted((v for v in values if len(v) >= SHORTEST), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if "/rest/" in text:
            text = _WEBHOOK_CODE.sub(rf"\1{MASK}", text)
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return text


_redactor = Redactor()


def redact(text: str) -> str:
    """``text`` with every known secret masked."""
    return _redactor(text)


def configure(secrets: Iterable[str]) -> None:
    """Mask these secrets from now on, in this whole process, and mask log records."""
    global _redactor
    _redactor = Redactor(secrets)
    install_log_redaction()


def secrets_of(config: Config) -> set[str]:
    """Every secret a config holds: what came from the environment, each CRM setting marked
    secret, the status page's token and the database password."""
    from sqlalchemy.engine import make_url

    from adapters.registry import CHANNEL_TYPES, CRM_TYPES

    found = set(config.secrets)
    blocks = [(CRM_TYPES, s) for s in config.crms.values()] + [(CHANNEL_TYPES, s) for s in config.channels.values()]
    for types, settings in blocks:
        entry = types.get(settings.type)
        if entry is None:
            continue
        schema = entry.settings()
        for name, field in schema._declared_fields.items():
            value = getattr(settings, field.attribute or name, None)
            if field.metadata.get("secret") and isinstance(value, str):
                found.add(value)
    if config.server.get("status_token"):
        found.add(config.server["status_token"])
    password = make_url(config.storage["url"]).password
    if password:
        found.add(str(password))
    return found


def configure_for(config: Config) -> None:
    """Mask this config's secrets in logs and in what the process prints."""
    configure(secrets_of(config))


# --- log records ------------------------------------------------------------------------------


def _mask_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format is the handler's to report, masked all the same
        message = f"{record.msg} {record.args!r}"
    masked = _redactor(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = _redactor(text)  # formatters use it instead of rendering their own
    if record.stack_info:
        record.stack_info = _redactor(record.stack_info)


def install_log_redaction() -> None:
    """Mask every log record made in this process from now on (idempotent)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "masks_secrets", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _mask_record(record)
        return record

    factory.masks_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


# --- printed text -------------------------------------------------------------------------------


class RedactingStream:
    """A text stream that masks what is written to it (the CLI's standard output and error)."""

    masks_secrets = True

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_redactor(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def mask_standard_streams() -> None:
    """Mask what this process prints from now on (idempotent)."""
    if not getattr(sys.stdout, "masks_secrets", False):
        sys.stdout = RedactingStream(sys.stdout)  # type: ignore[assignment]
    if not getattr(sys.stderr, "masks_secrets", False):
        sys.stderr = RedactingStream(sys.stderr)  # type: ignore[assignment]
