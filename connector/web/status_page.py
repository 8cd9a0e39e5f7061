"""The status page: the same facts as `connector status`, a deal's audit trail, and buttons
to replay or discard a dead letter.

Server-rendered HTML, no build step and no script. It is off unless ``server.status_token``
is set. A person signs in with the token once (the page then keeps a session cookie); a
script sends it as a Bearer token or the basic-auth password. The token never travels in a
URL or a page, so it is not left in browser history, proxy logs or a cached copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, redirect, render_template, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response as BaseResponse

from connector.config import Config
from connector.redaction import redact
from connector.status import Status, gather
from connector.storage.engine import database_problem
from connector.storage.store import Store

log = logging.getLogger(__name__)

SESSION_COOKIE = "crmc_status"
REFRESH_SECONDS = 30
# What a finished action says on the page it redirects to; the URL carries only the key.
NOTES = {
    "replayed": "Dead letter {id} queued again; the dispatcher resends it (looking for it in the CRM first).",
    "discarded": "Dead letter {id} discarded; the audit trail keeps who and why.",
    "nothing": "Dead letter {id} is no longer dead: nothing was changed.",
    "reason": "Say why before discarding dead letter {id}.",
    "inbox": "Inbox row {id} queued again; the worker reads its deal afresh.",
    "inbox-nothing": "Inbox row {id} is not parked or failed: nothing was changed.",
}
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # "same-origin" keeps the Origin header on the page's own posts, which the CSRF check reads.
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def _derived(token: str, purpose: str) -> str:
    """A value made from the token for one purpose (the session cookie, the CSRF field), so
    neither reveals the token itself."""
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def _same(offered: str, expected: str) -> bool:
    return bool(offered) and hmac.compare_digest(offered.encode(), expected.encode())


def _authorised(token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return _same(header[7:], token)
    if request.authorization is not None and request.authorization.password:
        return _same(request.authorization.password, token)
    return _same(request.cookies.get(SESSION_COOKIE, ""), _derived(token, "session"))


def _same_origin() -> bool:
    """A browser names the page a POST came from; one from another site is refused (the
    session cookie is SameSite=Strict as well, and every form carries the CSRF field)."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


def _masked(state: Status) -> Status:
    """The figures with every error text masked of secrets (a CRM's answer may quote one)."""
    return dataclasses.replace(
        state,
        attention=[redact(line) for line in state.attention],
        dead_letters=[{**d, "error": redact(d["error"])} for d in state.dead_letters],
        unlinked=[{**u, "what": redact(u["what"])} for u in state.unlinked],
        parked=[{**r, "reason": redact(r["reason"])} for r in state.parked],
    )


def _masked_trail(rows: Iterable[Any]) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(
            at=r.at, crm=r.crm, rule=r.rule, trigger=redact(r.trigger or ""), action=r.action, message=redact(r.message)
        )
        for r in rows
    ]


def status_blueprint(store: Store, config: Config, clock: Callable[[], datetime]) -> Blueprint:
    """Routes under ``/status``: the summary (``?deal=ID`` adds that deal's audit trail), the
    sign-in, and the replay and discard actions."""
    token = config.server["status_token"]
    zone = ZoneInfo(config.calendar["timezone"])
    csrf = _derived(token, "csrf")
    page = Blueprint("status_page", __name__, template_folder="templates")

    def local(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "—"

    @page.after_request
    def never_cached(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    @page.before_request
    def guard() -> Response | None:
        if request.endpoint == "status_page.sign_in":
            return None
        if not _authorised(token):
            body = render_template("sign_in.html", failed=False)
            return Response(body, 401, {"WWW-Authenticate": 'Bearer realm="crm-connector status"'})
        if request.method == "POST" and not (_same_origin() and _same(request.form.get("csrf", ""), csrf)):
            log.warning("status page: refused a %s without a valid CSRF field or from another origin", request.path)
            return Response("refused: the form did not come from this page\n", 403, mimetype="text/plain")
        return None

    @page.post("/status/sign-in")
    def sign_in() -> BaseResponse:
        if not _same_origin() or not _same(request.form.get("token", ""), token):
            return Response(render_template("sign_in.html", failed=True), 401)
        response = redirect("/status", 303)
        response.set_cookie(
            SESSION_COOKIE,
            _derived(token, "session"),
            httponly=True,
            samesite="Strict",
            secure=request.is_secure,
            path="/status",
        )
        return response

    @page.post("/status/sign-out")
    def sign_out() -> BaseResponse:
        response = redirect("/status", 303)
        response.delete_cookie(SESSION_COOKIE, path="/status")
        return response

    @page.get("/status")
    def status() -> str:
        now = clock()
        state = _masked(gather(store, config, now))
        deal = (request.args.get("deal") or "").strip()[:64]
        trail = _masked_trail(store.audit.for_deal(request.args.get("crm") or None, deal)) if deal else []
        note_key, note_id = request.args.get("note", ""), request.args.get("id", "")
        note = NOTES[note_key].format(id=note_id[:20]) if note_key in NOTES else ""
        return render_template(
            "status.html",
            state=state,
            deal=deal,
            trail=trail,
            crms=list(config.crms),
            local=local,
            csrf=csrf,
            note=note,
            refresh=REFRESH_SECONDS,
            refresh_url="/status"
            + (f"?{urlencode({'deal': deal, 'crm': request.args.get('crm', '')})}" if deal else ""),
            # A browser signed in with the cookie can sign out; a header is the script's own.
            cookie_session=SESSION_COOKIE in request.cookies,
        )

    def _chosen_id() -> int | None:
        raw = request.form.get("id", "")
        return int(raw) if raw.isdigit() else None

    def _act(
        what: str, act: Callable[[int], list[int]], done: tuple[str, str], nothing: tuple[str, str]
    ) -> BaseResponse:
        """Carry out one button's action on the row the form names; back to the page with a note."""
        row_id = _chosen_id()
        if row_id is None:
            return Response(f"choose {what} by its id\n", 400, mimetype="text/plain")
        note, said = done if act(row_id) else nothing
        log.info("status page: %s %d %s", what, row_id, said)
        return redirect(f"/status?note={note}&id={row_id}", 303)

    @page.post("/status/replay")
    def replay() -> BaseResponse:
        return _act(
            "dead letter",
            lambda row_id: store.outbox.replay_dead(clock(), ids=[row_id]),
            ("replayed", "queued again"),
            ("nothing", "was not dead"),
        )

    @page.post("/status/replay-inbox")
    def replay_inbox() -> BaseResponse:
        return _act(
            "inbox row",
            lambda row_id: store.inbox.requeue(clock(), ids=[row_id]),
            ("inbox", "queued again"),
            ("inbox-nothing", "was not parked or failed"),
        )

    @page.post("/status/discard")
    def discard() -> BaseResponse:
        reason = " ".join(request.form.get("reason", "").split())[:500]
        if not reason and (row_id := _chosen_id()) is not None:
            return redirect(f"/status?note=reason&id={row_id}", 303)
        who = f"status page ({request.remote_addr})"
        return _act(
            "dead letter",
            lambda row_id: store.outbox.discard_dead(clock(), reason=reason, by=who, ids=[row_id]),
            ("discarded", "discarded"),
            ("nothing", "was not dead"),
        )

    @page.errorhandler(SQLAlchemyError)
    def database_down(exc: SQLAlchemyError) -> Response:
        problem = redact(database_problem(exc))
        log.warning("status page: %s", problem)
        return Response(problem + "\n", 503, mimetype="text/plain")

    return page
