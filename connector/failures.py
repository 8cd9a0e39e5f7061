"""Expected failures in one line an operator can act on: what failed, the cause, a hint.

Every command (``connector.cli``) and every scheduled job or loop (``connector.runtime``,
``connector.ticker``) reports a failure this module can explain as that one line; the
traceback goes only to DEBUG (or the console with ``connector --traceback``). A failure it
cannot explain is a bug, and keeps its traceback.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

# Exit codes of expected failures (besides 1, "needs attention", and 2, a refused config).
EXIT_DATABASE = 3
EXIT_ANOTHER_INSTANCE = 4
EXIT_CRM = 5
EXIT_PORT = 6

_ADDRESS_IN_USE = {errno.EADDRINUSE, 10048}  # 10048: WSAEADDRINUSE (Windows)


class CannotListen(Exception):
    """The intake could not take its address (in use, or not this machine's)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.host = host
        self.port = port


def listen_problem(exc: BaseException) -> str:
    """Why a bind failed, in words (the port taken, the address not ours, …)."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in _ADDRESS_IN_USE or "in use" in text.lower():
        return "the port is in use (another connector or program holds it); stop it or change server.port"
    if code == errno.EADDRNOTAVAIL or "assign requested address" in text.lower():
        return "the address is not one of this machine's; change server.host"
    if code == errno.EACCES or "permission denied" in text.lower():
        return "permission denied (ports below 1024 need privileges); choose a port above 1024"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first


@dataclass(frozen=True)
class Failure:
    """One line for the operator and the exit code a command ends with."""

    line: str
    exit_code: int


def explain(exc: BaseException) -> Failure | None:
    """One line and an exit code for a failure the operator can act on, or None (a bug)."""
    import requests
    from sqlalchemy.exc import DBAPIError

    from adapters.causes import network_cause, root_cause
    from connector.redaction import redact
    from connector.storage.engine import DatabaseUnavailable, database_problem
    from connector.storage.instance import AnotherInstance
    from domain.errors import AccessDenied, AdapterError, AuthError, RateLimited

    if isinstance(exc, DatabaseUnavailable):
        return Failure(redact(str(exc)), EXIT_DATABASE)
    if isinstance(exc, DBAPIError):
        return Failure(redact(database_problem(exc)) + "; is the database up and storage.url right?", EXIT_DATABASE)
    if isinstance(exc, AnotherInstance):
        return Failure(redact(str(exc)), EXIT_ANOTHER_INSTANCE)
    if isinstance(exc, CannotListen):
        return Failure(str(exc), EXIT_PORT)
    if isinstance(exc, AdapterError):
        crm = exc.crm or "the CRM"
        if isinstance(exc, (AuthError, AccessDenied)):
            hint = f"check crms.{exc.crm}'s credentials and the scopes they grant"
        elif isinstance(exc, RateLimited):
            hint = "the CRM limits our calls; it passes on its own, or lower the load (poll_every, rate)"
        elif network_cause(exc.__cause__ or exc.__context__) or root_cause(exc):
            hint = f"check crms.{exc.crm}'s URL, DNS and the network to it"
        else:
            hint = "see the CRM's answer above; `connector check --online` tests the connection"
        return Failure(redact(f"{crm}: {exc}{root_cause(exc)}; {hint}"), EXIT_CRM)
    if isinstance(exc, requests.RequestException):
        cause = network_cause(exc) or f": {type(exc).__name__}"
        return Failure(redact(f"network call failed{cause}; check the URL and the network"), EXIT_CRM)
    if isinstance(exc, OSError) and getattr(exc, "errno", None) in _ADDRESS_IN_USE:
        return Failure(f"cannot listen: {listen_problem(exc)}", EXIT_PORT)
    return None
