"""The webhook intake: one route per configured CRM, acknowledging only what is stored.

``POST /hooks/<type>/<name>`` validates, then parses the delivery with the CRM's receiver,
stores each event in the inbox, and only then answers 200. A duplicate is acknowledged
and dropped. Refusals are 4xx with a short reason and a log line; nothing is stored for
them. A database failure answers 503 so the sender may retry; no request ends in a 500.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.middleware.proxy_fix import ProxyFix

from adapters.contracts import CrmAdapter, IncomingRequest, WebhookReceiver
from connector import observability
from connector.leader import leader_seen
from connector.metrics import DELIVERIES, exposition
from connector.storage.group_commit import GroupWriter, StorageTimeout
from connector.storage.inbox import new_correlation_id, row_values
from connector.storage.models import InboxRow
from connector.storage.store import Store
from domain.clock import utcnow
from domain.errors import WebhookError

log = logging.getLogger(__name__)
# A leader's heartbeat older than this means no process leads the scheduled jobs.
LEADER_STALE = timedelta(seconds=60)
# Clocks differ a little between the CRM and us; a delivery stamped further ahead is refused.
FUTURE_SKEW = timedelta(minutes=5)


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# A CRM's delivery has tens of fields; the same cap as werkzeug's for multipart parts.
MAX_FORM_FIELDS = 500
# The inbox's columns: a longer id could never be stored, so it is refused (400), not retried.
MAX_DEAL_ID: int = InboxRow.__table__.c.deal_id.type.length  # type: ignore[attr-defined]
MAX_DEDUP_KEY: int = InboxRow.__table__.c.dedup_key.type.length  # type: ignore[attr-defined]
# The most a delivery waits for its commit: past it the sender gets 503 and retries.
STORE_TIMEOUT = 1.8


class _Headers(Mapping[str, str]):
    """The request's headers by lower-case name, read from the WSGI environ on demand.

    Receivers look up one or two headers; building a dict of all of them per delivery cost
    more than the lookups themselves.
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        key = name.upper().replace("-", "_")
        return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(self._key(name))
        if not isinstance(value, str):
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        for key, value in self._environ.items():
            if not isinstance(value, str):
                continue
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").lower()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                yield key.replace("_", "-").lower()

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _printable(value: object, limit: int = 80) -> str:
    """A value from a request, safe inside a text log line: control characters and quotes
    escaped (no forged line), cut at ``limit`` characters."""
    text = str(value)[:limit]
    return text if text.isprintable() else json.dumps(text, ensure_ascii=False)[1:-1]


def _too_long(events: list[Any]) -> str | None:
    """Why an event cannot be stored as sent (an id longer than its column), or None."""
    for event in events:
        if event.deal_id is not None and len(event.deal_id) > MAX_DEAL_ID:
            return f"deal id longer than {MAX_DEAL_ID} characters"
        if len(event.dedup_key) > MAX_DEDUP_KEY:
            return f"delivery key longer than {MAX_DEDUP_KEY} characters"
    return None


def _form(body: bytes, mimetype: str) -> dict[str, list[str]] | None:
    """The form fields of a form-encoded body (None for any other type), in arrival order.

    A urlencoded body is decoded here from the bytes already read, as werkzeug would
    (strict UTF-8; a percent-escape that is no UTF-8 stays quoted), without werkzeug's
    MultiDict in between; multipart goes through werkzeug's parser and its limits.
    """
    if mimetype == "application/x-www-form-urlencoded":
        # Counted before anything is decoded: a forged form of thousands of keys costs a
        # scan of its bytes, not seconds of parsing, whatever its token.
        if body.count(b"&") >= MAX_FORM_FIELDS:
            raise RequestEntityTooLarge(f"more than {MAX_FORM_FIELDS} form fields")
        try:
            text = body.decode()
        except UnicodeDecodeError as exc:  # bad input, not a bug: a 400 and a warning, no traceback
            raise BadRequest("the form body is not UTF-8") from exc
        fields: dict[str, list[str]] = {}
        for key, value in parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote"):
            fields.setdefault(key, []).append(value)
        return fields
    if mimetype == "multipart/form-data":
        return {k: request.form.getlist(k) for k in request.form}
    return None


_Answer = tuple[int, str]  # a webhook answer: its status and its JSON text


def _refusal(status: int, error: str) -> _Answer:
    """A refusal's answer as ``jsonify`` writes it (compact, sorted keys, a newline)."""
    return status, json.dumps({"error": error}, separators=(",", ":")) + "\n"


def _mimetype(environ: Mapping[str, Any]) -> str:
    """The request's media type without parameters, lower-case, as werkzeug's ``mimetype``."""
    return str(environ.get("CONTENT_TYPE", "")).split(";", 1)[0].strip().lower()


