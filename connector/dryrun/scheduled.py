"""Recurring work in a dry-run: every occurrence from the replay's start, in time order, with
the tasks it would give (or why it gives none), so that it is shown and not silently skipped."""

from __future__ import annotations

import heapq
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
    """The occurrences of every piece of recurring work after ``start``, handed out one at a time."""

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

    def next_at(self) -> datetime | None:
        """The moment of the next occurrence, if any."""
        return self._heap[0][0] if self._heap else None

    def fire_next(self) -> list[RecurringOutcome]:
        """What the next occurrence would do (the caller checked ``next_at``)."""
        at, _, item, trigger = heapq.heappop(self._heap)
        tasks, notes = plan_occurrence(item, at, self.calendars.get(item.calendar), self.org)
        rule = recurring_rule(item.name)
        done = [RecurringOutcome(at, item.crm, rule, p.task.kind, p.task.describe()) for p in tasks]
        done.extend(RecurringOutcome(at, item.crm, rule, "note", note) for note in notes)
        self._push(item, trigger, trigger.get_next_fire_time(at, at))
        return done

    def _push(self, item: RecurringDef, trigger: CronTrigger, at: datetime | None) -> None:
        if at is not None:
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, item, trigger))
