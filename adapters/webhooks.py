"""Validators shared by the CRMs' webhook receivers: HTTP Basic credentials and a shared token,
both compared in constant time so response times tell nothing about the secret."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable

from adapters.contracts import IncomingRequest
from domain.errors import WebhookForbidden, WebhookUnauthorized


class BasicAuthValidator:
    """The delivery must carry the HTTP Basic user and password the webhook was registered with
    (401 otherwise)."""

    def __init__(self, user: str, password: str) -> None:
        self._user = user.encode()
        self._password = password.encode()

    def __call__(self, request: IncomingRequest) -> None:
        value = request.headers.get("authorization") or request.headers.get("Authorization") or ""
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise WebhookUnauthorized("HTTP Basic credentials required")
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError) as exc:
            raise WebhookUnauthorized("unreadable Basic credentials") from exc
        # Both compared, always, so the time taken does not tell which one was wrong.
        user_ok = hmac.compare_digest(user, self._user)
        password_ok = hmac.compare_digest(password, self._password)
        if not (sep and user_ok and password_ok):
            raise WebhookUnauthorized("wrong credentials")


class TokenValidator:
    """The delivery must carry the shared token, found where ``locate`` looks (403 otherwise).

    ``locate`` returns the token the request presents, None when it presents none; it may
    itself refuse a request it cannot read (a wrong media type, say).
    """

    def __init__(self, token: str, locate: Callable[[IncomingRequest], str | None], *, name: str = "token") -> None:
        self._token = token.encode()
        self._locate = locate
        self._name = name

    def __call__(self, request: IncomingRequest) -> None:
        presented = self._locate(request)
        if not presented:
            raise WebhookForbidden(f"missing {self._name}")
        if not hmac.compare_digest(presented.encode(), self._token):
            raise WebhookForbidden(f"{self._name} does not match")
