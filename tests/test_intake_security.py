"""Webhook security: an allow-list, a replay window, and fuzzing of every intake route —
never a server error, never a stored row for a refused request, no secret in the logs."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from connector.config import load_config_text
from connector.runtime import Runtime
from connector.storage.models import InboxRow
from tests.helpers import CONFIG, TOKEN

WEBHOOK_SECRET = "simcode-secret-path"
TRIED = {"bodies": 0, "server_errors": 0}


def _runtime(db_url: str, monkeypatch: pytest.MonkeyPatch, server: str = "") -> Runtime:
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    text = CONFIG.format(db_url=db_url, b24_url=f"http://127.0.0.1:9/rest/1/{WEBHOOK_SECRET}/")
    if server:
        text = text.replace("server: {host: 127.0.0.1, port: 0}", server)
    return Runtime(load_config_text(text))


PD_BLOCK = """
  pd:
    type: pipedrive
    base_url: "http://127.0.0.1:9"
    api_token: "pd-api-token-secret-1"
    webhook_user: hooks
    webhook_password: "pd-hook-password-1"
territories:"""


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    mp = pytest.MonkeyPatch()
    mp.setenv("B24_TOKEN", TOKEN)
    text = CONFIG.format(
        db_url=f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'c.db'}",
        b24_url=f"http://127.0.0.1:9/rest/1/{WEBHOOK_SECRET}/",
    ).replace("\nterritories:", PD_BLOCK, 1)
    rt = Runtime(load_config_text(text))
    assert "pd" in rt.adapters
    yield rt
    rt.stop()
    mp.undo()
    print(f"\nfuzz: {TRIED['bodies']} bodies tried, {TRIED['server_errors']} server errors")


def _rows(rt: Runtime) -> int:
    with rt.store.sessions() as s:
        return int(s.scalar(select(func.count(InboxRow.id))) or 0)


def _valid(deal: str = "5", ts: int | None = None, token: str = TOKEN) -> str:
    stamp = int(time.time()) if ts is None else ts
    return f"event=ONCRMDEALUPDATE&data[FIELDS][ID]={deal}&ts={stamp}&auth[application_token]={quote(token)}"


keys = st.text(alphabet=st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    [
        "auth[application_token]",
        "data[FIELDS][ID]",
        "event",
        "a[",
        "a]]",
        "[]",
        "data[][][]",
        "a" * 5000,
        "x" + "[y]" * 300,
    ]
)
form_bodies = st.lists(st.tuples(keys, st.text(max_size=50)), max_size=12).map(
    lambda pairs: "&".join(f"{quote(k, safe='[]')}={quote(v)}" for k, v in pairs).encode()
)
bodies = st.one_of(
    st.binary(max_size=3000),
    form_bodies,
    form_bodies.map(lambda b: b + b"&" + _valid(token="forged-token-0000").encode()),
    st.text(max_size=500).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.just(b'{"event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": "5"}}}'),
    st.just(("a=" + "1" * 300_000).encode()),  # larger than max_body_bytes
)
content_types = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=koi8-r",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        "application/json",
        "text/plain",
        "",
        "application/x-www-form-urlencoded; charset=utf-16",
    ]
)
routes = st.sampled_from(
    ["/hooks/bitrix24/b24", "/hooks/pipedrive/pd", "/hooks/bitrix24/other", "/hooks/pipedrive/b24", "/hooks/x/y"]
)
auths = st.sampled_from(
    [None, ("hooks", "pd-hook-password-1x"), ("hooks", ""), ("", "pd-hook-password-1"), ("хуки", "пароль")]
)
pd_bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
).map(
    lambda v: json.dumps({"meta": {"action": "change", "entity": "deal", "id": v}, "data": v, "previous": v}).encode()
)


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(route=routes, body=bodies | pd_bodies, content_type=content_types, auth=auths)
@pytest.mark.slow
def test_fuzzed_deliveries_never_500_never_stored(
    fuzz_app: Runtime, route: str, body: bytes, content_type: str, auth: tuple[str, str] | None
) -> None:
    client = fuzz_app.app.test_client()
    before = _rows(fuzz_app)
    headers = {"Content-Type": content_type} if content_type else {}
    if auth is not None:  # near misses of Pipedrive's basic auth; the right pair is never sent
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    resp = client.post(route, data=body, headers=headers)
    TRIED["bodies"] += 1
    if resp.status_code >= 500:
        TRIED["server_errors"] += 1
    assert resp.status_code < 500, (resp.status_code, resp.get_data()[:200])
    assert resp.status_code in (200, 400, 401, 403, 404, 413, 415), resp.status_code
    assert _rows(fuzz_app) == before  # no body here carries the real token: nothing is ever stored


def _call(rt: Runtime, body: bytes, *, length: str | None, content_type: str) -> tuple[str, dict[str, str], bytes]:
    """The intake's WSGI app called directly: its status line, headers and body."""
    environ = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/hooks/bitrix24/b24",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": content_type,
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    else:  # no length: a chunked body, which werkzeug reads to its end
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Any:
        started.append((status, headers))

    chunks = rt.app(environ, start_response)
    data = b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    status, headers = started[0]
    return status, {k.lower(): v for k, v in headers}, data


