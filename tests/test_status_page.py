"""The status page: guarded by the token, the same facts as `connector status`, a deal's trail;
rendered in headless Chromium with a screenshot check."""

from __future__ import annotations

import base64
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from connector.config import load_config_text
from connector.runtime import Runtime
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


def test_token_guards_the_page(running) -> None:  # type: ignore[no-untyped-def]
    rt, _, deal = running
    url = f"{rt.intake_url}/status"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, params={"token": "wrong-token-0123456789"}, timeout=5).status_code == 401
    assert requests.get(url, auth=("admin", STATUS_TOKEN), timeout=5).status_code == 200
    page = requests.get(url, headers={"Authorization": f"Bearer {STATUS_TOKEN}"}, params={"deal": deal}, timeout=5)
    assert page.status_code == 200
    assert "captain-by-location" in page.text and "Проверить техническую возможность" in page.text
    assert TOKEN not in page.text  # the CRM's secrets never; the page's own token only in its form


def test_no_token_no_page(db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("B24_TOKEN", TOKEN)
    rt = Runtime(load_config_text(CONFIG.format(db_url=db_url, b24_url="http://127.0.0.1:9/rest/1/x/")))
    try:
        assert rt.app.test_client().get(f"/status?token={STATUS_TOKEN}").status_code == 404
    finally:
        rt.stop()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_page_renders_in_headless_chromium(running, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    browser = _chromium()
    if browser is None:
        if os.environ.get("CONNECTOR_TEST_CHROMIUM"):
            pytest.fail("CONNECTOR_TEST_CHROMIUM is set but no chromium is installed")
        pytest.skip("no chromium on this machine (Debian package `chromium`); .ci/run installs it")
    rt, _, deal = running
    url = f"{rt.intake_url}/status?token={STATUS_TOKEN}&deal={deal}"
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,900",
    ]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "crm-connector status" in dom and ("All well" in dom or "Needs attention" in dom)
    assert "captain-by-location" in dom
    shot = Path(os.environ.get("CONNECTOR_SCREENSHOT_DIR", tmp_path)) / "status-page.png"
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=60, check=True)
    data = shot.read_bytes()
    assert _png_size(data) == (1280, 900)
    # A blank or error page compresses to almost nothing; tables and text do not.
    assert len(data) > 20_000, len(data)
    assert base64.b64encode(data[:8]) == b"iVBORw0KGgo="
