"""docs/configuration.md is generated from the schemas and must stay in step with them."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from marshmallow import Schema

from adapters.registry import CRM_TYPES, CrmType
from connector.config.reference import REGENERATE, anchor, format_span, main, render_reference

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "configuration.md"


def test_committed_reference_matches_the_schemas() -> None:
    expected = render_reference()
    assert PAGE.exists(), f"docs/configuration.md is missing: run `{REGENERATE}` from the repository root"
    actual = PAGE.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            list(
                difflib.unified_diff(
                    actual.splitlines(True), expected.splitlines(True), "docs/configuration.md", "render_reference()"
                )
            )[:60]
        )
        pytest.fail(
            f"docs/configuration.md is out of date with the schemas; regenerate it with\n"
            f"    {REGENERATE}\nfrom the repository root and commit it.\n{diff}"
        )


def test_reference_names_known_keys() -> None:
    page = render_reference()
    for key in (
        "`storage.url`",
        "`server.max_body_bytes`",
        "`crms.<name>.application_token`",
        "`crms.<name>.webhook_url`",
        "`rules[].on`",
        "`deadlines.<name>.due`",
        "`reports[].schedule`",
        "`territories[].captain`",
        "`dispatcher.max_attempts`",
    ):
        assert key in page, key
    bitrix = page.split("### `crms.<name>` with `type: bitrix24`", 1)[1].split("\n### ", 1)[0]
    assert "| `crms.<name>.application_token` | string | **required** | at least 8 characters |" in bitrix
    assert "| `crms.<name>.poll_every` | time span | `5m` |" in bitrix
    assert "**Secret**" in bitrix
    assert "one of `deal.created`" in page  # allowed values come from the validators
    assert "| `server.max_body_bytes` | integer | `262144` | ≥ 1024 |" in page


def test_reference_is_deterministic() -> None:
    assert render_reference() == render_reference()


def test_a_crm_type_whose_settings_cannot_be_imported_is_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> type[Schema]:
        raise ModuleNotFoundError("No module named 'adapters.nowhere.settings'")

    monkeypatch.setitem(CRM_TYPES, "nowhere", CrmType("nowhere", broken, broken))  # type: ignore[arg-type]
    page = render_reference()
    assert "### `crms.<name>` with `type: nowhere`" in page
    assert "could not be imported (ModuleNotFoundError)" in page
    assert "`crms.<name>.application_token`" in page  # the other types are still listed


def test_main_writes_the_page(tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    assert main([str(out)]) == 0
    assert out.read_bytes() == render_reference().encode("utf-8")


def test_helpers() -> None:
    assert [format_span(s) for s in (0.5, 1.0, 30.0, 120.0, 3600.0, 259200.0, 90.0)] == [
        "500ms",
        "1s",
        "30s",
        "2m",
        "1h",
        "3d",
        "90s",
    ]
    assert anchor("`crms.<name>` with `type: bitrix24`") == "crmsname-with-type-bitrix24"
    assert anchor("`deadlines.<name>`") == "deadlinesname"
