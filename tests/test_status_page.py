"""The status page: guarded by the token (never in a URL), never cached, the same facts as
`connector status`, a deal's trail, replay and discard buttons that refuse forged posts;
rendered and used in headless Chromium with a screenshot."""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, update

from connector.config import load_config_text
from connector.runtime import Runtime
from connector.status import gather
from connector.storage.models import AuditRow, InboxRow, OutboxRow
from connector.web.status_page import SESSION_COOKIE
from domain import Event, EventKind
from domain.clock import utcnow
from domain.statuses import InboxStatus, OutboxStatus
from simulators.bitrix24 import Bitrix24Simulator
from tests.helpers import CONFIG, TOKEN, wait_for

STATUS_TOKEN = "status-token-0123456789"


@pytest.fixture
def running(db_url, monkeypatch) -> Iterator[tuple[Runtime, Bitrix24Simulator, str]]:  # type: ignore[no-untyped-def]
    simulator = Bitrix24Simulator(application_token=TOKEN, rate=50, burst=50)
    for name in ("Иван", "Олег"):
        simulator.add_user(name)
    server = simulator.serve()
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    text = CONFIG.format(db_url=db_url, b24_url=server.base_url + simulator.webhook_base).replace(
        "server: {host: 127.0.0.1, port: 0}", f"server: {{host: 127.0.0.1, port: 0, status_token: {STATUS_TOKEN}}}"
    )
    rt = Runtime(load_config_text(text))
    rt.start()
    simulator.handler_url = f"{rt.intake_url}/hooks/bitrix24/b24"
    deal = simulator.add_deal(
        {"TITLE": "Заявка", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW", "UF_CRM_ADDRESS": "Казань, Советский район"}
    )
    assert wait_for(lambda: len(simulator.tasks_for_deal(deal)) == 1)
    yield rt, simulator, deal
    rt.stop()
    server.stop()
    simulator.close()


def _kill_written_task(rt: Runtime, error: str) -> int:
    """Turn the task the connector wrote into a dead letter, as if its last try had failed."""

    def written() -> bool:
        with rt.store.sessions() as s:
            return s.scalars(select(OutboxRow.status).where(OutboxRow.command == "create_task")).all() == ["done"]

    assert wait_for(written)  # the dispatcher has finished with it
    with rt.store.sessions() as s, s.begin():
        row = s.scalars(select(OutboxRow).where(OutboxRow.command == "create_task")).one()
        s.execute(update(OutboxRow).where(OutboxRow.id == row.id).values(status=OutboxStatus.DEAD, last_error=error))
        return row.id


def _park_an_inbox_row(rt: Runtime, reason: str) -> int:
    """An event whose deal the CRM refuses to show us, set aside by the worker."""
    now = utcnow()
    rt.store.inbox.add(Event("b24", EventKind.DEAL_UPDATED, "99", now, "parked-99"), now)
    with rt.store.sessions() as s, s.begin():
        row = s.scalars(select(InboxRow).where(InboxRow.dedup_key == "parked-99")).one()
        row.status, row.last_error = InboxStatus.PARKED, reason
        return row.id


def _status_of(rt: Runtime, row_id: int) -> str:
    with rt.store.sessions() as s:
        row = s.get(OutboxRow, row_id)
        assert row is not None
        return row.status


def _signed_in(rt: Runtime) -> requests.Session:
    browser = requests.Session()
    answer = browser.post(
        f"{rt.intake_url}/status/sign-in",
        data={"token": STATUS_TOKEN},
        headers={"Origin": rt.intake_url},
        timeout=5,
        allow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return browser


def test_token_guards_the_page(running) -> None:  # type: ignore[no-untyped-def]
    rt, _, deal = running
    url = f"{rt.intake_url}/status"
    refused = requests.get(url, timeout=5)
    assert refused.status_code == 401 and 'name="token"' in refused.text  # the sign-in form
    assert refused.headers["Cache-Control"] == "no-store"
    assert requests.get(url, params={"token": STATUS_TOKEN}, timeout=5).status_code == 401  # never in a URL
    assert requests.get(url, auth=("admin", STATUS_TOKEN), timeout=5).status_code == 200
    page = requests.get(url, headers={"Authorization": f"Bearer {STATUS_TOKEN}"}, params={"deal": deal}, timeout=5)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store" and page.headers["X-Frame-Options"] == "DENY"
    assert "captain-by-location" in page.text and "Проверить техническую возможность" in page.text
    assert STATUS_TOKEN not in page.text and TOKEN not in page.text
    assert 'http-equiv="refresh"' in page.text


def test_sign_in_keeps_a_cookie_that_is_not_the_token(running) -> None:  # type: ignore[no-untyped-def]
    rt, _, _ = running
    wrong = requests.post(
        f"{rt.intake_url}/status/sign-in", data={"token": "not-the-token-000000"}, allow_redirects=False, timeout=5
    )
    assert wrong.status_code == 401 and SESSION_COOKIE not in wrong.cookies
    browser = _signed_in(rt)
    cookie = browser.cookies[SESSION_COOKIE]
    assert cookie and STATUS_TOKEN not in cookie
    assert browser.get(f"{rt.intake_url}/status", timeout=5).status_code == 200
    out = browser.post(
        f"{rt.intake_url}/status/sign-out", data={"csrf": _csrf(browser, rt)}, headers={"Origin": rt.intake_url}
    )
    assert out.status_code == 401  # redirected back to the sign-in form
    assert browser.get(f"{rt.intake_url}/status", timeout=5).status_code == 401


def _csrf(browser: requests.Session, rt: Runtime) -> str:
    page = browser.get(f"{rt.intake_url}/status", timeout=5).text
    start = page.index('name="csrf" value="') + len('name="csrf" value="')
    return page[start : page.index('"', start)]


def test_actions_refuse_forged_posts(running) -> None:  # type: ignore[no-untyped-def]
    rt, _, _ = running
    dead = _kill_written_task(rt, "user 17 not found")
    browser = _signed_in(rt)
    csrf = _csrf(browser, rt)
    url = f"{rt.intake_url}/status/replay"
    no_field = browser.post(url, data={"id": dead}, headers={"Origin": rt.intake_url}, allow_redirects=False)
    other_site = browser.post(
        url, data={"id": dead, "csrf": csrf}, headers={"Origin": "https://evil.example"}, allow_redirects=False
    )
    assert (no_field.status_code, other_site.status_code) == (403, 403)
    assert _status_of(rt, dead) == OutboxStatus.DEAD


def test_replay_button_resends_and_discard_button_records_why(running) -> None:  # type: ignore[no-untyped-def]
    rt, simulator, deal = running
    dead = _kill_written_task(rt, "user 17 not found")
    browser = _signed_in(rt)
    page = browser.get(f"{rt.intake_url}/status", timeout=5).text
    assert f'id="replay-{dead}"' in page and "user 17 not found" in page
    answer = browser.post(
        f"{rt.intake_url}/status/replay",
        data={"id": dead, "csrf": _csrf(browser, rt)},
        headers={"Origin": rt.intake_url},
    )
    assert answer.status_code == 200 and f"Dead letter {dead} queued again" in answer.text
    assert wait_for(lambda: _status_of(rt, dead) == OutboxStatus.DONE)
    assert len(simulator.tasks_for_deal(deal)) == 1  # found by its marker, not written twice

    _kill_written_task(rt, "user 17 not found")
    csrf = _csrf(browser, rt)
    empty = browser.post(
        f"{rt.intake_url}/status/discard",
        data={"id": dead, "csrf": csrf, "reason": " "},
        headers={"Origin": rt.intake_url},
    )
    assert "Say why" in empty.text and _status_of(rt, dead) == OutboxStatus.DEAD
    done = browser.post(
        f"{rt.intake_url}/status/discard",
        data={"id": dead, "csrf": csrf, "reason": "user 17 was deleted"},
        headers={"Origin": rt.intake_url},
    )
    assert f"Dead letter {dead} discarded" in done.text and _status_of(rt, dead) == OutboxStatus.DISCARDED
    assert "dead letter" not in done.text.split("Needs attention")[-1].split("<table>")[0]
    with rt.store.sessions() as s:
        trail = [r.message for r in s.scalars(select(AuditRow).where(AuditRow.action == "discarded"))]
    assert trail and "user 17 was deleted" in trail[0] and "status page (127.0.0.1)" in trail[0]


def test_no_token_no_page(db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    rt = Runtime(load_config_text(CONFIG.format(db_url=db_url, b24_url="http://127.0.0.1:9/rest/1/x/")))
    try:
        client = rt.app.test_client()
        assert client.get("/status", headers={"Authorization": f"Bearer {STATUS_TOKEN}"}).status_code == 404
    finally:
        rt.stop()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_page_is_used_in_headless_chromium(running, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A person signs in, sees the dead letter, presses replay; the screenshot shows the page."""
    browser_path = _chromium()
    if browser_path is None:
        if os.environ.get("CONNECTOR_TEST_CHROMIUM"):
            pytest.fail("CONNECTOR_TEST_CHROMIUM is set but no chromium is installed")
        pytest.skip("no chromium on this machine (Debian package `chromium`); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    rt, simulator, deal = running
    dead = _kill_written_task(rt, "user 17 not found")
    parked = _park_an_inbox_row(rt, "the webhook user may not read deal 99 (Access denied)")
    # The portal stops accepting the connector's webhook code: the next event pauses the CRM.
    good_code, simulator.webhook_code = simulator.webhook_code, "revoked-code"
    simulator.add_deal({"TITLE": "Новая заявка", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW"})
    assert wait_for(lambda: any("processing since" in line for line in gather(rt.store, rt.config, utcnow()).attention))
    shots = Path(os.environ.get("CONNECTOR_SCREENSHOT_DIR", tmp_path))
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{rt.intake_url}/status")
            page.fill("input[name=token]", STATUS_TOKEN)
            page.click("button[type=submit]")
            content = page.content()
            assert "Needs attention" in content and "user 17 not found" in content
            assert "processing since" in content and "Access denied" in content  # paused CRM, parked row
            assert STATUS_TOKEN not in page.url
            page.screenshot(path=str(shots / "status-page.png"), full_page=True)
            simulator.webhook_code = good_code  # the admin renewed the webhook: the CRM resumes by itself
            page.click(f"#replay-{dead}")
            assert f"Dead letter {dead} queued again" in page.content()
            page.click(f"#replay-inbox-{parked}")
            assert f"Inbox row {parked} queued again" in page.content()
            page.screenshot(path=str(shots / "status-page-replayed.png"), full_page=True)
        finally:
            chromium.close()
    assert wait_for(lambda: _status_of(rt, dead) == OutboxStatus.DONE)
    assert len(simulator.tasks_for_deal(deal)) == 1
    data = (shots / "status-page.png").read_bytes()
    assert _png_size(data)[0] == 1280 and _png_size(data)[1] >= 900
    # A blank or error page compresses to almost nothing; tables and text do not.
    assert len(data) > 20_000, len(data)
