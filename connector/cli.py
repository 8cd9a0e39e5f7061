"""The ``connector`` command."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from connector.config import ConfigError, load_config


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def _load(path: str):  # type: ignore[no-untyped-def]
    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(f"config refused ({len(exc.problems)} problem(s)):", err=True)
        for problem in exc.problems:
            click.echo("  " + problem.render(exc.source), err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"cannot read config {path}: {exc.strerror}", err=True)
        sys.exit(2)


@click.group()
def main() -> None:
    """crm-connector: CRM regulations, applied by themselves."""


@main.command()
@click.argument("config", type=click.Path())
def check(config: str) -> None:
    """Validate CONFIG; print every problem with its key path and line."""
    cfg = _load(config)
    click.echo(f"{config}: OK ({len(cfg.crms)} CRM(s), {len(cfg.rules)} rule(s), "
               f"{len(cfg.territories)} territories)")


@main.command("init-db")
@click.option("--config", "config_path", required=True, type=click.Path())
def init_db(config_path: str) -> None:
    """Create or upgrade the database schema."""
    from connector.storage.engine import make_engine, migrate

    cfg = _load(config_path)
    migrate(make_engine(cfg.storage["url"]))
    click.echo("database schema is up to date")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path())
def run(config_path: str) -> None:
    """Run intake, scheduler, worker and dispatcher in one process."""
    from connector.runtime import Runtime

    cfg = _load(config_path)
    _setup_logging(cfg.logging["level"])
    runtime = Runtime(cfg)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runtime.start()
    click.echo(f"listening on {runtime.intake_url}")
    stop.wait()
    runtime.stop()


@main.command()
@click.option("--timeout", default=60.0, help="seconds to wait for the work to finish")
def demo(timeout: float) -> None:
    """Run the captain-by-location regulation against a local Bitrix24 simulator."""
    from connector.demo.run import run_demo

    _setup_logging("WARNING")
    sys.exit(run_demo(timeout))


if __name__ == "__main__":
    main()
