"""The toy CRM's server side: deals, users and tasks kept in memory, one board per name."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Board:
    """One board: what the toy CRM holds."""

    deals: dict[str, dict[str, str]] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    tasks: list[dict[str, str]] = field(default_factory=list)
    modified: dict[str, datetime] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_task(self, deal_id: str, title: str, responsible: str, text: str) -> str:
        with self.lock:
            self.tasks.append({"deal": deal_id, "title": title, "responsible": responsible, "text": text})
            return str(len(self.tasks))


BOARDS: dict[str, Board] = {}
