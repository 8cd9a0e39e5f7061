"""The shipped example config and the demo config stay valid."""

from __future__ import annotations

from pathlib import Path

from connector.config import load_config, load_config_text

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_is_valid() -> None:
    env = {"B24_WEBHOOK_URL": "https://x.bitrix24.ru/rest/1/abc/", "B24_APP_TOKEN": "example-token"}
    cfg = load_config(ROOT / "config.example.yaml", env)
    assert [r.name for r in cfg.rules] == ["captain-by-location", "connection-deadline", "connection-breached"]
    assert len(cfg.territories) == 3 and list(cfg.deadlines) == ["connection"]


def test_the_example_channel_is_valid_once_uncommented() -> None:
    text = (ROOT / "config.example.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    start = lines.index("# channels:")
    end = lines.index("", start)  # the block ends at the first blank line
    lines[start:end] = [line[2:] for line in lines[start:end]]
    text = "\n".join(lines).replace("      # - message:", "      - message:")
    env = {
        "B24_WEBHOOK_URL": "https://x.bitrix24.ru/rest/1/abc/",
        "B24_APP_TOKEN": "example-token",
        "TG_BOT_TOKEN": "7012345678:AAH-example-token-0123456789",
    }
    cfg = load_config_text(text, env)
    assert list(cfg.channels) == ["sales_chat"]
    assert [s.name for s in cfg.rules[2].actions][-1] == "message"


def test_examples_are_valid() -> None:
    env = {
        "B24_WEBHOOK_URL": "https://x.bitrix24.ru/rest/1/abc/",
        "B24_APP_TOKEN": "example-token",
        "ONEC_URL": "http://1c.local/trade/odata/standard.odata/",
        "ONEC_USER": "Интеграция",
        "ONEC_PASSWORD": "example-password",
        "PD_API_TOKEN": "example-pd-token",
        "PD_BASE_URL": "https://acme.pipedrive.com",
        "PD_WEBHOOK_USER": "connector",
        "PD_WEBHOOK_PASSWORD": "example-hook-password",
        "TG_BOT_TOKEN": "7012345678:AAH-example-token-0123456789",
        "TG_SHARED_CHAT_ID": "-1001234567890",
        "TG_CARE_CHAT_ID": "-1001234567891",
    }
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        assert load_config(path, env).rules, path


def test_demo_config_is_valid() -> None:
    env = {"SIM_URL": "http://127.0.0.1:1/rest/1/c/", "SIM_TOKEN": "demo-token", "DEMO_DB_URL": "sqlite:///x.db"}
    assert load_config(ROOT / "connector" / "demo" / "bitrix24.yaml", env).rules
