"""Serve the intake or the ceiling app in one process, as the embedded shape does.

The embedded shape (``connector run``) serves webhooks from a thread of the process that also
runs the worker, dispatcher and scheduler. This runner serves one WSGI app that way with
either server, so the bench can compare them under the same settings:

* ``waitress`` and ``granian``: ``connector.http_server.make_server``, the servers
  ``connector run`` starts for ``server.engine`` (Granian: its Rust worker in this process,
  the app on ``N`` Python threads; waitress: its loop in a thread), with the same limits.

    python bench/serve_embedded.py --app ours --config intake.yaml --server granian --port 8080
    python bench/serve_embedded.py --app ceiling --db sqlite:///x.db --server waitress --port 8081

Runs until SIGTERM or SIGINT, then stops the server at once.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _server(kind: str, app: Callable[..., Any], host: str, port: int, threads: int, answer_soon: Any) -> Any:
    """The connector's own embedded servers, with its settings (connector/http_server.py)."""
    from connector.http_server import make_server

    return make_server(kind, app, host, port, threads=threads, answer_soon=answer_soon)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", choices=("ours", "ceiling"), required=True)
    parser.add_argument("--config", help="the connector's config (--app ours)")
    parser.add_argument("--db", help="the database URL (--app ceiling)")
    parser.add_argument("--mode", default="one", choices=("one", "group"), help="the ceiling's way of writing")
    parser.add_argument("--server", choices=("waitress", "granian"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8, help="Python threads serving requests")
    args = parser.parse_args(argv)

    stop_runtime: Callable[[], None] = lambda: None  # noqa: E731
    answer_soon = None
    if args.app == "ours":
        from connector.config import load_config
        from connector.observability import setup_logging
        from connector.runtime import Runtime

        config = load_config(args.config)
        setup_logging(config.logging["level"], config.logging["format"])
        runtime = Runtime(config)
        app: Callable[..., Any] = runtime.app
        answer_soon = runtime.app.extensions["intake_handle_soon"]  # as connector run serves it
        stop_runtime = runtime.stop
    else:
        from bench.ceiling_app import create_app

        app = create_app(args.db, args.mode)

    server = _server(args.server, app, args.host, args.port, args.threads, answer_soon)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    server.start()
    stopping.wait()
    server.stop()
    stop_runtime()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
