"""The read-only status page: the same facts as `connector status`, and a deal's audit trail.

Server-rendered HTML, no build step. It is off unless ``server.status_token`` is set; the
token is accepted as the basic-auth password (a browser prompts for it), a Bearer token,
or ``?token=`` (compared in constant time).
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, render_template, request
from sqlalchemy.exc import SQLAlchemyError

from connector.config import Config
from connector.redaction import redact
from connector.status import Status, gather
from connector.storage.engine import database_problem
from connector.storage.store import Store

log = logging.getLogger(__name__)


def _authorised(token: str) -> bool:
    offered = request.args.get("token", "")
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        offered = header[7:]
    elif request.authorization is not None and request.authorization.password:
        offered = request.authorization.password
    return bool(offered) and hmac.compare_digest(offered.encode(), token.encode())


def _masked(state: Status) -> Status:
    """The figures with every error text masked of secrets (a CRM's answer may quote one)."""
    return dataclasses.replace(
        state,
        attention=[redact(line) for line in state.attention],
        dead_letters=[{**d, "error": redact(d["error"])} for d in state.dead_letters],
        unlinked=[{**u, "what": redact(u["what"])} for u in state.unlinked],
    )


def _masked_trail(rows: Iterable[Any]) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(
            at=r.at, crm=r.crm, rule=r.rule, trigger=redact(r.trigger or ""), action=r.action, message=redact(r.message)
        )
        for r in rows
    ]


def status_blueprint(store: Store, config: Config, clock: Callable[[], datetime]) -> Blueprint:
    """Routes ``/status`` (the summary; ``?deal=ID`` adds that deal's audit trail)."""
    token = config.server["status_token"]
    zone = ZoneInfo(config.calendar["timezone"])
    page = Blueprint("status_page", __name__, template_folder="templates")

    @page.before_request
    def guard() -> Response | None:
        if not _authorised(token):
            return Response("authorisation required", 401, {"WWW-Authenticate": 'Basic realm="crm-connector status"'})
        return None

    @page.get("/status")
    def status() -> str:
        now = clock()
        state = _masked(gather(store, config, now))
        deal = (request.args.get("deal") or "").strip()[:64]
        trail = _masked_trail(store.audit.for_deal(request.args.get("crm") or None, deal)) if deal else []
        return render_template(
            "status.html",
            state=state,
            deal=deal,
            trail=trail,
            crms=list(config.crms),
            local=lambda m: m.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if m else "—",
            token=request.args.get("token", ""),
        )

    @page.errorhandler(SQLAlchemyError)
    def database_down(exc: SQLAlchemyError) -> Response:
        problem = redact(database_problem(exc))
        log.warning("status page: %s", problem)
        return Response(problem + "\n", 503, mimetype="text/plain")

    return page
