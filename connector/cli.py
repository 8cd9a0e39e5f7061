"""The ``connector`` command."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import click

from connector.config import ConfigError, load_config
from connector.failures import EXIT_ANOTHER_INSTANCE, EXIT_CRM, EXIT_DATABASE, EXIT_PORT


def _setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    from connector.observability import setup_logging

    setup_logging(level, fmt)


def _load(path: str):  # type: ignore[no-untyped-def]
    try:
        config = load_config(path)
    except ConfigError as exc:
        click.echo(f"config refused ({len(exc.problems)} problem(s)):", err=True)
        for problem in exc.problems:
            click.echo("  " + problem.render(exc.source), err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"cannot read config {path}: {exc.strerror}", err=True)
        sys.exit(2)
    from connector.redaction import configure_for, mask_standard_streams

    configure_for(config)  # no secret of it in a log line or in what a command prints
    mask_standard_streams()
    return config


def _console():  # type: ignore[no-untyped-def]
    """A rich console; off a terminal (a pipe, a file, cron) tables get room instead of wrapping."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


__all__ = ["EXIT_ANOTHER_INSTANCE", "EXIT_CRM", "EXIT_DATABASE", "EXIT_PORT", "main"]


class _Commands(click.Group):
    """Expected failures end a command with one line and an exit code; the traceback only with
    ``--traceback`` or at DEBUG."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        import logging

        from connector.failures import explain

        try:
            return super().invoke(ctx)
        except Exception as exc:
            failure = explain(exc)
            if failure is None or ctx.params.get("traceback") or logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            click.echo(failure.line, err=True)
            sys.exit(failure.exit_code)


@click.group(cls=_Commands)
@click.version_option(package_name="crm-connector", message="connector %(version)s")
@click.option("--traceback", is_flag=True, help="show the traceback of an expected failure, not only its one line")
def main(traceback: bool) -> None:
    """crm-connector: CRM regulations, applied by themselves."""


@main.command()
@click.argument("config", required=False, type=click.Path())
@click.option("--config", "config_path", default=None, type=click.Path(), help="the config file (or give it as CONFIG)")
@click.option(
    "--online",
    is_flag=True,
    help="also connect to every CRM: credentials, permissions, and each stage, user and field the config names",
)
def check(config: str | None, config_path: str | None, online: bool) -> None:
    """Validate the config; print every problem with its key path, line and a hint.

    Exits 2 when the config is refused (or, with --online, when a CRM disagrees with it).
    """
    path = config_path or config
    if not path:
        raise click.UsageError("give the config: connector check --config FILE")
    cfg = _load(path)
    if online:
        from connector.config.loader import load_file
        from connector.config.online import check_online

        report = check_online(load_file(path), cfg)
        for note in report.notes:
            click.echo(note)
        if report.problems:
            click.echo(f"{path}: {len(report.problems)} problem(s) found in the CRMs:", err=True)
            for problem in report.problems:
                click.echo("  " + problem.render(path), err=True)
            sys.exit(2)
    click.echo(f"{path}: OK ({len(cfg.crms)} CRM(s), {len(cfg.rules)} rule(s), {len(cfg.territories)} territories)")


@main.command("init-db")
@click.option("--config", "config_path", required=True, type=click.Path())
def init_db(config_path: str) -> None:
    """Create or upgrade the database schema."""
    from connector.storage.store import Store

    cfg = _load(config_path)
    Store.for_config(cfg.storage, apply_migrations=True).close()
    click.echo("database schema is up to date")


@main.command("copy-storage")
@click.option("--config", "config_path", required=True, type=click.Path(), help="the config with the current storage")
@click.option("--to", "target_url", required=True, help="the new database's URL (migrated here; must be empty)")
def copy_storage(config_path: str, target_url: str) -> None:
    """Copy the connector's whole state (cursors, idempotency keys, deadlines, snapshots) to
    another database, so that switching to it does not redo work. Stop the connector first."""
    from connector.storage.copy import StorageNotEmpty, copy_state
    from connector.storage.store import Store

    cfg = _load(config_path)
    source = Store.for_config(cfg.storage, apply_migrations=False)
    try:
        target = Store(target_url, apply_migrations=True)
        try:
            result = copy_state(source, target)
        except StorageNotEmpty as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        finally:
            target.close()
    finally:
        source.close()
    click.echo(
        f"copied {result.total} rows: "
        + ", ".join(f"{name} {count}" for name, count in result.rows.items() if count)
        + "; point storage.url at the new database, then start the connector"
    )


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path())
@click.option(
    "--roles",
    default="intake,worker,dispatcher,scheduler",
    show_default=True,
    help="what this process does; split them over processes to scale out on PostgreSQL",
)
def run(config_path: str, roles: str) -> None:
    """Run intake, scheduler, worker and dispatcher (all in one process by default)."""
    from connector.runtime import ROLES, Runtime

    chosen = [r.strip() for r in roles.split(",") if r.strip()]
    if unknown := set(chosen) - set(ROLES):
        raise click.UsageError(f"unknown role(s) {', '.join(sorted(unknown))}; known: {', '.join(ROLES)}")
    cfg = _load(config_path)
    _setup_logging(cfg.logging["level"], cfg.logging["format"])
    from connector.storage.instance import hold_single_instance

    instance = hold_single_instance(cfg.storage["url"])  # SQLite: one process per file
    runtime = Runtime(cfg)
    try:
        runtime.start(roles=chosen)
    except BaseException:
        runtime.stop()
        if instance is not None:
            instance.release()
        raise
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if hasattr(signal, "SIGHUP"):  # POSIX; elsewhere `connector reload`
        signal.signal(signal.SIGHUP, lambda *_: runtime.request_reload())
    if "intake" in chosen:
        click.echo(f"listening on {runtime.intake_url}")
    stop.wait()
    runtime.stop()
    if instance is not None:
        instance.release()


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path())
def reload(config_path: str) -> None:
    """Validate the config as `check` does, then ask every running connector on its database
    to reload it (rules, territories, calendars, org, schedules) without a restart.

    Exits 2 when the config is refused (the running ones keep theirs). On POSIX, SIGHUP to
    the process does the same for that process.
    """
    import getpass

    from connector.reloading import RELOAD_CHECK, request_reload
    from connector.storage.store import Store
    from domain.clock import utcnow

    cfg = _load(config_path)
    store = Store.for_config(cfg.storage, apply_migrations=False)
    try:
        request_reload(store, f"{getpass.getuser()} (cli)", utcnow())
    finally:
        store.close()
    click.echo(
        f"{config_path}: OK; reload requested: running connectors reload within {RELOAD_CHECK:.0f} s "
        "(their log says 'config reloaded' or why it was refused)"
    )


def _moment(text: str | None, tz: str) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(tz))


@main.command("dry-run")
@click.option("--config", "config_path", required=True, type=click.Path())
@click.option("--since", required=True, help="replay from this date or moment (ISO; the calendar's zone if none)")
@click.option("--until", default=None, help="and up to this one (default: the last event)")
@click.option(
    "--source",
    default="crm",
    show_default=True,
    help="'crm' (deals changed since, read through the adapter), 'inbox', or a JSON-lines history file",
)
@click.option("--csv", "csv_path", default=None, type=click.Path(), help="write every would-be action here")
@click.option(
    "--penalties-csv", "penalties_path", default=None, type=click.Path(), help="write the penalty breaches here"
)
def dry_run(
    config_path: str, since: str, until: str | None, source: str, csv_path: str | None, penalties_path: str | None
) -> None:
    """Replay history through the rules at the moments it happened; write nothing."""
    import time
    from pathlib import Path

    from rich.progress import Progress

    from adapters.contracts import DealSource
    from adapters.registry import build_adapter
    from connector.dryrun.history import from_crm, from_inbox, read_jsonl
    from connector.dryrun.replay import HistoryItem, Replay
    from connector.dryrun.report import print_summary, write_csv
    from connector.dryrun.reports import print_reports, report_occurrences
    from connector.runtime import build_calendar

    cfg = _load(config_path)
    tz = cfg.calendar["timezone"]
    start, end = _moment(since, tz), _moment(until, tz)
    assert start is not None
    console = _console()
    items: list[HistoryItem]
    adapters = {n: build_adapter(n, s) for n, s in cfg.crms.items()}
    if source in ("crm", "inbox"):
        if source == "crm":
            items = [i for a in adapters.values() if isinstance(a, DealSource) for i in from_crm(a, start)]
        else:
            from connector.storage.store import Store

            items = from_inbox(Store.for_config(cfg.storage, apply_migrations=False), adapters, start)
        items = sorted((i for i in items if end is None or i.at <= end), key=lambda i: i.at)
    else:
        try:
            items = list(read_jsonl(Path(source), start, end))
        except (OSError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    began = time.perf_counter()
    # The bar shows only on a terminal: cron and CI logs stay clean.
    with Progress(console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task("replaying", total=len(items))
        replay = Replay(cfg, build_calendar(cfg), adapters=adapters)
        result = replay.run(items, until=end, since=start, progress=lambda n: progress.advance(task, n))
    print_summary(result, console, time.perf_counter() - began)
    last = end or (items[-1].at if items else start)
    print_reports(report_occurrences(cfg, build_calendar(cfg), start, last), console)
    if csv_path:
        write_csv(result, Path(csv_path))
        console.print(f"actions written to {csv_path}")
    _penalty_report(cfg, result.breach_records, console, penalties_path)


def _penalty_report(cfg, breaches, console, csv_path: str | None) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from connector.penalties import print_report, write_csv
    from rules.penalties import penalties, penalty_deadlines

    timezone = cfg.calendar["timezone"]
    counted = penalty_deadlines(cfg.deadlines)
    rows = penalties(breaches, counted)
    print_report(rows, counted, console, timezone)
    if csv_path:
        write_csv(rows, Path(csv_path), timezone)
        console.print(f"penalties written to {csv_path}")


@main.command("penalties")
@click.option("--config", "config_path", required=True, type=click.Path())
@click.option("--month", required=True, help="YYYY-MM, in the calendar's zone")
@click.option("--csv", "csv_path", default=None, type=click.Path(), help="write the month's penalty breaches here")
def penalties_report(config_path: str, month: str, csv_path: str | None) -> None:
    """The month's penalty report: breaches of the deadlines marked `penalty: true`, per
    employee responsible at the breach (CSV for accounting with --csv)."""
    from connector.storage.store import Store
    from rules.penalties import Breach, month_bounds

    cfg = _load(config_path)
    try:
        start, end = month_bounds(month, cfg.calendar["timezone"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    store = Store.for_config(cfg.storage, apply_migrations=False)
    try:
        with store.sessions() as session:
            rows = store.timers.breaches(session, start, end)
            breaches = [
                Breach(r.crm, r.deal_id, r.deadline, r.responsible_id, r.due_at or r.breached_at, r.rule or "")
                for r in rows
            ]
    finally:
        store.close()
    _penalty_report(cfg, breaches, _console(), csv_path)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path())
@click.option("--crm", required=True, help="the configured CRM to read")
@click.option("--since", required=True, help="read deals changed since this date or moment (ISO)")
@click.option("--force", is_flag=True, help="queue again changes stored before, even those already processed")
def backfill(config_path: str, crm: str, since: str, force: bool) -> None:
    """Queue every deal changed since a date, as the poller would (after an outage, or to
    apply new rules to recent deals); the running connector processes them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from adapters.contracts import DealSource
    from adapters.registry import build_adapter
    from connector.storage.store import Store
    from domain.clock import utcnow
    from jobs.poll import poll_deals

    cfg = _load(config_path)
    if crm not in cfg.crms:
        raise click.UsageError(f"no CRM named {crm!r} in {config_path}; configured: {', '.join(cfg.crms)}")
    start = _moment(since, cfg.calendar["timezone"])
    assert start is not None
    adapter = build_adapter(crm, cfg.crms[crm])
    if not isinstance(adapter, DealSource):
        adapter.close()
        raise click.UsageError(f"{crm!r} keeps no deals to backfill")
    store = Store.for_config(cfg.storage)
    console = _console()
    try:
        # No total is known in advance: the bar counts deals read (quiet off a terminal).
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
            transient=True,
        ) as progress:
            task = progress.add_task(f"reading {crm}", total=None)
            queued = poll_deals(
                store,
                adapter,
                now=utcnow(),
                overlap=timedelta(0),
                since=start,
                progress=lambda n: progress.advance(task, n),
                force=force,
            )
    finally:
        adapter.close()
        store.close()
    click.echo(f"{queued} change(s) queued from {crm} since {start.isoformat()}")


