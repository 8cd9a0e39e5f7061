"""Recurring work in a dry-run: every occurrence from the replay's start, in time order, with
the tasks it would give (or why it gives none), so that it is shown and not silently skipped."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from apscheduler.triggers.cron import CronTrigger

from connector.config import Config
from rules.calendar import WorkCalendar
from rules.calendars import CalendarSet
from rules.recurring import RecurringDef, plan_occurrence, recurring_rule


@dataclass(frozen=True)
class RecurringOutcome:
    """One thing an occurrence would do: a task (``kind`` create_task) or a note."""

    at: datetime
    crm: str
    rule: str
    kind: str
    detail: str


class RecurringReplay:
    """The occurrences of every piece of recurring work after ``start``, handed out up to a moment."""

    def __init__(self, config: Config, calendar: WorkCalendar) -> None:
        self.calendars = config.calendars or CalendarSet(calendar)
        self.org = config.org
        self.items = [r for r in config.recurring if r.enabled]
        self._heap: list[tuple[datetime, int, RecurringDef, CronTrigger]] = []
        self._seq = 0
        self.started = False

    def start(self, moment: datetime) -> None:
        """Begin after ``moment``; later calls do nothing."""
        if self.started:
            return
        self.started = True
        for item in self.items:
            trigger = CronTrigger.from_crontab(item.schedule, timezone=self.calendars.get(item.calendar).tz)
            self._push(item, trigger, trigger.get_next_fire_time(None, moment))

    def until(self, now: datetime) -> Iterator[RecurringOutcome]:
        """What the occurrences up to ``now`` would do, earliest first."""
        while self._heap and self._heap[0][0] <= now:
            at, _, item, trigger = heapq.heappop(self._heap)
            tasks, notes = plan_occurrence(item, at, self.calendars.get(item.calendar), self.org)
            rule = recurring_rule(item.name)
            for planned in tasks:
                yield RecurringOutcome(at, item.crm, rule, planned.task.kind, planned.task.describe())
            for note in notes:
                yield RecurringOutcome(at, item.crm, rule, "note", note)
            self._push(item, trigger, trigger.get_next_fire_time(at, at))

    def _push(self, item: RecurringDef, trigger: CronTrigger, at: datetime | None) -> None:
        if at is not None:
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, item, trigger))