# Status lines as werkzeug writes them ("400 BAD REQUEST").
_STATUS_LINES = {code: f"{code} {phrase.upper()}" for code, phrase in HTTP_STATUS_CODES.items()}
_INTERNAL_ERROR = _refusal(503, "internal error")


def _direct_route(environ: Mapping[str, Any], routes: set[tuple[str, str]], max_body: int) -> tuple[str, str] | None:
    """The (CRM type, name) of a plain delivery the intake answers past Flask, or None.

    Plain: a POST with a ``Content-Length`` within the limit to ``/hooks/<type>/<name>`` of
    a configured CRM. Anything else (another route or method, an unknown CRM, multipart, a
    missing or too large length, chunked, a path needing werkzeug's decoding) goes to Flask.
    """
    path: str = environ.get("PATH_INFO", "")
    if not path.startswith("/hooks/") or environ.get("REQUEST_METHOD") != "POST":
        return None
    parts = path.split("/")
    length = environ.get("CONTENT_LENGTH", "")
    if (
        len(parts) != 4
        or (parts[2], parts[3]) not in routes
        or not path.isascii()
        or not (isinstance(length, str) and length.isdigit() and int(length) <= max_body)
        or "HTTP_TRANSFER_ENCODING" in environ
        or _mimetype(environ) == "multipart/form-data"  # its parser is werkzeug's, on Flask's request
    ):
        return None
    return parts[2], parts[3]


def _direct_hooks(
    flask_app: Callable[[dict[str, Any], Any], Iterable[bytes]],
    handle: Callable[[str, str, Mapping[str, Any], Callable[[], bytes]], _Answer],
    routes: set[tuple[str, str]],
    max_body: int,
) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """Plain deliveries (``_direct_route``) answered straight from WSGI, past Flask.

    Flask's request context, URL matching and response object cost about as much CPU as
    the rest of a delivery together; the code that answers is the Flask route's.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        route = _direct_route(environ, routes, max_body)
        if route is None:
            return flask_app(environ, start_response)
        size = int(environ["CONTENT_LENGTH"])

        def body() -> bytes:
            data: bytes = environ["wsgi.input"].read(size) if size else b""
            if len(data) != size:  # the sender hung up mid-body
                raise BadRequest("the body is shorter than its Content-Length")
            return data

        try:
            status, answer = handle(*route, environ, body)
        except Exception:  # as Flask's handler for the other routes: never a 500
            log.exception("intake error")
            status, answer = _INTERNAL_ERROR
        data = answer.encode()
        start_response(
            _STATUS_LINES[status], [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    return app


def _whole_answers(wsgi_app: Callable[[dict[str, Any], Any], Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """The webhook answers as one-item lists instead of werkzeug's closing iterator.

    Granian's WSGI worker hands a list to Rust in one call but drives any other iterable from
    Rust chunk by chunk, retaking the GIL for each: a measurable share of a delivery's CPU
    at full rate. The answers are a few dozen bytes; other routes keep their iterators.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        result = wsgi_app(environ, start_response)
        if not environ.get("PATH_INFO", "").startswith("/hooks/"):
            return result
        try:
            return [b"".join(result)]
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return app


class _Checked(NamedTuple):
    """A delivery that passed every check: its rows, waiting to be stored."""

    name: str
    correlation: str
    events: int
    rows: list[dict[str, Any]]


def _as_proxied(environ: dict[str, Any]) -> dict[str, Any]:
    """The environ as ``ProxyFix(x_for=1)`` hands it to the app (the client address from the
    one hop the proxy appends to X-Forwarded-For), for deliveries answered past the WSGI app."""
    seen: list[dict[str, Any]] = []

    def keep(env: dict[str, Any], _start: Any) -> Iterable[bytes]:
        seen.append(env)
        return []

    ProxyFix(keep, x_for=1)(environ, None)  # type: ignore[arg-type]
    return seen[0]


