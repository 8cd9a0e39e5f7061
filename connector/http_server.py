"""The intake's HTTP server inside ``connector run``: Granian (Rust) by default, waitress on request.

Granian parses HTTP, keeps connections alive and reads each request in Rust, off the GIL;
the Flask app runs on ``threads`` Python threads of its own, at most ``threads`` requests
at once (``backpressure``: the rest wait in Rust, costing no Python thread). A client that
trickles its headers is cut off after ``header_timeout``. Granian's public API serves WSGI
only from worker processes, so its worker is started here as Granian's own processes start
it: ``_granian.WSGIWorker`` on a socket we bind, stopped by its ``WorkerSignal``. That is
Granian's private API, hence the pinned minor version in pyproject.toml; ``server.engine:
waitress`` is the fallback, pure Python, with its connection limit and channel timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol

from waitress import wasyncore
from waitress.server import create_server

log = logging.getLogger(__name__)
ENGINES = ("granian", "waitress")
STOP_WAIT = 10.0  # seconds to wait for requests in flight when stopping
BACKLOG = 1024
CONNECTION_LIMIT = 1000  # connections served at once; more wait in the listen backlog
HEADER_TIMEOUT = 10.0  # seconds a client may take to send its request's headers
WAITRESS_CHANNEL_TIMEOUT = 30  # seconds a waitress connection may stay silent


class IntakeServer(Protocol):
    port: int

    def start(self) -> None: ...

    def stop(self) -> None: ...


class GranianServer:
    """Granian's WSGI worker in this process, on its own Rust threads."""

    def __init__(
        self,
        app: Callable[..., Any],
        host: str,
        port: int,
        *,
        threads: int,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        from granian import _granian
        from granian.http import HTTP1Settings

        # Bound here, on every platform (Granian's own server binds this way on Windows and
        # macOS): port 0 gets its free port, and no SO_REUSEPORT lets two processes share one.
        self._holder: Any = _granian.ListenerSpec(host, port, BACKLOG).build()
        probe = socket.socket(fileno=os.dup(self._holder.get_fd()))
        # Non-blocking, as Granian's runtime expects (one blocking read would stall its
        # I/O thread, and every connection with it): set on the shared file description.
        probe.setblocking(False)
        self.port = int(probe.getsockname()[1])
        probe.close()
        self._app = app
        self._signal = _granian.WorkerSignal()
        http1 = HTTP1Settings(header_read_timeout=int(header_timeout * 1000), keep_alive=True)
        # Its type stub lags the extension module: called with the arguments Granian's
        # own workers pass in this version.
        worker_class: Any = _granian.WSGIWorker
        self._worker: Any = worker_class(
            0,  # worker id
            (None, self._holder),  # the socket, bound above
            None,  # no IPC with a supervisor
            1,  # Rust runtime threads (network I/O)
            512,  # Rust blocking threads
            threads,  # Python threads calling the app
            30,  # seconds an idle Python thread lives
            CONNECTION_LIMIT,  # backpressure: connections served at once (the others wait in the backlog)
            "1",  # HTTP/1.1: what CRMs send
            http1,
            None,  # no HTTP/2 settings
            None,  # no static files
            False,  # no TLS: loopback or behind a proxy (docs/deployment.md)
            None,
            None,
            None,
            "tls1.3",
            None,
            [],
            False,
            (None, None),  # no metrics
        )
        self._started = False

    def start(self) -> None:
        from granian._futures import _new_cbscheduler
        from granian._loops import loops
        from granian.wsgi import _callback_wrapper

        loop = loops.get("asyncio")
        scheduler = _new_cbscheduler(loop, _callback_wrapper(self._app, {}, None), impl_asyncio=True)
        self._worker.serve_str(scheduler, loop, self._signal)  # returns at once; Rust threads serve
        self._started = True

    def stop(self) -> None:
        """Stop listening and serving now (requests in the app finish their answer)."""
        if self._started:
            self._signal.set()
            self._started = False
        self._holder = None  # our handle on the listening socket


class WaitressServer:
    """waitress in a thread of this process (pure Python)."""

    def __init__(self, app: Callable[..., Any], host: str, port: int, *, threads: int) -> None:
        self._server: Any = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=WAITRESS_CHANNEL_TIMEOUT,
        )
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._server.run, name="intake", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Close the sockets from the server's own loop, then join the loop and its workers.

        Closed from this thread instead, a socket would be pulled from under the loop's
        ``select`` while it waits on it (EBADF in the intake thread).
        """
        server = self._server
        sockets = server._map  # the loop's own socket map: the listener, the connections, its trigger
        server.trigger.pull_trigger(lambda: wasyncore.close_all(sockets))
        self._thread.join(timeout=STOP_WAIT)
        server.task_dispatcher.shutdown(timeout=STOP_WAIT)
        if self._thread.is_alive():
            log.warning("intake thread did not stop within %.0f s", STOP_WAIT)


def make_server(engine: str, app: Callable[..., Any], host: str, port: int, *, threads: int) -> IntakeServer:
    if engine == "waitress":
        return WaitressServer(app, host, port, threads=threads)
    if engine == "granian":
        return GranianServer(app, host, port, threads=threads)
    raise ValueError(f"unknown server engine {engine!r}; known: {', '.join(ENGINES)}")
