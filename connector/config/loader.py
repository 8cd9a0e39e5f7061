"""Read the YAML config: keep each key's line, substitute ``${VAR}`` from the environment.

Values that came from the environment are remembered as secrets so that nothing that
prints the config (``check``, logs, errors) ever shows them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path_ = tuple[str | int, ...]


@dataclass
class ConfigProblem:
    """One thing wrong with the config, located by key path and (where known) line."""

    path: str
    message: str
    line: int | None = None

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        return f"{where}: {self.path or '<root>'}: {self.message}"


@dataclass
class RawConfig:
    """The parsed YAML, the line of each key path, and the secrets substituted into it."""

    data: dict[str, Any]
    lines: dict[Path_, int] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    problems: list[ConfigProblem] = field(default_factory=list)

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest parent that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_raw(text: str, environ: Mapping[str, str] | None = None) -> RawConfig:
    """Parse ``text``; YAML syntax errors and missing variables become problems."""
    env = os.environ if environ is None else environ
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        return RawConfig({}, problems=[ConfigProblem("", f"invalid YAML: {problem}", line)])
    raw = RawConfig({})
    if node is None:
        raw.problems.append(ConfigProblem("", "the file is empty"))
        return raw
    value = _convert(node, (), raw, env)
    if not isinstance(value, dict):
        raw.problems.append(ConfigProblem("", "the top level must be a mapping", node.start_mark.line + 1))
        return raw
    raw.data = value
    return raw


def load_file(path: str | Path, environ: Mapping[str, str] | None = None) -> RawConfig:
    """Read and parse a config file."""
    return load_raw(Path(path).read_text(encoding="utf-8"), environ)


def _convert(node: yaml.Node, path: Path_, raw: RawConfig, env: Mapping[str, str]) -> Any:
    raw.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            # Keys keep their source text: YAML 1.1 would read `on:` as True.
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            if key in out:
                raw.problems.append(ConfigProblem(dotted((*path, key)), "duplicate key", key_node.start_mark.line + 1))
            raw.lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, (*path, key), raw, env)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), raw, env) for i, item in enumerate(node.value)]
    value = yaml.SafeLoader("").construct_object(node)  # type: ignore[no-untyped-call]  # scalars only
    if isinstance(value, str) and "${" in value:
        return _substitute(value, path, raw, env, node.start_mark.line + 1)
    return value


def _substitute(value: str, path: Path_, raw: RawConfig, env: Mapping[str, str], line: int) -> str:
    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            secret = env[name]
        elif default is not None:
            secret = default
        else:
            raw.problems.append(ConfigProblem(dotted(path), f"environment variable {name} is not set", line))
            return ""
        if len(secret) >= 4:
            raw.secrets.add(secret)
        return secret

    return _VAR.sub(repl, value)
