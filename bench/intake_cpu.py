"""Where a delivery's CPU goes inside the intake, without any HTTP server: the WSGI app called directly.

One thread calls each WSGI app with prepared environs of distinct Bitrix24 deliveries (the
same bodies ``bench/wrk_bitrix24.lua`` sends) and measures CPU (``time.process_time``: this
process only, so the database server's share is not in it) and wall time per delivery:

* ``ours``: the intake app (``Runtime(config).app``: plain deliveries are answered by its
  direct WSGI path, past Flask; the Bitrix24 parser, the hand-over to the group-commit
  writer and its insert, the metrics, the JSON answer);
* ``ceiling``: ``bench/ceiling_app.py`` (Flask, one INSERT, a constant answer);

and then the parts of ours one at a time (each alone, so they add up only roughly): Flask
with an empty route (what the direct path no longer pays), the form decoding, the Bitrix24
receiver (validate and parse), ``store.inbox.add``, ``inbox.add_many`` per row in groups of
4, the log line (now at DEBUG, so off), a Prometheus counter.

    python bench/intake_cpu.py --db postgresql+psycopg://postgres@127.0.0.1:5432/bench_w2   # emptied!
    python bench/intake_cpu.py --db sqlite:////tmp/intake-cpu.db --n 5000

No target: it tells phase-B work where the time is.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import Snapshot  # noqa: E402

TOKEN = "bench-app-token-123"
CONFIG = """
storage: {{url: "{db}"}}
logging: {{level: INFO}}
crms:
  b24:
    type: bitrix24
    webhook_url: "http://127.0.0.1:9/rest/1/benchcode/"
    application_token: "{token}"
