"""Every `connector …` command shown in README.md and docs/*.md works as written: each parses
(its command and options still exist), and the safe ones run against the sandbox with
config.example.yaml, so a doc that drifts from the code fails here."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.demo.sandbox import SandboxOptions, running_sandbox

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"```(?:sh|bash|shell|console|powershell)\n(.*?)```", re.S)
SHELL_STOP = {"&&", "||", "|", ";", ">", ">>", "2>&1", "<"}
# Run for real against the sandbox; the others (servers, simulators) are only parsed.
RUN = {
    "check",
    "init-db",
    "status",
    "why",
    "replay",
    "discard",
    "dry-run",
    "penalties",
    "backfill",
    "reload",
    "generate-history",
    "org-import",
}


@dataclass(frozen=True)
class Documented:
    where: str
    line: str
    args: tuple[str, ...]

    @property
    def command(self) -> str:
        return next((a for a in self.args if not a.startswith("-")), "")


def _words(line: str) -> list[str]:
    windows = re.search(r"[A-Za-z]:\\", line) is not None
    lexer = shlex.shlex(line, posix=not windows, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return [w.strip('"') if windows else w for w in lexer]
    except ValueError:  # a quote opened in a shell function: not a command line to take apart
        return []


def documented_commands() -> list[Documented]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in SHELL_BLOCK.findall(text):
            for line in block.splitlines():
                words = _words(line) if "connector" in line else []
                for i, word in enumerate(words):
                    name = re.split(r"[/\\]", word)[-1]
                    if name in ("connector", "connector.exe") and i + 1 < len(words):
                        rest = words[i + 1 :]
                        cut = next((j for j, w in enumerate(rest) if w in SHELL_STOP), len(rest))
                        args = tuple(rest[:cut])
                        if args and (args[0] in main.commands or args[0].startswith("--")):
                            found.append(Documented(doc.name, line.strip(), args))
                        break
    return found


COMMANDS = documented_commands()


def test_the_docs_show_the_everyday_commands() -> None:
    shown = {c.command for c in COMMANDS}
    assert {"check", "run", "status", "why", "replay", "discard", "dry-run", "reload", "sandbox"} <= shown


def _with_config(args: tuple[str, ...], config: Path) -> list[str]:
    """The documented arguments, the config path replaced by ``config`` (examples/ kept, made absolute)."""
    out = list(args)
    for i, arg in enumerate(out):
        is_config = (i > 0 and out[i - 1] == "--config") or (out[0] == "check" and arg.endswith(".yaml"))
        if is_config:
            out[i] = str(ROOT / arg) if (ROOT / arg).is_file() else str(config)
    return out


@pytest.mark.parametrize("doc", COMMANDS, ids=lambda c: f"{c.where}:{' '.join(c.args)[:60]}")
def test_each_documented_command_parses(doc: Documented, tmp_path: Path) -> None:
    args = _with_config(doc.args, tmp_path / "config.yaml")
    index = args.index(doc.command) if doc.command else len(args)
    known = {opt for param in main.params for opt in param.opts} | {"--help"}
    assert set(args[:index]) <= known, f"{doc.where}: `{doc.line}`: unknown option of connector itself"
    try:
        if doc.command:
            main.commands[doc.command].make_context(doc.command, args[index + 1 :]).close()
    except click.exceptions.Exit:
        pass  # --version, --help
    except click.UsageError as exc:
        pytest.fail(f"{doc.where}: `{doc.line}` no longer parses: {exc.format_message()}")


@pytest.fixture(scope="module")
def sandbox_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("documented")
    with running_sandbox(SandboxOptions(bitrix24_port=0, pipedrive_port=0, onec_port=0)) as sandbox:
        text = (
            (ROOT / "config.example.yaml")
            .read_text(encoding="utf-8")
            .replace("sqlite:///data/connector.db", f"sqlite:///{folder / 'c.db'}")
            .replace("port: 8080", "port: 0")
            .replace("host: 0.0.0.0", "host: 127.0.0.1")
        )
        config = folder / "config.yaml"
        config.write_text(text, encoding="utf-8")
        yield config, dict(sandbox.env)


@pytest.mark.slow
def test_the_safe_documented_commands_run_against_the_sandbox(
    sandbox_config: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, env = sandbox_config
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # actions.csv, march.csv, year.jsonl land here
    failures = []
    ran = set()
    for doc in COMMANDS:
        if doc.command not in RUN:
            continue
        args = _with_config(doc.args, config)
        if doc.command == "generate-history":
            args = [*args, "--deals", "300"]  # the documented 5000 work the same, slower
        result = CliRunner().invoke(main, args)
        ran.add(doc.command)
        ok_codes = (0,) if doc.command in ("check", "init-db", "reload", "generate-history") else (0, 1)
        broken = (
            result.exit_code not in ok_codes
            or "Traceback" in result.output
            or "Usage:" in result.output
            or (result.exception is not None and not isinstance(result.exception, SystemExit))
        )
        if broken:
            failures.append(f"{doc.where}: `{doc.line}` → exit {result.exit_code}: {result.output[-400:]}")
    assert not failures, "\n".join(failures)
    assert {"check", "status", "why", "replay", "discard", "dry-run", "init-db"} <= ran
