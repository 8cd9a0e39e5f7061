"""Small things an operator meets on the first day: --version, --config on check, docs whose
example values and variable names work with the examples."""

from __future__ import annotations

import re
import shlex
from importlib.metadata import version
from pathlib import Path

from click.testing import CliRunner

from connector.cli import main
from connector.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [ROOT / "config.example.yaml", *sorted((ROOT / "examples").glob("*.yaml"))]


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"connector {version('crm-connector')}"


def test_check_takes_the_config_as_an_option_or_an_argument(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "crms: {b24: {type: bitrix24, webhook_url: 'https://p.bitrix24.ru/rest/1/x/', "
        "application_token: tok-12345678}}\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    for args in (["check", "--config", str(path)], ["check", str(path)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "OK (1 CRM(s)" in result.output
    result = runner.invoke(main, ["check"])
    assert result.exit_code == 2 and "connector check --config FILE" in result.output


def _exports() -> dict[str, str]:
    """Every ``export NAME=value`` (and ``NAME=value`` after it) in the README and docs."""
    found: dict[str, str] = {}
    for doc in DOCS:
        for line in doc.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if not text.startswith("export "):
                continue
            for word in shlex.split(text.split("#", 1)[0], posix=True)[1:]:
                name, sep, value = word.partition("=")
                if sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                    found.setdefault(name, value)
    return found


def test_the_docs_export_values_that_pass_validation(tmp_path: Path) -> None:
    exports = _exports()
    assert {"B24_WEBHOOK_URL", "B24_APP_TOKEN"} <= set(exports)
    # The README's example values load the example config as they are.
    load_config(ROOT / "config.example.yaml", environ=exports)


def test_the_docs_name_the_variables_the_examples_use() -> None:
    used = {m for path in EXAMPLES for m in re.findall(r"\$\{([A-Z0-9_]+)", path.read_text(encoding="utf-8"))}
    crm_vars = re.compile(r"^(B24|PD|ONEC)_")
    named = set(_exports())
    for doc in DOCS:
        named |= set(re.findall(r"\$\{([A-Z0-9_]+)\}", doc.read_text(encoding="utf-8")))
    drifted = {n for n in named if crm_vars.match(n) and n not in used}
    assert not drifted, f"the docs name {sorted(drifted)}, the examples do not"