def _allowed(address: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        peer = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(peer in network for network in networks)


def create_app(
    store: Store,
    adapters: Mapping[str, CrmAdapter],
    *,
    allow_from: list[str] | None = None,
    behind_proxy: bool = False,
    replay_window: float = 86400.0,
    max_body_bytes: int = 256 * 1024,
    clock: Callable[[], datetime] = utcnow,
    on_stored: Callable[[], None] | None = None,
    group_wait: float = 0.001,
) -> Flask:
    """The intake WSGI app for the given CRMs.

    Deliveries are stored by group commit (``GroupWriter``: one writer thread per process,
    rows arriving within ``group_wait`` seconds share a commit); ``on_stored`` is called
    after a commit that stored something new (the embedded shape wakes its worker with it).
    The writer is ``app.extensions["inbox_writer"]``: close it before the store. A server
    with an asyncio loop answers plain deliveries through ``app.extensions["intake_handle_soon"]``
    (``handle_soon``: the same checks and answers, the commit awaited in the loop).
    """
    app = Flask("connector.intake")
    # PostgreSQL commits concurrent transactions together itself: two writers let a group
    # start while the previous one's commit is in flight. SQLite has one writer at a time.
    writers = 2 if store.dialect == "postgresql" else 1
    writer = GroupWriter(
        store.inbox.add_many, wait=group_wait, timeout=STORE_TIMEOUT, on_stored=on_stored, writers=writers
    )
    app.extensions["inbox_writer"] = writer
    networks = [ipaddress.ip_network(n, strict=False) for n in allow_from or []]
    window = timedelta(seconds=replay_window)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.config["MAX_FORM_PARTS"] = 500
    receivers: dict[tuple[str, str], WebhookReceiver] = {
        (adapter.type, name): adapter for name, adapter in adapters.items() if isinstance(adapter, WebhookReceiver)
    }

    # Prometheus looks a labelled child up under a lock on every .labels(): keep them.
    counters: dict[tuple[str, str], Any] = {}

    def count(crm: str, result: str) -> None:
        child = counters.get((crm, result))
        if child is None:
            child = counters.setdefault((crm, result), DELIVERIES.labels(crm, result))
        child.inc()

    def begin(crm_type: str, name: str, environ: Mapping[str, Any], body: Callable[[], bytes]) -> _Answer | _Checked:
        """A delivery up to its storing: its refusal's answer (counted), or its rows to store."""
        correlation = new_correlation_id()
        receiver = receivers.get((crm_type, name))
        if receiver is None:
            log.warning(
                "webhook refused crm=%s/%s status=404 reason=unknown CRM",
                _printable(crm_type, 40),
                _printable(name, 40),
            )
            count("unknown", "refused_404")
            return _refusal(404, "no such CRM is configured")
        remote_addr = environ.get("REMOTE_ADDR")
        if networks and not _allowed(remote_addr, networks):
            log.warning("webhook refused crm=%s status=403 reason=source address not allowed", name)
            count(name, "refused_403")
            return _refusal(403, "source address not allowed")
        with observability.correlation(correlation):
            checked = _check(receiver, name, correlation, environ, body, remote_addr)
        if isinstance(checked, _Checked):
            return checked
        status, answer, result = checked
        count(name, result)
        return status, answer

    def finish(checked: _Checked, outcome: list[bool] | BaseException) -> _Answer:
        """The answer to a delivery whose rows were stored (or failed to be), counted."""
        with observability.correlation(checked.correlation):
            status, answer, result = _stored(checked, outcome)
        count(checked.name, result)
        return status, answer

    def handle(crm_type: str, name: str, environ: Mapping[str, Any], body: Callable[[], bytes]) -> _Answer:
        """One delivery on a thread, from either path in (the direct one or Flask's route)."""
        begun = begin(crm_type, name, environ, body)
        if not isinstance(begun, _Checked):
            return begun
        try:
            outcome: list[bool] | BaseException = writer.store(begun.rows)
        except (SQLAlchemyError, StorageTimeout) as exc:
            outcome = exc
        return finish(begun, outcome)

    def handle_soon(environ: dict[str, Any]) -> _Answer | Awaitable[_Answer] | None:
        """One plain delivery in an asyncio loop (the embedded server's), its body read whole:
        a refusal at once, an acceptance once its group is committed. None: not a plain
        delivery (``_direct_route``); serve it through the WSGI app on a thread."""
        try:
            if behind_proxy:
                environ = _as_proxied(environ)
            route = _direct_route(environ, direct, max_body_bytes)
            if route is None:
                return None
            data: bytes = environ["wsgi.input"].read()
            begun = begin(*route, environ, lambda: data)
            if not isinstance(begun, _Checked):
                return begun
            return _settled(begun, writer.store_soon(begun.rows))
        except Exception:  # as the WSGI path: never a 500
            log.exception("intake error")
            return _INTERNAL_ERROR

    async def _settled(checked: _Checked, stored: Awaitable[list[bool]]) -> _Answer:
        try:
            outcome: list[bool] | BaseException = await stored
        except (SQLAlchemyError, StorageTimeout) as exc:
            outcome = exc
        return finish(checked, outcome)

    @app.post("/hooks/<crm_type>/<name>")
    def hook(crm_type: str, name: str) -> tuple[Response, int]:
        status, answer = handle(crm_type, name, request.environ, lambda: request.get_data(cache=True))
        return Response(answer, status=status, mimetype="application/json"), status

    def _check(
        receiver: WebhookReceiver,
        name: str,
        correlation: str,
        environ: Mapping[str, Any],
        read_body: Callable[[], bytes],
        remote_addr: str | None,
    ) -> tuple[int, str, str] | _Checked:
        """Parse and check one delivery: its rows to store, or the refusal's status, answer
        and metric result."""
        # Until its rows are handed to the writer, this delivery is one the writer may wait
        # for; a refusal leaves the block too, and the writer stops counting on it.
        with writer.expecting():
            received = clock()
            try:
                body = read_body()
                mimetype = _mimetype(environ)
                incoming = IncomingRequest(
                    body=body,
                    content_type=mimetype,
                    headers=_Headers(environ),
                    form=_form(body, mimetype),
                    remote_addr=remote_addr,
                )
                receiver.validate(incoming)
                events = receiver.parse(incoming, received_at=received)
            except WebhookError as exc:
                log.warning(
                    "webhook refused crm=%s status=%d reason=%s correlation=%s",
                    name,
                    exc.status,
                    _printable(exc.reason, 200),
                    correlation,
                )
                return *_refusal(exc.status, exc.reason), f"refused_{exc.status}"
            except HTTPException as exc:  # too large, too many form parts, bad multipart
                status = exc.code or 400
                log.warning(
                    "webhook refused crm=%s status=%d reason=%s correlation=%s", name, status, exc.name, correlation
                )
                return *_refusal(status, exc.name), f"refused_{status}"
            except Exception:  # a receiver's bug must still not become a 500 or a stored row
                log.exception("webhook unparseable crm=%s correlation=%s", name, correlation)
                return *_refusal(400, "could not parse the delivery"), "refused_400"
            stale = [e for e in events if not received - window <= e.occurred_at <= received + FUTURE_SKEW]
            if stale:
                log.warning(
                    "webhook refused crm=%s status=400 reason=outside the replay window stamped=%s correlation=%s",
                    name,
                    stale[0].occurred_at.isoformat(),
                    correlation,
                )
                return *_refusal(400, "delivery outside the replay window"), "refused_400"
            if (too_long := _too_long(events)) is not None:
                log.warning("webhook refused crm=%s status=400 reason=%s correlation=%s", name, too_long, correlation)
                return *_refusal(400, too_long), "refused_400"
            return _Checked(name, correlation, len(events), [row_values(e, received, correlation) for e in events])

    def _stored(checked: _Checked, outcome: list[bool] | BaseException) -> tuple[int, str, str]:
        name, correlation = checked.name, checked.correlation
        if isinstance(outcome, BaseException):
            log.warning(
                "webhook not stored crm=%s status=503 reason=%s correlation=%s",
                name,
                _printable(outcome, 200),
                correlation,
            )
            return *_refusal(503, "storage unavailable, try again"), "refused_503"
        stored = sum(outcome)
        duplicates = len(outcome) - stored
        # No line per delivery at INFO: at hundreds a second it would be most of the log and a
        # measurable share of the CPU; the counters say how many, DEBUG says which.
        log.debug(
            "webhook accepted crm=%s events=%d stored=%d duplicates=%d correlation=%s",
            name,
            checked.events,
            stored,
            duplicates,
            correlation,
        )
        # An empty delivery (an event we do not follow) counts as accepted, as before.
        result = "duplicate" if checked.events and stored == 0 else "accepted"
        # What _answer writes for these four fields (sorted keys, compact), without the encoder:
        # the one answer sent at the full rate; the id is hex, the counts are ints.
        answer = f'{{"correlation_id":"{correlation}","duplicates":{duplicates},"ok":true,"stored":{stored}}}\n'
        return 200, answer, result

    direct = set(receivers)
    app.extensions["intake_handle_soon"] = handle_soon
    app.wsgi_app = _direct_hooks(  # type: ignore[method-assign,assignment]
        _whole_answers(app.wsgi_app), handle, direct, max_body_bytes
    )
    if behind_proxy:
        # The peer is the proxy; the client is the one hop it appends to X-Forwarded-For.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(exposition(store), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify(ok=True), 200

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        try:
            with store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            leader, beat = leader_seen(store, clock(), LEADER_STALE)
            with store.reading() as session:
                paused = {crm: why for crm, (_, why) in store.cursors.paused(session).items()}
        except SQLAlchemyError:
            return jsonify(ok=False, database="unreachable"), 503
        if leader is None:  # no process runs polls and deadline scans right now
            return jsonify(ok=False, database="ok", leader=None, last_heartbeat=beat.isoformat() if beat else None), 503
        # A paused CRM is reported but keeps this process ready: deliveries are still stored.
        return jsonify(ok=True, database="ok", leader=leader, paused=paused), 200

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=exc.name), exc.code or 400

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("intake error")
        return jsonify(error="internal error"), 503

    return app