@main.group()
def plans() -> None:
    """Plans per person and team per period (docs/rules.md, "Plans and indicators")."""


@plans.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--config", "config_path", required=True, type=click.Path())
@click.option("--allow-lower", is_flag=True, help="accept plans lower than the ones in force (a typo's fix)")
def plans_load(file: str, config_path: str, allow_lower: bool) -> None:
    """Check a CSV/YAML plan file and store it; any problem refuses it whole (exit 2)."""
    from pathlib import Path

    from connector.storage.store import Store
    from domain.clock import utcnow
    from jobs.plans import load_plans

    cfg = _load(config_path)
    store = Store.for_config(cfg.storage)
    try:
        result = load_plans(store, Path(file), cfg, utcnow(), allow_lower=allow_lower)
    finally:
        store.close()
    if result.problems:
        click.echo(f"plans refused ({len(result.problems)} problem(s)):", err=True)
        for problem in result.problems:
            click.echo("  " + problem.render(file), err=True)
        sys.exit(2)
    click.echo(f"{result.read} plan(s) read: {result.added} added, {result.changed} changed")
    for warning in result.warnings:
        click.echo("  " + warning.render(file), err=True)


@plans.command("show")
@click.option("--config", "config_path", required=True, type=click.Path())
@click.option("--period", required=True, help="2026, 2026-Q1, 2026-03, 2026-W10 or 2026-03-02")
def plans_show(config_path: str, period: str) -> None:
    """Each person's and team's plan for a period, as the cascade splits the loaded plans."""
    from rich.table import Table

    from connector.runtime import build_calendar
    from connector.storage.store import Store
    from jobs.plans import plan_table
    from rules.periods import parse_period

    cfg = _load(config_path)
    try:
        wanted = parse_period(period)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    store = Store.for_config(cfg.storage)
    try:
        rows = plan_table(store, cfg, build_calendar(cfg), wanted)
    finally:
        store.close()
    table = Table(title=f"Plans for {wanted}")
    for column in ("who", "indicator", "plan"):
        table.add_column(column, justify="right" if column == "plan" else "left")
    for row in rows:
        table.add_row(*row)
    _console().print(table)


