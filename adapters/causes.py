"""The network cause under an adapter error, in a few words an operator can act on."""

from __future__ import annotations

import re

_HOST = re.compile(r"host='([^']+)', port=(\d+)")


def root_cause(exc: BaseException) -> str:
    """``": cannot resolve portal.example"``, ``": 10.0.0.5:443 refused the connection"``, … or ``""``.

    Host and port only, never the URL: a Bitrix24 webhook URL holds its secret code. Empty when
    the error's own message already names the cause.
    """
    cause = network_cause(exc.__cause__ or exc.__context__)
    return "" if cause and cause in str(exc) else cause


def network_cause(exc: BaseException | None) -> str:
    """The cause found in ``exc`` or the chain under it (see ``root_cause``), or ``""``."""
    inner = exc
    for _ in range(10):
        if inner is None:
            return ""
        text = str(inner)
        where = _HOST.search(text)
        target = f"{where.group(1)}:{where.group(2)}" if where else "the host"
        if (
            "NameResolution" in text
            or "Name or service not known" in text
            or "getaddrinfo" in text
            or "nodename nor servname" in text
        ):
            return f": cannot resolve {target.rsplit(':', 1)[0]}"
        if "Connection refused" in text or "actively refused" in text:
            return f": {target} refused the connection"
        if "timed out" in text.lower():
            return f": {target} did not answer in time"
        if "SSL" in text or "certificate" in text:
            return f": TLS with {target} failed"
        if "Connection reset" in text or "RemoteDisconnected" in text or "Connection aborted" in text:
            return f": {target} dropped the connection"
        inner = inner.__cause__ or inner.__context__
    return ""
