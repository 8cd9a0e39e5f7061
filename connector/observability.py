"""Logs: text or JSON lines, each carrying the correlation id that ties webhook → rule → task.

The id lives in a context variable set where a delivery or a row is handled (intake,
worker, dispatcher); a logging filter stamps it on every record made meanwhile, CRM
calls included, so one grep follows a delivery from its webhook to its task.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from connector.redaction import install_log_redaction

_correlation: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation", default=None)


@contextlib.contextmanager
def correlation(value: str | None) -> Iterator[None]:
    """Within this block, log records carry ``value`` as their correlation id."""
    token = _correlation.set(value)
    try:
        yield
    finally:
        _correlation.reset(token)


def current_correlation() -> str | None:
    return _correlation.get()


class CorrelationFilter(logging.Filter):
    """Stamps ``record.correlation`` (None outside any delivery)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "correlation"):
            record.correlation = _correlation.get()
        return True


class TextFormatter(logging.Formatter):
    """``time level logger message correlation=…`` (the id added when the message lacks it)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        cid = getattr(record, "correlation", None)
        if cid and "correlation=" not in record.getMessage():
            line += f" correlation={cid}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, correlation, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        cid = getattr(record, "correlation", None)
        if cid:
            entry["correlation"] = cid
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once for the process (``fmt``: text or json); every record
    is masked of secrets (``connector.redaction``), whichever library made it."""
    install_log_redaction()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(CorrelationFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
