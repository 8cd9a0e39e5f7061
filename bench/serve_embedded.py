"""Serve the intake or the ceiling app in one process, as the embedded shape would: a prototype.

The embedded shape (``connector run``) serves webhooks from a thread of the process that also
runs the worker, dispatcher and scheduler. This runner serves one WSGI app that way with
either server, so the bench can compare them under the same settings:

* ``waitress``: ``waitress.server.create_server(app, threads=N)`` in a thread, as
  ``connector.runtime`` does today;
* ``granian``: Granian's Rust HTTP server in this process, its WSGI calls on ``N`` Python
  threads of its own. Granian's public API runs WSGI only in worker processes (its embedded
  ``granian.server.embed.Server`` takes ASGI/RSGI apps only, and its thread-worker server
  needs a free-threaded Python), so this starts its worker directly, as its thread-worker
  server does: ``granian._granian.WSGIWorker`` bound to a listening socket, started from a
  Python thread and stopped by setting its ``WorkerSignal``. That is private API: pinned to
  the version measured (see bench/README.md), not yet for the connector itself.

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


class GranianThreadServer:
    """Granian's WSGI worker inside this process (Linux: its own SO_REUSEPORT listener)."""

    def __init__(self, app: Callable[..., Any], host: str, port: int, *, threads: int, backlog: int = 1024) -> None:
        from granian import _granian
        from granian.net import SocketSpec

        # Its type stub lags the extension module's signature: called as Granian's own workers call it.
        worker_class: Any = _granian.WSGIWorker

        spec = SocketSpec(host, port, backlog)
        if sys.platform == "win32":  # Windows: one socket, handed to the worker as a holder
            sock: tuple[Any, Any] = (None, spec.build())
        else:  # Linux and macOS: the worker binds from the spec (as Granian's workers do)
            spec.build()
            sock = (spec, None)
        self._app = app
        self._signal = _granian.WorkerSignal()
        self._worker: Any = worker_class(
            1,  # worker id
            sock,
            None,  # no IPC: metrics are off
            1,  # Rust runtime threads (network I/O)
            512,  # Rust runtime blocking threads
            threads,  # Python threads calling the app
            30,  # idle seconds before such a thread ends
            threads,  # backpressure: requests in the app at once
            "1",  # HTTP/1 only: what CRMs send
            None,
            None,
            None,  # no static files
            False,
            None,
            None,
            None,
            "tls1.3",
            None,
            [],
            False,  # no TLS (loopback or behind a proxy)
            (None, None),  # no metrics
        )

    def start(self) -> None:
        from granian._futures import _new_cbscheduler
        from granian._loops import loops
        from granian.wsgi import _callback_wrapper

        loop = loops.get("asyncio")
        scheduler = _new_cbscheduler(loop, _callback_wrapper(self._app, {}, None), impl_asyncio=True)
        # Returns at once: Granian's runtime threads serve from now on.
        self._worker.serve_str(scheduler, loop, self._signal)

    def stop(self) -> None:
        self._signal.set()


class WaitressThreadServer:
    def __init__(self, app: Callable[..., Any], host: str, port: int, *, threads: int) -> None:
        from waitress.server import create_server

        self._server: Any = create_server(app, host=host, port=port, threads=threads)
        self._thread = threading.Thread(target=self._server.run, name="intake", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.close()


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
    if args.app == "ours":
        from connector.config import load_config
        from connector.observability import setup_logging
        from connector.runtime import Runtime

        config = load_config(args.config)
        setup_logging(config.logging["level"], config.logging["format"])
        runtime = Runtime(config)
        app: Callable[..., Any] = runtime.app
        stop_runtime = runtime.stop
    else:
        from bench.ceiling_app import create_app

        app = create_app(args.db, args.mode)

    server_class = GranianThreadServer if args.server == "granian" else WaitressThreadServer
    server = server_class(app, args.host, args.port, threads=args.threads)
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
