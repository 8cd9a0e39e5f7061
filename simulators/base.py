"""The request pipeline every simulator answers through.

A simulated API answers each request in the same steps, whatever the CRM::

    delay → authenticate → resolve → admit → transient fault → handle → answer lost after a write → envelope

The base owns that order and the fault knobs' part in it; a simulator supplies the hooks: how it
recognises its client, what a request names, its rate limit, its transient errors, its handlers
and its success and error envelopes. A hook refuses a request by raising the simulator's
``ErrorAnswer`` (answered in the API's envelope) or a ``ForeignAnswer`` (answered as is, like a
CDN's or web server's page in front of the API).
"""

from __future__ import annotations

import collections
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from flask import Flask, Response, request

from simulators.faults import FaultKnobs
from simulators.server import SimulatorServer

log = logging.getLogger(__name__)


class ErrorAnswer(Exception):
    """An error the simulated API answers in its own envelope, with HTTP status ``status``."""

    status: int


class ForeignAnswer(Exception):
    """An answer from something in front of the API (a CDN, a web server), in none of its envelopes."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass(kw_only=True)
class Call:
    """One request on its way through the pipeline; each simulator adds what it reads from it."""

    wrote: bool = False  # set by ``handle`` when the request changed the simulated state


CallT = TypeVar("CallT", bound=Call)
ResultT = TypeVar("ResultT")


class ApiSimulator(ABC, Generic[CallT, ResultT]):
    """A simulated API: the pipeline, the fault knobs, call counts and one lock for its state.

    Subclasses build ``app`` (their routes create a ``Call`` and hand it to ``answer``) and fill
    in the hooks below; ``authenticate``, ``resolve`` and ``admit`` accept every request unless
    overridden.
    """

    app: Flask

    def __init__(self, faults: FaultKnobs | None = None) -> None:
        self.faults = faults or FaultKnobs()
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.RLock()

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
        """Start serving on loopback; the answer's ``base_url`` tells where."""
        return SimulatorServer(self.app, host, port).start()

    def close(self) -> None:
        """Stop what the simulator runs in the background (nothing, unless it sends webhooks)."""

    def serve_until_interrupted(self, host: str, port: int, banner: Callable[[str], str]) -> None:
        """Serve until Ctrl-C, first printing ``banner(base_url)``: what the command lines run."""
        server = self.serve(host, port)
        print(banner(server.base_url), flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
            self.close()

    def answer(self, call: CallT) -> Response:
        """Take one request through the pipeline, answering in the API's envelopes."""
        stalled = self.faults.delay()
        try:
            if stalled and not self.faults.stall_takes_effect:
                raise self.transient_error(call)  # the client gave up; nothing was done
            self.authenticate(call)
            self.resolve(call)
            self.admit(call)
            if self.faults.roll(self.faults.error_rate, "server_error"):
                raise self.transient_error(call)  # refused before any effect
            result = self.handle(call)
            if call.wrote and self.faults.roll(self.faults.error_after_effect_rate, "answer_lost_after_write"):
                # The write happened; the answer is lost, so the client cannot know it worked.
                raise self.internal_error(call)
            return self.success(call, result)
        except ForeignAnswer as exc:
            return exc.response
        except ErrorAnswer as exc:
            return self.error(call, exc)
        except Exception:  # a simulator bug or odd input: answer like the API, keep the trace
            log.exception("%s failed on %s %s", type(self).__name__, request.method, request.path)
            return self.error(call, self.internal_error(call))

    # --- hooks ---------------------------------------------------------------------------------

    def authenticate(self, call: CallT) -> None:
        """Refuse a client without valid credentials."""

    def resolve(self, call: CallT) -> None:
        """Read what the request names (method, resource, parameters) into ``call``; refuse what does not exist."""

    def admit(self, call: CallT) -> None:
        """Apply the rate limit (and the ``limit_rate`` knob): refuse a request over it."""

    def transient_error(self, call: CallT) -> Exception:
        """The error an injected transient failure answers with (an ``ErrorAnswer`` or ``ForeignAnswer``)."""
        return self.internal_error(call)

    @abstractmethod
    def handle(self, call: CallT) -> ResultT:
        """Carry the request out; set ``call.wrote`` when it changed state."""

    @abstractmethod
    def internal_error(self, call: CallT) -> ErrorAnswer:
        """The API's own 500."""

    @abstractmethod
    def success(self, call: CallT, result: ResultT) -> Response:
        """The success envelope around ``result``."""

    @abstractmethod
    def error(self, call: CallT, exc: ErrorAnswer) -> Response:
        """The error envelope for ``exc``."""