@main.command("generate-history")
@click.option("--out", required=True, type=click.Path(), help="JSON-lines file to write")
@click.option("--year", default=2026, show_default=True)
@click.option("--deals", default=5000, show_default=True)
@click.option("--seed", default=1, show_default=True)
def generate_history(out: str, year: int, deals: int, seed: int) -> None:
    """Write a generated year of ISP connection applications (seed 000's shape) for dry-runs."""
    from pathlib import Path

    from connector.demo.isp_history import isp_year
    from connector.dryrun.history import write_jsonl

    count = write_jsonl(isp_year(year, deals, seed), Path(out))
    click.echo(f"{count} history events for {deals} applications written to {out}")


@main.command()
@click.argument("deal")
@click.option("--config", "config_path", required=True, type=click.Path())
@click.option("--crm", default=None, help="the CRM's name, when several hold a deal with this id")
def why(deal: str, config_path: str, crm: str | None) -> None:
    """Print every action taken on DEAL, with the rule, the trigger and the time, and what is
    still open for it: inbox rows not processed and writes not carried out, with their errors.

    Exits 1 when nothing at all is recorded for the deal.
    """
    from connector.storage.store import Store
    from connector.storage.unfinished import open_for_deal

    cfg = _load(config_path)
    store = Store.for_config(cfg.storage, apply_migrations=False)
    try:
        rows = store.audit.for_deal(crm, deal)
        still_open = open_for_deal(store, crm, deal)
    finally:
        store.close()
    if not rows and not still_open:
        click.echo(f"nothing recorded for deal {deal}")
        sys.exit(1)
    _print_why(deal, rows, still_open, cfg.calendar["timezone"])


