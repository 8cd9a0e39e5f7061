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

import asyncio
import contextlib
import io
import logging
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from waitress import wasyncore
from waitress.server import create_server
from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger(__name__)
ENGINES = ("granian", "waitress")
STOP_WAIT = 10.0  # seconds to wait for requests in flight when stopping
BACKLOG = 1024
CONNECTION_LIMIT = 1000  # connections served at once; more wait in the listen backlog
HEADER_TIMEOUT = 10.0  # seconds a client may take to send its request's headers
BODY_TIMEOUT = 30.0  # seconds a client may take to send its request's body
WAITRESS_CHANNEL_TIMEOUT = 30  # seconds a waitress connection may stay silent


# The app's answer to a request in the server's asyncio loop, given its WSGI environ (the body
# read whole): (status, JSON text) now, an awaitable of it, or None to run the WSGI app on a
# thread. The intake answers plain webhook deliveries this way (``intake_handle_soon``).
AnswerSoon = Callable[[dict[str, Any]], "tuple[int, str] | Awaitable[tuple[int, str]] | None"]


class IntakeServer(Protocol):
    port: int

    def start(self) -> None: ...

    def stop(self) -> None: ...


class GranianServer:
    """Granian's Rust server in this process: bodies read whole off the threads, then the app.

    Granian's RSGI worker hands each request to an asyncio loop in a thread of ours; the loop
    reads the body (at most ``max_body`` bytes, within ``body_timeout`` seconds, 413/408
    otherwise), and only then a thread of the pool runs the WSGI app on it. A slow or stalled
    sender so costs a coroutine, never one of the ``threads`` that run the app. What
    ``answer_soon`` takes is answered in the loop itself, with no thread hand-off: the
    intake's plain deliveries, whose only wait (their group's commit) is a future.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        host: str,
        port: int,
        *,
        threads: int,
        max_body: int = 1024 * 1024,
        header_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        answer_soon: AnswerSoon | None = None,
    ) -> None:
        from granian import _granian
        from granian.http import HTTP1Settings

        # Bound here, on every platform (Granian's own server binds this way on Windows and
        # macOS): port 0 gets its free port, and no SO_REUSEPORT lets two processes share one.
        self._holder: Any = _granian.ListenerSpec(host, port, BACKLOG).build()
        probe = socket.socket(fileno=self._holder.get_fd())
        self.port = int(probe.getsockname()[1])
        probe.detach()  # the socket stays Granian's
        self._app = app
        self._answer_soon = answer_soon
        self._host = host
        self._max_body = max_body
        self._body_timeout = body_timeout
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="intake")
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="intake-loop", daemon=True)
        self._signal = _granian.WorkerSignal()
        http1 = HTTP1Settings(header_read_timeout=int(header_timeout * 1000), keep_alive=True)
        # Its type stub lags the extension module: called with the arguments Granian's own
        # embedded server passes in this version.
        worker_class: Any = _granian.RSGIWorker
        self._worker: Any = worker_class(
            0,  # worker id
            (None, self._holder),  # the socket, bound above
            None,  # no IPC with a supervisor
            1,  # Rust runtime threads (network I/O)
            512,  # Rust blocking threads
            1,  # Python threads of the worker: the loop's
            30,  # seconds an idle thread lives
            CONNECTION_LIMIT,  # backpressure: connections served at once (the others wait in the backlog)
            "1",  # HTTP/1.1: what CRMs send
            http1,
            None,  # no HTTP/2 settings
            False,  # no websockets
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
        from granian._futures import _future_watcher_wrapper, _new_cbscheduler

        self._loop_thread.start()
        scheduler = _new_cbscheduler(self._loop, _future_watcher_wrapper(self._handle), impl_asyncio=True)

        def serve() -> None:
            self._worker.serve_async(scheduler, self._loop, self._signal)

        asyncio.run_coroutine_threadsafe(_call(serve), self._loop).result(STOP_WAIT)
        self._started = True

    def stop(self) -> None:
        """Stop listening and serving now; requests in the app finish their answer."""
        if self._started:
            self._signal.set()
            self._started = False
            self._pool.shutdown(wait=True)
            # Requests still waiting for their body end here, not later from Rust's side.
            drained = asyncio.run_coroutine_threadsafe(_cancel_pending(), self._loop)
            try:
                drained.result(STOP_WAIT)
            except Exception:  # a stuck request must not stop the stop
                log.warning("intake requests did not end within %.0f s", STOP_WAIT)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(STOP_WAIT)
            # Left open: Granian's Rust side may still hand a late callback to the stopped
            # loop (a client that was sending when we stopped); a closed loop would panic it.
            self._holder = None  # our handle on the listening socket
            self._wait_until_the_port_refuses()
        self._holder = None

    def _wait_until_the_port_refuses(self) -> None:
        """Granian closes its listener from its own runtime some time after the signal; stop
        returns once the port refuses connections, so a restart on it finds it free."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self._host, self._host)
        deadline = time.monotonic() + STOP_WAIT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host, self.port), timeout=0.2):
                    pass
            except OSError:
                return
            time.sleep(0.005)
        log.warning("intake port %s still accepted connections %.0f s after the stop", self.port, STOP_WAIT)

    async def _handle(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        length = scope.headers.get("content-length")
        if length is not None and not length.isdigit():
            proto.response_bytes(400, _TEXT, b"Bad Request")
            return
        if length is not None and int(length) > self._max_body:
            proto.response_bytes(413, _TEXT, b"Request Entity Too Large")
            return
        try:
            async with asyncio.timeout(self._body_timeout):
                # A declared length is within the limit (checked above): Rust reads it whole.
                body = await proto() if length is not None else await self._read(proto)
        except TimeoutError:
            proto.response_bytes(408, _TEXT + [("connection", "close")], b"Request Timeout")
            return
        except asyncio.CancelledError:  # stopping: a sender still sending is told to come back
            with contextlib.suppress(Exception):
                proto.response_bytes(503, _TEXT + [("connection", "close")], b"Service Unavailable")
            return
        if body is None:
            proto.response_bytes(413, _TEXT, b"Request Entity Too Large")
            return
        environ = self._environ(scope, body)
        if self._answer_soon is not None:
            soon = self._answer_soon(environ)
            if soon is not None:
                status, text = soon if isinstance(soon, tuple) else await soon
                proto.response_bytes(status, _JSON, text.encode())
                return
        status, headers, answer = await self._loop.run_in_executor(self._pool, self._call_app, environ)
        proto.response_bytes(status, headers, answer)

    async def _read(self, proto: Any) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        async for chunk in proto:
            size += len(chunk)
            if size > self._max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _environ(self, scope: Any, body: bytes) -> dict[str, Any]:
        server_host, _, server_port = scope.server.rpartition(":")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": scope.path.encode("utf-8", "surrogateescape").decode("latin-1"),
            "QUERY_STRING": scope.query_string,
            "SERVER_NAME": server_host or self._host,
            "SERVER_PORT": server_port or str(self.port),
            "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
            "REMOTE_ADDR": scope.client.rpartition(":")[0] or scope.client,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }
        for name, value in scope.headers.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ[key] = value
            elif key != "CONTENT_LENGTH":
                key = "HTTP_" + key
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _call_app(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: None  # the legacy write(): unused by Flask

        result = self._app(environ, start_response)
        try:
            answer = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started
        return int(status.split(" ", 1)[0]), list(headers), answer


_TEXT = [("content-type", "text/plain")]
_JSON = [("content-type", "application/json")]


async def _call(function: Callable[[], None]) -> None:
    function()


async def _cancel_pending() -> None:
    me = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not me]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


