"""Bookmarks: where a poll of one stream stopped, stored as one JSON format for every stream."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Bookmark:
    """Everything of a stream before ``position`` has been read.

    ``position`` is the stream's own time: aware for a CRM's modification times, the
    source's naive wall time where that is what it filters by. ``complete`` is False for a
    checkpoint saved in the middle of a run, True once a run read to its end.
    """

    position: datetime
    complete: bool = True

    def to_json(self) -> str:
        return json.dumps({"position": self.position.isoformat(), "complete": self.complete})

    @classmethod
    def from_json(cls, text: str) -> Bookmark:
        data = json.loads(text)
        return cls(datetime.fromisoformat(data["position"]), bool(data.get("complete", True)))
