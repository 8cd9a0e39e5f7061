"""A TCP proxy that breaks connections on command, for fault tests in front of a database or
a CRM simulator.

    proxy = FaultProxy("127.0.0.1", 5432).start()     # listens on proxy.port
    proxy.blackhole()   # nothing passes either way; new connections wait (a partition)
    proxy.heal()        # back to passing: what waited goes through, as after a partition
    proxy.cut()         # every open connection closed cleanly on both sides (FIN)
    proxy.reset()       # every open connection reset on the client's side (RST) while the
                        # server's side stays open and silent, as when a middlebox loses its
                        # state: the server never hears the client went away
    proxy.refuse()      # new connections are reset at once (the server looks down)
    proxy.stop()        # closes everything, the dangling server sides included, and joins
    proxy.record()      # from now on keep each chunk read from a client (proxy.recorded)

One thread accepts; one thread per connection moves bytes both ways. Nothing here knows
the protocol it carries.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from urllib.parse import urlsplit, urlunsplit

PASS, BLACKHOLE, REFUSE = "pass", "blackhole", "refuse"


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER on, zero seconds)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.state = "open"  # open, closed, dangling (client reset, upstream left open)
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port`` until told otherwise."""

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode = PASS
        self._listener = socket.create_server((listen_host, 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.host = listen_host
        self._links: list[_Link] = []
        self._dangling: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="faultproxy-accept", daemon=True)
        self.accepted = 0
        self.recorded: list[bytes] | None = None

    @classmethod
    def for_url(cls, url: str) -> FaultProxy:
        """A proxy in front of the server a URL names (a database or an HTTP URL)."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)

    def url(self, url: str) -> str:
        """``url`` pointed at this proxy instead of its server (user and password kept)."""
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@{self.host}:{self.port}" if auth else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # --- commands ---------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._acceptor.start()
        return self

    def heal(self) -> None:
        """Pass traffic again."""
        self.mode = PASS

    def blackhole(self) -> None:
        """Stop moving bytes either way, on open and new connections alike (nothing is closed)."""
        self.mode = BLACKHOLE

    def refuse(self) -> None:
        """Reset new connections at once."""
        self.mode = REFUSE

    def cut(self) -> int:
        """Close every open connection on both sides; returns how many."""
        links = self._take_links()
        for link in links:
            with link.lock:
                link.state = "closed"
                _close(link.client)
                _close(link.upstream)
        return len(links)

    def reset(self) -> int:
        """Reset every open connection's client side; their server sides stay open, silent,
        until ``stop``. Returns how many."""
        links = self._take_links()
        for link in links:
            with link.lock:
                link.state = "dangling"
                _reset(link.client)
                if link.upstream is not None:
                    with self._lock:
                        self._dangling.append(link.upstream)
        return len(links)

    def record(self) -> None:
        """Keep every chunk read from a client from now on, in ``recorded`` (a fresh list)."""
        self.recorded = []

    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for link in self._links if link.state == "open")

    def stop(self) -> None:
        """Close everything and join every thread this proxy started."""
        self._stopping.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        self.cut()
        with self._lock:
            dangling, self._dangling = self._dangling, []
            threads = [link.thread for link in self._links if link.thread is not None]
        for sock in dangling:
            _close(sock)
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the threads ------------------------------------------------------------------------------

    def _take_links(self) -> list[_Link]:
        with self._lock:
            links = [link for link in self._links if link.state == "open"]
        return links

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.mode == REFUSE:
                _reset(client)
                continue
            link = _Link(client)
            link.thread = threading.Thread(target=self._carry, args=(link,), name="faultproxy-link", daemon=True)
            with self._lock:
                self._links = [x for x in self._links if x.state == "open" or x.thread is None or x.thread.is_alive()]
                self._links.append(link)
            link.thread.start()

    def _carry(self, link: _Link) -> None:
        while self.mode == BLACKHOLE and link.state == "open" and not self._stopping.is_set():
            time.sleep(0.02)  # a partition: the connection waits for the network to come back
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            with link.lock:
                link.state = "closed"
                _reset(link.client)
            return
        with link.lock:
            if link.state != "open":
                if link.state == "dangling":
                    with self._lock:
                        self._dangling.append(upstream)
                else:
                    _close(upstream)
                return
            link.upstream = upstream
        ends = {link.client: upstream, upstream: link.client}
        while link.state == "open" and not self._stopping.is_set():
            if self.mode == BLACKHOLE:
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select(list(ends), [], [], 0.05)
            except (OSError, ValueError):
                break
            for sock in ready:
                with link.lock:
                    if link.state != "open" or self.mode == BLACKHOLE:
                        break
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if data and sock is link.client and self.recorded is not None:
                        self.recorded.append(data)
                    if data:
                        try:
                            ends[sock].sendall(data)
                            continue
                        except OSError:
                            pass
                    # One end closed (or failed): close the other, as TCP would pass the FIN on.
                    link.state = "closed"
                    _close(link.client)
                    _close(upstream)
                    return