def test_a_body_shorter_than_its_length_is_refused_not_stored(fuzz_app: Runtime) -> None:
    before = _rows(fuzz_app)
    body = _valid(deal="77").encode()
    status, _, data = _call(
        fuzz_app, body[:-5], length=str(len(body)), content_type="application/x-www-form-urlencoded"
    )
    assert status.startswith("400"), (status, data)
    assert _rows(fuzz_app) == before


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"event=ONCRMDEALUPDATE&auth[application_token]=forged", "application/x-www-form-urlencoded"),
        (b"\xff\xfe=1", "application/x-www-form-urlencoded"),
        (b'{"event": "ONCRMDEALUPDATE"}', "application/json"),
        (("a=1&" * 600).encode(), "application/x-www-form-urlencoded"),
    ],
)
def test_refusals_are_the_same_with_or_without_flask(fuzz_app: Runtime, body: bytes, content_type: str) -> None:
    # With a Content-Length the delivery is answered past Flask; chunked, through it.
    direct = _call(fuzz_app, body, length=str(len(body)), content_type=content_type)
    through_flask = _call(fuzz_app, body, length=None, content_type=content_type)
    assert direct[0] == through_flask[0]
    assert 400 <= int(direct[0][:3]) < 500
    assert direct[1]["content-type"] == through_flask[1]["content-type"] == "application/json"
    assert json.loads(direct[2]) == json.loads(through_flask[2])


def test_allow_list_refuses_other_sources(db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rt = _runtime(db_url, monkeypatch, 'server: {host: 127.0.0.1, port: 0, allow_from: ["10.1.0.0/16"]}')
    try:
        client = rt.app.test_client()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        refused = client.post(
            "/hooks/bitrix24/b24", data=_valid(), headers=headers, environ_base={"REMOTE_ADDR": "192.0.2.7"}
        )
        assert refused.status_code == 403 and _rows(rt) == 0
        allowed = client.post(
            "/hooks/bitrix24/b24", data=_valid(), headers=headers, environ_base={"REMOTE_ADDR": "10.1.4.2"}
        )
        assert allowed.status_code == 200 and _rows(rt) == 1
    finally:
        rt.stop()


def test_allow_list_behind_a_proxy_uses_the_forwarded_address(db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rt = _runtime(
        db_url, monkeypatch, 'server: {host: 127.0.0.1, port: 0, allow_from: ["10.1.0.0/16"], behind_proxy: true}'
    )
    try:
        client = rt.app.test_client()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": "10.1.4.2"}
        assert (
            client.post(
                "/hooks/bitrix24/b24", data=_valid(), headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}
            ).status_code
            == 200
        )
    finally:
        rt.stop()


def test_config_refuses_a_bad_network(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from connector.config import ConfigError

    with pytest.raises(ConfigError, match="allow_from"):
        _runtime("sqlite://", monkeypatch, 'server: {host: 127.0.0.1, port: 0, allow_from: ["10.1.0.0/99"]}')


def test_replay_window_refuses_old_and_future_deliveries(db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rt = _runtime(db_url, monkeypatch, "server: {host: 127.0.0.1, port: 0, replay_window: 1h}")
    try:
        client = rt.app.test_client()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        now = int(time.time())
        for stamp in (now - 7200, now + 3600):
            resp = client.post("/hooks/bitrix24/b24", data=_valid(ts=stamp), headers=headers)
            assert resp.status_code == 400 and "replay window" in resp.get_json()["error"]
        assert _rows(rt) == 0
        assert client.post("/hooks/bitrix24/b24", data=_valid(ts=now - 60), headers=headers).status_code == 200
    finally:
        rt.stop()


def test_no_secret_in_any_log_line(db_url, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    rt = _runtime(db_url, monkeypatch)
    try:
        client = rt.app.test_client()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        client.post("/hooks/bitrix24/b24", data=_valid(), headers=headers)
        client.post("/hooks/bitrix24/b24", data=_valid(token=TOKEN + "x"), headers=headers)
        client.post("/hooks/bitrix24/b24", data=b"\xff" + _valid().encode(), headers=headers)
        rt.worker.tick()  # the CRM is unreachable: retries and failures are logged
        secrets = rt.config.secrets | {WEBHOOK_SECRET}
        assert secrets, "the config's secrets are known"
        text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
        assert "webhook accepted" in text and "webhook refused" in text
        for secret in secrets:
            assert secret not in text
    finally:
        rt.stop()
