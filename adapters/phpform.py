"""Parse PHP-style form keys (``data[FIELDS][ID]=1``, ``select[]=ID``) into nested values.

Bitrix24 sends its outbound events this way. Parsing is strict: a key that does not
follow the grammar, or nests deeper than a sane payload, is an error, not a guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_DEPTH = 6


class FormKeyError(ValueError):
    """A key that is not PHP-style, or nests too deep."""


def parse_php_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Turn ``(key, value)`` pairs into a nested dict; ``[]`` appends to a list."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        m = _KEY.match(key)
        if not m:
            raise FormKeyError(f"bad form key {key[:60]!r}")
        path = [m.group(1), *_PART.findall(m.group(2))]
        if len(path) > MAX_DEPTH:
            raise FormKeyError(f"form key nests deeper than {MAX_DEPTH}: {key[:60]!r}")
        node: Any = root
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                if part != "":
                    raise FormKeyError(f"mixed list and map under {key[:60]!r}")
                if last:
                    node.append(value)
                    break
                node.append({})
                node = node[-1]
                continue
            if not isinstance(node, dict):
                raise FormKeyError(f"key {key[:60]!r} extends a plain value")
            if last:
                if part == "":
                    raise FormKeyError(f"empty key segment in {key[:60]!r}")
                if isinstance(node.get(part), (dict, list)):
                    raise FormKeyError(f"key {key[:60]!r} overwrites a nested value")
                node[part] = value
                break
            nxt_is_list = path[i + 1] == ""
            child = node.get(part)
            if child is None:
                child = [] if nxt_is_list else {}
                node[part] = child
            elif not isinstance(child, (dict, list)):
                raise FormKeyError(f"key {key[:60]!r} extends a plain value")
            node = child
    return root