def _print_why(deal: str, rows, still_open, tz: str) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    zone = ZoneInfo(tz)
    console = _console()
    if rows:
        table = Table(title=f"Deal {deal}: what the connector did and why")
        for column in (f"time ({tz})", "crm", "rule", "trigger", "action", "what"):
            table.add_column(column)
        for r in rows:
            table.add_row(
                r.at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z"),
                r.crm,
                r.rule or "",
                r.trigger or "",
                r.action,
                r.message,
            )
        console.print(table)
    if still_open:
        table = Table(title=f"Deal {deal}: still open (connector replay --inbox --id N / replay --id N)")
        for column in ("row", f"since ({tz})", "crm", "status", "tries", "what", "error"):
            table.add_column(column)
        for item in still_open:
            table.add_row(
                f"{item.table} {item.id}",
                item.at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z"),
                item.crm,
                item.status,
                str(item.attempts),
                item.what,
                item.error,
            )
        console.print(table)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path())
def status(config_path: str) -> None:
    """Per CRM: last webhook and poll, backlog, outbox states, dead letters, deadlines.

    Exits 1 when something needs attention (for cron or monitoring), 0 when all is well.
    """
    from connector.status import gather, render
    from connector.storage.store import Store
    from domain.clock import utcnow

    cfg = _load(config_path)
    store = Store.for_config(cfg.storage, apply_migrations=False)
    try:
        state = gather(store, cfg, utcnow())
    finally:
        store.close()
    render(state, _console(), cfg.calendar["timezone"])
    sys.exit(0 if state.healthy else 1)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path())
