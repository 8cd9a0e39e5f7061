"""One connector process: the intake (Granian or waitress), worker and dispatcher ticks, and (while this
process leads) the scheduled jobs: polls, deadline scans, schedules, reports (APScheduler)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.exc import SQLAlchemyError

from adapters.contracts import CrmAdapter, DealSource, DocumentSource, FactSource
from adapters.registry import build_adapter, build_channel
from connector.alerts import Alerter, ChannelSender, EmailSender
from connector.config import Config, ConfigError, load_config
from connector.dispatcher import Dispatcher
from connector.failures import CannotListen, explain, listen_problem
from connector.http_server import IntakeServer, make_server
from connector.intake import create_app
from connector.leader import Leadership
from connector.redaction import configure_for
from connector.reloading import RELOAD_CHECK, latest_request, refusal, waiting_for_restart
from connector.storage.audit import record_poll_failure
from connector.storage.store import Store
from connector.ticker import Ticker
from connector.web.status_page import status_blueprint
from connector.worker import Worker
from domain.clock import utcnow
from jobs.plan_report import run_plan_report
from jobs.poll import poll_deals
from jobs.poll_documents import poll_documents
from jobs.recurring import run_recurring
from jobs.report import run_report
from jobs.retention import purge_expired, retention_of
from jobs.schedule import run_scheduled_rule
from jobs.timers import fire_due_timers
from rules.calendar import WorkCalendar
from rules.reports import ReportDef

log = logging.getLogger(__name__)

ROLES = ("intake", "worker", "dispatcher", "scheduler")
LEADER_CHECK = 15.0  # seconds between leadership checks (and heartbeats)
FIRST_POLL_AFTER = timedelta(seconds=1)  # after start: the leadership check goes first
# A tick that outlasts its interval is normal here; APScheduler would warn on every skip.
logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)  # a line per tick is noise


def build_calendar(config: Config) -> WorkCalendar:
    if config.calendars is not None:
        return config.calendars.default
    cal = config.calendar
    return WorkCalendar(
        timezone=cal["timezone"],
        work_hours=cal["work_hours"],
        country=cal["country"],
        extra_days_off=cal["extra_days_off"],
        extra_working_days=cal["extra_working_days"],
    )


class Runtime:
    """Everything ``connector run`` starts, in one process."""

    def __init__(self, config: Config, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config
        self.clock = clock
        configure_for(config)  # every log record of the process is masked of its secrets
        self.store = Store.for_config(config.storage)
        self.adapters: dict[str, CrmAdapter] = {n: build_adapter(n, s) for n, s in config.crms.items()}
        # Channels take outbox rows like a CRM: the dispatcher carries out their messages.
        self.adapters.update({n: build_channel(n, s) for n, s in config.channels.items()})
        self.calendar = build_calendar(config)
        self.worker = Worker(config, self.store, self.adapters, clock=clock, calendar=self.calendar)
        self.dispatcher = Dispatcher(config, self.store, self.adapters, clock=clock)
        srv = config.server
        self.app = create_app(
            self.store,
            self.adapters,
            max_body_bytes=srv["max_body_bytes"],
            clock=clock,
            allow_from=srv["allow_from"],
            behind_proxy=srv["behind_proxy"],
            replay_window=srv["replay_window"],
            on_stored=self._deliveries_stored,
        )
        if config.server["status_token"]:
            self.app.register_blueprint(status_blueprint(self.store, config, clock))
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.leadership = Leadership(self.store, f"{socket.gethostname()}:{os.getpid()}", check_every=LEADER_CHECK)
        self._server: IntakeServer | None = None
        # Woken when work arrives: a delivery committed wakes the worker, rows the worker
        # finished wake the dispatcher (their ``every`` is the poll for the rest).
        # Looked up at each tick, so a tick replaced after construction (tests do) is the one run.
        self.dispatcher_loop = Ticker("dispatcher", lambda: self.dispatcher.tick(), config.dispatcher["every"])
        self.worker_loop = Ticker(
            "worker", lambda: self.worker.tick(), config.worker["every"], on_work=self.dispatcher_loop.wake
        )
        self._loops: list[Ticker] = []
        self._roles: set[str] = set()
        self.alerter = self._alerter_for(config)
        self._reload_lock = threading.Lock()
        self._reload_seen: str | None = None  # the last reload request in the database acted on
        self._reload_wanted = threading.Event()  # SIGHUP
        self.reload_check = RELOAD_CHECK

    @property
    def intake_url(self) -> str:
        assert self._server is not None
        return f"http://{self.config.server['host']}:{self._server.port}"

    def fire_timers(self) -> int:
        """Turn due deadline reminders and breaches into events for the worker."""
        return fire_due_timers(self.store, self.clock(), limit=self.config.timers["batch"])

    def run_schedule(self, rule_name: str) -> int:
        """One run of a scheduled rule: an event per candidate deal."""
        rule = next(r for r in self.config.rules if r.name == rule_name)
        return run_scheduled_rule(
            self.store, rule, self.clock(), self.calendar, calendars=self.config.calendars, org=self.config.org
        )

    def run_report(self, name: str) -> int:
        """One run of a configured report: its tasks go to the outbox."""
        report = next(r for r in self.config.reports if r.name == name)
        calendar = self._report_calendar(report)
        if report.indicators:
            source = self.adapters[report.crm]
            assert isinstance(source, FactSource)  # checked with the config
            cfg = self.config
            return run_plan_report(
                self.store, report, self.clock(), calendar, source, cfg.indicators, cfg.teams_for(report.crm)
            )
        return run_report(self.store, report, self.clock(), calendar)

    def _report_calendar(self, report: ReportDef) -> WorkCalendar:
        if report.calendar is None or not self.config.calendars:
            return self.calendar
        return self.config.calendars.get(report.calendar)

    def run_recurring(self, name: str) -> int:
        """One run of recurring work: the tasks of its latest occurrence, once."""
        item = next(r for r in self.config.recurring if r.name == name)
        assert self.config.calendars is not None  # built with every loaded config
        return run_recurring(self.store, item, self.clock(), self.config.calendars, self.config.org)

    def purge(self) -> int:
        """One retention run: what expired is deleted; returns how many rows went."""
        keep = retention_of(self.config.storage["retention"], self.config.server["replay_window"])
        return sum(purge_expired(self.store, self.clock(), keep).values())

    def poll(self, crm: str) -> int:
        """One poll of a CRM: the documents it keeps for another CRM's deals, or its changed deals.

        A failure is recorded in the audit before it is raised: ``status`` shows the last one.
        """
        try:
            return self._poll(crm)
        except Exception as exc:
            record_poll_failure(self.store, crm, exc, self.clock())
            raise

    def _poll(self, crm: str) -> int:
        adapter = self.adapters[crm]
        if isinstance(adapter, DocumentSource):
            deals = self.adapters[adapter.deal_crm]
            assert isinstance(deals, DealSource)  # checked with the config
            return poll_documents(self.store, adapter, deals, now=self.clock())
        if isinstance(adapter, DealSource):
            settings = self.config.crms[crm]
            return poll_deals(
                self.store,
                adapter,
                now=self.clock(),
                overlap=timedelta(seconds=settings.poll_overlap),
                initial_lookback=timedelta(seconds=settings.initial_lookback),
            )
        return 0

    def start(self, *, serve: bool = True, roles: Iterable[str] = ROLES) -> None:
        """Start the given roles in this process (all by default: the embedded shape).

        ``intake`` serves webhooks (``server.engine``); ``worker`` and ``dispatcher`` process rows and
        may run in many processes at once; ``scheduler`` runs polls, deadline scans,
        schedules and reports, but only while this process is the leader.
        """
        wanted = set(roles)
        if unknown := wanted - set(ROLES):
            raise ValueError(f"unknown role(s) {', '.join(sorted(unknown))}; known: {', '.join(ROLES)}")
        if serve and "intake" in wanted:
            srv = self.config.server
            try:
                self._server = make_server(
                    srv["engine"],
                    self.app,
                    srv["host"],
                    srv["port"],
                    threads=srv["threads"],
                    max_body=srv["max_body_bytes"],
                    answer_soon=self.app.extensions["intake_handle_soon"],
                )
            except (OSError, RuntimeError) as exc:  # Granian reports a taken port as a RuntimeError
                raise CannotListen(srv["host"], srv["port"], listen_problem(exc)) from exc
            self._server.start()
        opts = {"max_instances": 1, "coalesce": True}
        if "worker" in wanted:
            self._loops.append(self.worker_loop)
        if "dispatcher" in wanted:
            self._loops.append(self.dispatcher_loop)
        for loop in self._loops:
            loop.start()
        self._roles = wanted
        if "scheduler" in wanted:
            try:
                self.store.cursors.started(self.leadership.owner, self.clock())
            except SQLAlchemyError:
                log.warning("start time not recorded: status may call the first poll late")
            self._add_leader_jobs(opts)
        self._reload_seen = self._quietly("reload request check", latest_request, self.store)
        self.scheduler.add_job(self._reload_if_requested, "interval", seconds=self.reload_check, id="reload", **opts)
        if self.scheduler.get_jobs():
            self.scheduler.start()
        log.info("connector running crms=%s roles=%s", ",".join(self.config.crms), ",".join(sorted(wanted)))

    def _add_leader_jobs(self, opts: dict[str, Any]) -> None:
        lead = self._as_leader
        # Checked at once and then regularly: the heartbeat tells other processes a leader lives.
        self.scheduler.add_job(
            lambda: self._quietly("leadership check", self.leadership.held, self.clock()),
            "interval",
            seconds=LEADER_CHECK,
            id="leader",
            next_run_time=datetime.now(UTC),
            **opts,
        )
        for rule in self.config.rules:
            if rule.schedule and rule.enabled:
                zone = self.config.calendars.get(rule.calendar).tz if self.config.calendars else self.calendar.tz
                trigger = CronTrigger.from_crontab(rule.schedule, timezone=zone)
                self.scheduler.add_job(
                    lead,
                    trigger,
                    args=[self.run_schedule, rule.name],
                    id=f"schedule-{rule.name}",
                    misfire_grace_time=3600,
                    **opts,
                )
        for report in self.config.reports:
            trigger = CronTrigger.from_crontab(report.schedule, timezone=self._report_calendar(report).tz)
            self.scheduler.add_job(
                lead,
                trigger,
                args=[self.run_report, report.name],
                id=f"report-{report.name}",
                misfire_grace_time=3600,
                **opts,
            )
        for item in self.config.recurring:
            if not item.enabled:
                continue
            calendar = self.config.calendars.get(item.calendar) if self.config.calendars else self.calendar
            trigger = CronTrigger.from_crontab(item.schedule, timezone=calendar.tz)
            args = [self.run_recurring, item.name]
            self.scheduler.add_job(
                lead, trigger, args=args, id=f"recurring-{item.name}", misfire_grace_time=3600, **opts
            )
            # At start: an occurrence missed while stopped is made up (its key makes it once).
            self.scheduler.add_job(
                lead, args=args, id=f"recurring-{item.name}-catch-up", next_run_time=datetime.now(UTC)
            )
        self.scheduler.add_job(
            lead, "interval", args=[self.purge], seconds=self.config.storage["purge_every"], id="retention", **opts
        )
        if self.config.deadlines:
            self.scheduler.add_job(
                lead, "interval", args=[self.fire_timers], seconds=self.config.timers["every"], id="deadlines", **opts
            )
        for name, settings in self.config.crms.items():
            if settings.poll_every:
                # The first poll runs at start: it tests the connection and catches up at once.
                self.scheduler.add_job(
                    lead,
                    "interval",
                    args=[self.poll, name],
                    seconds=settings.poll_every,
                    id=f"poll-{name}",
                    next_run_time=datetime.now(UTC) + FIRST_POLL_AFTER,
                    **opts,
                )
        self._add_alert_job(opts)

    def request_reload(self) -> None:
        """Reload soon, on the scheduler's thread (safe to call from a signal handler)."""
        self._reload_wanted.set()
        if self.scheduler.running:
            self.scheduler.modify_job("reload", next_run_time=datetime.now(UTC))

    def _reload_if_requested(self) -> None:
        """Reload when asked by SIGHUP or by a new request in the database (``connector reload``)."""
        latest = self._quietly("reload request check", latest_request, self.store)
        asked = latest is not None and latest != self._reload_seen
        if asked:
            self._reload_seen = latest
        if self._reload_wanted.is_set() or asked:
            self._reload_wanted.clear()
            self.reload()

    def reload(self, path: str | None = None) -> bool:
        """Re-read the config file (``path``, else the one running), validate it as ``check``
        does, and swap it in; work under way finishes on the old one, the next tick and
        scheduled run use the new one. A config that is refused leaves the old one running.
        """
        source = path or self.config.source
        with self._reload_lock:
            try:
                new = load_config(source)
            except ConfigError as exc:
                log.error("config reload refused: %d problem(s); the running config stays", len(exc.problems))
                for problem in exc.problems:
                    log.error("config reload refused: %s", problem.render(exc.source))
                return False
            except OSError as exc:
                log.error("config reload refused: cannot read %s: %s; the running config stays", source, exc.strerror)
                return False
            if reason := refusal(self.config, new):
                log.error("config reload refused: %s; the running config stays", reason)
                return False
            self._swap(new)
        if waiting := waiting_for_restart(self.config, new):
            log.warning("config reloaded; changes to %s apply at the next restart", ", ".join(waiting))
        log.info(
            "config reloaded from %s: %d rule(s) (%d enabled), %d territories",
            source,
            len(new.rules),
            sum(1 for r in new.rules if r.enabled),
            len(new.territories),
        )
        return True

    def _swap(self, new: Config) -> None:
        # Connections (adapters, the store, the intake) stay as they are: see connector.reloading.
        configure_for(new)
        calendar = build_calendar(new)
        worker = Worker(new, self.store, self.adapters, clock=self.clock, calendar=calendar, owner=self.worker.owner)
        # What the worker learned of the CRMs (which are paused) is still true; its user cache
        # is not carried over, as new territories may name other people.
        worker._pauses, worker._resumed = self.worker._pauses, self.worker._resumed
        worker.probe_every = self.worker.probe_every
        self.config, self.calendar, self.worker = new, calendar, worker
        self.alerter = self._alerter_for(new)
        self.dispatcher.config = new
        self.worker_loop.every_seconds(new.worker["every"])
        self.dispatcher_loop.every_seconds(new.dispatcher["every"])
        if "scheduler" in self._roles:
            # The jobs of the old config go; a run under way finishes (same id: never twice at once).
            for job in self.scheduler.get_jobs():
                if job.id != "reload":
                    job.remove()
            self._add_leader_jobs({"max_instances": 1, "coalesce": True})

    def _alerter_for(self, config: Config) -> Alerter | None:
        if not config.alerts:
            return None
        channel = config.alerts["channel"]
        sender = ChannelSender(channel, self.adapters[channel]) if channel else EmailSender(config.alerts["email"])
        alerter = Alerter(self.store, config.alerts, sender, self.clock, config.calendar["timezone"])
        old = getattr(self, "alerter", None)
        if old is not None:  # a reload: what the admins were told still holds
            alerter.seen, alerter.pending, alerter.last_sent = old.seen, old.pending, old.last_sent
        return alerter

    def _add_alert_job(self, opts: dict[str, Any]) -> None:
        if self.alerter is not None:
            alerter = self.alerter
            self.scheduler.add_job(
                self._as_leader,
                "interval",
                args=[alerter.check],
                seconds=alerter.settings["every"],
                id="alerts",
                **opts,
            )

    def pause(self) -> None:
        """No tick or scheduled job starts until ``resume`` (running ones finish)."""
        for loop in self._loops:
            loop.pause()
        self.scheduler.pause()

    def resume(self) -> None:
        self.scheduler.resume()
        for loop in self._loops:
            loop.resume()

    def _deliveries_stored(self) -> None:
        """The intake committed new deliveries: the worker of this process looks at once."""
        self.worker_loop.wake()

    def _stop_intake(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _as_leader(self, job: Callable[..., int], *args: Any) -> int:
        """Run a scheduled job only while this process leads (the others skip it)."""
        if not self._quietly("leadership check", self.leadership.held, self.clock()):
            return 0
        what = " ".join([job.__name__.strip("_").replace("_", " "), *map(str, args)])
        return self._quietly(what, job, *args) or 0

    @staticmethod
    def _quietly(what: str, job: Callable[..., Any], *args: Any) -> Any:
        """Run a scheduled job; an expected failure is one log line (the traceback at DEBUG),
        and the next run tries again."""
        try:
            return job(*args)
        except Exception as exc:
            failure = explain(exc)
            if failure is None:
                log.exception("%s failed", what)
            else:
                log.error("%s failed: %s", what, failure.line)
                log.debug("%s failed", what, exc_info=True)
            return None

    def stop(self) -> None:
        """Stop taking webhooks, cut CRM waits short, let running ticks finish, close: every
        thread this runtime started is joined before it returns.

        A tick cut short leaves its rows claimable (inbox/outbox leases), so nothing is lost.
        """
        self._stop_intake()
        self.app.extensions["inbox_writer"].close()
        for adapter in self.adapters.values():
            adapter.interrupt()
        for loop in self._loops:
            loop.stop()
        self._loops = []
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.dispatcher.close()
        self.leadership.release()
        for adapter in self.adapters.values():
            adapter.close()
        self.store.close()
        log.info("connector stopped")
