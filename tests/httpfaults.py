"""An HTTP proxy in front of a CRM simulator that mangles answers on command, for fault tests.

    proxy = HttpFaultProxy(simulator_base_url).start()   # proxy.base_url replaces the simulator's
    proxy.truncate("crm.deal.get", "batch")   # answers to requests whose path holds one of these:
                                              # the upstream's 200, cut in half
    proxy.unauthorized("crm.deal.get", "batch")   # 401 expired_token, the request not forwarded
    proxy.heal()                              # everything passes again
    proxy.stop()

Requests that match no given fragment pass untouched, so a test can break the worker's reads
and leave the dispatcher's writes alone.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

PASS, TRUNCATE, UNAUTHORIZED = "pass", "truncate", "unauthorized"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


class HttpFaultProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.mode = PASS
        self.fragments: tuple[str, ...] = ()
        self.mangled = 0
        self._lock = threading.Lock()
        self._session = requests.Session()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                mode = proxy.mode if any(f in self.path for f in proxy.fragments) else PASS
                if mode == UNAUTHORIZED:
                    proxy._count()
                    answer = json.dumps(
                        {"error": "expired_token", "error_description": "The access token provided has expired."}
                    ).encode()
                    self._send(401, answer, "application/json")
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream = proxy._session.request(
                    self.command, proxy.target + self.path, data=body, headers=headers, timeout=30
                )
                content = upstream.content
                if mode == TRUNCATE and upstream.status_code == 200:
                    proxy._count()
                    content = content[: len(content) // 2]
                self._send(upstream.status_code, content, upstream.headers.get("Content-Type", "application/json"))

            def _send(self, status: int, content: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="httpfaults", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HttpFaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._session.close()

    def truncate(self, *fragments: str) -> None:
        self.mode, self.fragments = TRUNCATE, fragments

    def unauthorized(self, *fragments: str) -> None:
        self.mode, self.fragments = UNAUTHORIZED, fragments

    def heal(self) -> None:
        self.mode, self.fragments = PASS, ()

    def _count(self) -> None:
        with self._lock:
            self.mangled += 1