@click.option("--id", "ids", multiple=True, type=int, help="a dead letter's (or inbox row's) id (repeatable)")
@click.option("--crm", default=None, help="only this CRM's rows")
@click.option("--rule", default=None, help="only this rule's dead letters")
@click.option("--deal", default=None, help="only this deal's inbox rows (with --inbox)")
@click.option("--all", "everything", is_flag=True, help="every dead letter (or failed and parked inbox row)")
@click.option("--inbox", is_flag=True, help="failed and parked inbox rows instead of dead letters")
@click.option("--wait", type=float, default=0.0, help="seconds to follow them until the running connector is done")
def replay(
    config_path: str,
    ids: tuple[int, ...],
    crm: str | None,
    rule: str | None,
    deal: str | None,
    everything: bool,
    inbox: bool,
    wait: float,
) -> None:
    """Queue chosen dead letters again; the running connector resends them (reconciling first).
    With --inbox, queue failed and parked inbox rows again; exits 1 when none matched."""
    from connector.storage.store import Store
    from domain.clock import utcnow

    if inbox:
        if rule or not (ids or crm or deal or everything):
            raise click.UsageError("choose inbox rows with --id, --crm, --deal or --all")
    elif deal or not (ids or crm or rule or everything):
        raise click.UsageError("choose dead letters with --id, --crm, --rule or --all (--deal goes with --inbox)")
    cfg = _load(config_path)
    store = Store.for_config(cfg.storage, apply_migrations=False)
    try:
        if inbox:
            queued = store.inbox.requeue(utcnow(), ids=list(ids) or None, crm=crm, deal_id=deal)
            click.echo(
                f"{len(queued)} inbox row(s) queued again" + (f": {', '.join(map(str, queued))}" if queued else "")
            )
            if not queued:
                sys.exit(1)
            return
        chosen = store.outbox.replay_dead(utcnow(), ids=list(ids) or None, crm=crm, rule=rule)
        click.echo(
            f"{len(chosen)} dead letter(s) queued again" + (f": {', '.join(map(str, chosen))}" if chosen else "")
        )
        if not chosen:
            sys.exit(1)
        if wait:
            outcome = _follow(store, chosen, wait)
            pending = len(chosen) - outcome.get("done", 0) - outcome.get("dead", 0)
            click.echo(f"done {outcome.get('done', 0)}, dead again {outcome.get('dead', 0)}, still pending {pending}")
            if outcome.get("dead", 0) or pending:
                sys.exit(1)
    finally:
        store.close()


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path())
@click.option("--id", "ids", multiple=True, type=int, help="a dead letter's id (repeatable)")
@click.option("--crm", default=None, help="only this CRM's dead letters")
@click.option("--rule", default=None, help="only this rule's dead letters")
@click.option("--all", "everything", is_flag=True, help="every dead letter")
@click.option("--reason", required=True, help="why it is given up on (kept in the audit trail)")
def discard(
    config_path: str, ids: tuple[int, ...], crm: str | None, rule: str | None, everything: bool, reason: str
) -> None:
    """Give up on chosen dead letters whose cause cannot be fixed; kept in the audit with who and why.

    Exits 1 when nothing matched.
    """
    import getpass

    from connector.storage.store import Store
    from domain.clock import utcnow

    if not (ids or crm or rule or everything):
        raise click.UsageError("choose dead letters with --id, --crm, --rule or --all")
    if not reason.strip():
        raise click.UsageError("--reason must say why")
    cfg = _load(config_path)
    store = Store.for_config(cfg.storage, apply_migrations=False)
    try:
        chosen = store.outbox.discard_dead(
            utcnow(), reason=reason.strip(), by=f"{getpass.getuser()} (cli)", ids=list(ids) or None, crm=crm, rule=rule
        )
    finally:
        store.close()
    click.echo(f"{len(chosen)} dead letter(s) discarded" + (f": {', '.join(map(str, chosen))}" if chosen else ""))
    sys.exit(0 if chosen else 1)


