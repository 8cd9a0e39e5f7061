"""No CRM is named in the runtime, the rules or the domain: they ask for capabilities.

import-linter keeps the CRM packages out of their imports (``lint-imports``); this keeps the
names out of their code, so a ``type == "…"`` branch or a CRM's field name cannot come back
as a string. Docstrings and comments may name CRMs (they explain); code may not.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from adapters.registry import CRM_TYPES

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("domain", "rules", "jobs", "connector")
# The command line and the demo wire real CRMs together for a person; migrations record
# what was stored before.
EXEMPT = ("connector/cli.py", "connector/demo/", "connector/storage/migrations/")
# Each registered type's name, the short names they go by, and 1C's in both alphabets.
WORDS = sorted({*CRM_TYPES, "bitrix", "b24", "1c", "1с"}, key=len, reverse=True)
NAMED = re.compile(r"(?<![a-z0-9])(?:" + "|".join(re.escape(w) for w in WORDS) + r")(?![a-z])", re.IGNORECASE)


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _names(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every identifier and string literal (but docstrings) with its line."""
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield line, node.value
        elif isinstance(node, ast.Name):
            yield line, node.id
        elif isinstance(node, ast.Attribute):
            yield line, node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield line, node.name
        elif isinstance(node, (ast.arg, ast.keyword)):
            if node.arg:
                yield line, node.arg
        elif isinstance(node, ast.alias):
            yield line, node.name
            if node.asname:
                yield line, node.asname
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield line, node.module


def _words(name: str) -> str:
    """``OneCAdapter`` → ``OneC Adapter``, ``bitrix24_url`` → ``bitrix24 url``: words to match."""
    camel = r"(?<=[a-z])(?=[A-Z])|(?<=[0-9])(?=[A-Z][a-z])|(?<=[A-Z])(?=[A-Z][a-z])|_"
    return re.sub(camel, " ", name).replace("One C", "OneC")


def crm_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    hits = []
    for line, text in _names(tree):
        for match in NAMED.finditer(_words(text)):
            hits.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r} in {text[:60]!r}")
    return hits


def test_the_scan_finds_a_crm_named_in_code(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Docstrings may say Bitrix24."""\n'
        "# and comments may say 1C\n"
        "def route(settings):\n"
        '    if settings.type == "onec":\n'
        "        return OneCAdapter\n"
        "    return settings.b24_url, fields['UF_CRM_1C_REF'], 'pipedrive:x', phonecall, done_count\n",
        encoding="utf-8",
    )
    sample = sample.rename(ROOT / "tests" / f"_scan_sample_{tmp_path.name}.py")
    try:
        found = [hit.split(": ", 1)[1] for hit in crm_names(sample)]
    finally:
        sample.unlink()
    assert sorted(f.split(" in ")[0] for f in found) == ["'1C'", "'OneC'", "'b24'", "'onec'", "'pipedrive'"]


def test_no_crm_is_named_in_the_core() -> None:
    files = [
        path
        for package in SCANNED
        for path in sorted((ROOT / package).rglob("*.py"))
        if not str(path.relative_to(ROOT)).startswith(EXEMPT)
    ]
    assert len(files) > 40
    hits = [hit for path in files for hit in crm_names(path)]
    assert not hits, "CRM names in the core (ask for a capability or move it to adapters/):\n" + "\n".join(hits)