"""


def _body(deal_id: int) -> bytes:
    return (
        f"event=ONCRMDEALUPDATE&event_handler_id=7&data%5BFIELDS%5D%5BID%5D={deal_id}&ts={int(time.time())}"
        "&auth%5Bdomain%5D=bench.bitrix24.ru&auth%5Bclient_endpoint%5D=https%3A%2F%2Fbench.bitrix24.ru%2Frest%2F"
        "&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F"
        f"&auth%5Bmember_id%5D=5f2b6d2ad1e0c0f3b1f1d8b7a3e2c1d0&auth%5Bapplication_token%5D={TOKEN}"
    ).encode()


def _environ(body: bytes, path: str = "/hooks/bitrix24/b24") -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8080",
        "HTTP_USER_AGENT": "Bitrix24 Webhook Engine",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def _time(calls: list[Callable[[], object]]) -> tuple[float, float]:
    """CPU and wall microseconds per call."""
    c0, w0 = time.process_time(), time.perf_counter()
    for call in calls:
        call()
    c1, w1 = time.process_time(), time.perf_counter()
    return (c1 - c0) / len(calls) * 1e6, (w1 - w0) / len(calls) * 1e6


def _wsgi(app: Any, environ: dict[str, Any]) -> Callable[[], object]:
    def call() -> object:
        status: list[str] = []
        body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
        if not status or not status[0].startswith("200"):
            raise RuntimeError(f"{status} {body[:200]!r}")
        return body

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="database URL (PostgreSQL is emptied; SQLite: a file)")
    parser.add_argument("--n", type=int, default=3000, help="deliveries per measurement")
    args = parser.parse_args(argv)
    machine = Snapshot()

    from flask import Flask

    from adapters.contracts import WebhookReceiver
    from bench.ceiling_app import create_app, create_table
    from bench.intake import _reset_postgres
    from connector.config import load_config_text
    from connector.intake import _form
    from connector.metrics import DELIVERIES
    from connector.observability import setup_logging
    from connector.runtime import Runtime
    from connector.storage.inbox import row_values

    if args.db.startswith("postgresql"):
        _reset_postgres(args.db)
    elif Path(args.db.split("sqlite:///", 1)[1]).exists():
        Path(args.db.split("sqlite:///", 1)[1]).unlink()
    config = load_config_text(CONFIG.format(db=args.db, token=TOKEN))
    setup_logging("INFO", "text")
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed at the end
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)
    runtime = Runtime(config)
    create_table(args.db)
    ceiling = create_app(args.db, "one")
    empty = Flask("empty")
    empty.add_url_rule("/hooks/<crm>/<name>", "hook", lambda crm, name: ("", 200), methods=["POST"])
    n, base = args.n, [1_000_000_000]

    def bodies() -> list[bytes]:
        base[0] += 10_000_000
        return [_body(base[0] + i) for i in range(n)]

    b24 = runtime.adapters["b24"]
    assert isinstance(b24, WebhookReceiver)
    log = logging.getLogger("connector.intake")
    counter = DELIVERIES.labels("b24", "accepted")
    form_type = "application/x-www-form-urlencoded"
    line = "webhook accepted crm=%s events=%d stored=%d duplicates=%d correlation=%s"

    def measure() -> list[tuple[str, float, float]]:
        now = datetime.now(UTC)
        events = [e for b in bodies() for e in b24.parse(_request(b), received_at=now)]
        return [
            ("ours: the whole app", *_time([_wsgi(runtime.app, _environ(b)) for b in bodies()])),
            ("ceiling: the whole app", *_time([_wsgi(ceiling, _environ(b)) for b in bodies()])),
            ("  Flask, an empty route", *_time([_wsgi(empty, _environ(b)) for b in bodies()])),
            ("  form decoding (_form)", *_time([partial(_form, b, form_type) for b in bodies()])),
            (
                "  Bitrix24 validate + parse",
                *_time([partial(_receive, b24, _request(b), now) for b in bodies()]),
            ),
            ("  store.inbox.add", *_time([partial(runtime.store.inbox.add, e, now, "c0ffee") for e in events])),
            (
                f"  inbox.add_many, {GROUP}/group",
                *_per_row(
                    [
                        partial(runtime.store.inbox.add_many, [row_values(e, now, "c0ffee") for e in group])
                        for group in _groups([e for b in bodies() for e in b24.parse(_request(b), received_at=now)])
                    ]
                ),
            ),
            (
                "  a log line (now DEBUG: off)",
                *_time([partial(log.info, line, "b24", 1, 1, 0, f"c{i}") for i in range(n)]),
            ),
            ("  a Prometheus counter", *_time([counter.inc for _ in range(n)])),
        ]

    measure()  # the first round warms imports, pools, prepared statements and caches
    rows = measure()
    runtime.stop()
    devnull.close()
    print(
        f"# bench/intake_cpu.py {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.db.split('://')[0]}; {n} deliveries each"
    )
    print(f"# {machine.line()}")
    print(f"{'what':<28} {'CPU us':>8} {'wall us':>8}")
    for what, cpu, wall in rows:
        print(f"{what:<28} {cpu:>8.0f} {wall:>8.0f}")
    return 0


GROUP = 4  # rows per group commit: what the bench saw under load (2-4 rows per commit)


def _groups(events: list[Any]) -> list[list[Any]]:
    return [events[i : i + GROUP] for i in range(0, len(events), GROUP)]


def _per_row(calls: list[Any]) -> tuple[float, float]:
    cpu, wall = _time(calls)
    return cpu / GROUP, wall / GROUP


def _receive(receiver: Any, request: Any, now: datetime) -> object:
    receiver.validate(request)
    return receiver.parse(request, received_at=now)


def _request(body: bytes) -> Any:
    from adapters.contracts import IncomingRequest
    from connector.intake import _form, _Headers

    return IncomingRequest(
        body=body,
        content_type="application/x-www-form-urlencoded",
        headers=_Headers(_environ(body)),
        form=_form(body, "application/x-www-form-urlencoded"),
        remote_addr="127.0.0.1",
    )


if __name__ == "__main__":
    raise SystemExit(main())