def _follow(store, ids: list[int], seconds: float) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Watch outbox rows until each is done or dead again, with a progress bar on a terminal."""
    import time

    from rich.progress import Progress
    from sqlalchemy import func, select

    from connector.storage.models import OutboxRow
    from domain.statuses import OutboxStatus

    console = _console()
    counts: dict[str, int] = {}
    with Progress(console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task("resending", total=len(ids))
        deadline = time.monotonic() + seconds
        while True:
            with store.sessions() as s:
                counts = {
                    status: int(n)
                    for status, n in s.execute(
                        select(OutboxRow.status, func.count(OutboxRow.id))
                        .where(OutboxRow.id.in_(ids))
                        .group_by(OutboxRow.status)
                    )
                }
            finished = counts.get(OutboxStatus.DONE, 0) + counts.get(OutboxStatus.DEAD, 0)
            progress.update(task, completed=finished)
            if finished >= len(ids) or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)


@main.command()
@click.option("--timeout", default=60.0, help="seconds to wait for the work to finish")
@click.option(
    "--only",
    type=click.Choice(["bitrix24", "pipedrive", "onec"]),
    multiple=True,
    help="run only these scenarios (default: all three)",
)
def demo(timeout: float, only: tuple[str, ...]) -> None:
    """Run regulations end to end against local Bitrix24, Pipedrive and 1C simulators."""
    from connector.demo.run import run_demo

    _setup_logging("WARNING")
    sys.exit(run_demo(timeout, only or ("bitrix24", "pipedrive", "onec")))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="where the simulators listen")
@click.option("--bitrix24-port", default=8081, show_default=True)
@click.option("--pipedrive-port", default=8082, show_default=True)
@click.option("--onec-port", default=8083, show_default=True)
@click.option("--telegram-port", default=8084, show_default=True)
@click.option(
    "--connector-url", default="http://127.0.0.1:8080", show_default=True, help="where the CRMs send webhooks"
)
@click.option("--sample-deals", is_flag=True, help="create three Bitrix24 applications at start")
@click.option("--error-rate", default=0.0, help="share of calls answered 5xx without effect")
@click.option("--error-after-effect-rate", default=0.0, help="share of writes done, then answered 5xx")
@click.option("--limit-rate", default=0.0, help="share of calls refused as rate-limited")
@click.option("--latency", default=0.0, help="up to this many seconds added to each answer")
@click.option("--timeout-rate", default=0.0, help="share of calls that stall past a client's timeout")
@click.option("--drop-webhook-rate", default=0.0, help="share of webhooks never sent")
@click.option("--duplicate-webhooks", default=1, help="send every webhook this many times")
@click.option("--seed", type=int, default=None, help="make the faults repeatable")
def sandbox(**options: object) -> None:
    """Start local Bitrix24, Pipedrive, 1C and Telegram stand-ins for config.example.yaml and examples/."""
    from connector.demo.sandbox import SandboxError, SandboxOptions, run_sandbox

    _setup_logging("WARNING")
    try:
        sys.exit(run_sandbox(SandboxOptions(**options)))  # type: ignore[arg-type]
    except SandboxError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@main.command("org-import")
@click.option("--config", "config_path", required=True, type=click.Path())
@click.option("--crm", required=True, help="the configured CRM whose departments to read")
def org_import(config_path: str, crm: str) -> None:
    """Print an `org:` block from the CRM's departments (heads become team leads) to edit
    into the config; it changes nothing."""
    import yaml

    from adapters.contracts import DepartmentSource
    from adapters.registry import build_adapter
    from domain.errors import AdapterError
    from rules.org import org_block_from_departments

    cfg = _load(config_path)
    if crm not in cfg.crms:
        raise click.ClickException(f"no CRM named {crm!r} under crms; known: {', '.join(sorted(cfg.crms))}")
    adapter = build_adapter(crm, cfg.crms[crm])
    try:
        if not isinstance(adapter, DepartmentSource):
            raise click.ClickException(f"{crm!r} (type {cfg.crms[crm].type}) keeps no departments to read")
        try:
            departments, users = adapter.departments()
        except AdapterError as exc:
            raise click.ClickException(f"reading the departments of {crm!r} failed: {exc}") from exc
    finally:
        adapter.close()
    block = org_block_from_departments(crm, departments, users)
    click.echo(f"# from the departments of {crm!r}: {len(block['teams'])} teams, {len(block['people'])} people.")
    click.echo("# Each department's head is its team's lead; mark heads of department with head:, add roles:.")
    click.echo(yaml.safe_dump({"org": block}, allow_unicode=True, sort_keys=False), nl=False)


if __name__ == "__main__":
    main()