class WaitressServer:
    """waitress in a thread of this process (pure Python)."""

    def __init__(self, app: Callable[..., Any], host: str, port: int, *, threads: int) -> None:
        # Our own task dispatcher: waitress starts its threads before it binds, and a port in
        # use would leave them running.
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(threads)
        try:
            self._server: Any = create_server(
                app,
                host=host,
                port=port,
                threads=threads,
                connection_limit=CONNECTION_LIMIT,
                channel_timeout=WAITRESS_CHANNEL_TIMEOUT,
                _dispatcher=dispatcher,
            )
        except BaseException:
            dispatcher.shutdown(timeout=STOP_WAIT)
            raise
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


def make_server(
    engine: str,
    app: Callable[..., Any],
    host: str,
    port: int,
    *,
    threads: int,
    max_body: int = 1024 * 1024,
    answer_soon: AnswerSoon | None = None,
) -> IntakeServer:
    """The embedded server ``engine`` for ``app``; Granian also answers in its loop what
    ``answer_soon`` takes (waitress has no loop for it: everything goes through ``app``)."""
    if engine == "waitress":
        return WaitressServer(app, host, port, threads=threads)
    if engine == "granian":
        return GranianServer(app, host, port, threads=threads, max_body=max_body, answer_soon=answer_soon)
    raise ValueError(f"unknown server engine {engine!r}; known: {', '.join(ENGINES)}")
