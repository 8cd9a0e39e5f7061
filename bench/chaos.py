"""Chaos run: deal events through the real connector processes, killed with SIGKILL at
random moments and restarted, while the CRM simulator injects faults and drops webhooks.

When the events are in and the kills are done, every process runs again and the harness
waits (bounded by ``--settle``) until the queues drain: no inbox row waiting, no write
pending or under way, every deal with its task. Then the simulator's state is compared
with what the captain-by-location rule must have produced (one task per deal, for the
deal's captain) and the figures are printed: events, faults injected, kills, the drain
time and the load average, and

* lost: deals with a delivery the intake acknowledged (200) but nothing stored for them;
* unprocessed: deals stored (acknowledged or polled) but not processed when the wait ended,
  work still pending, not lost;
* missing, duplicated, wrong captain: tasks absent, written twice, or for the wrong person.

A clean run has all five at 0 (so it drained).

    python bench/chaos.py --events 10000                       # SQLite, one process
    python bench/chaos.py --events 10000 --shape multi \\
        --db postgresql+psycopg://postgres@127.0.0.1:5432/test   # Granian intake + workers + dispatchers

POSIX only (SIGKILL of process groups).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import Snapshot  # noqa: E402
from simulators.bitrix24 import Bitrix24Simulator  # noqa: E402

TOKEN = "chaos-app-token-123"
TERRITORIES = [("Советский", "2"), ("Вахитовский", "3"), ("Приволжский", "4")]
CONFIG = """
storage: {{url: "{db}"}}
server: {{host: 127.0.0.1, port: {port}, replay_window: 7d}}
calendar: {{country: RU, timezone: Europe/Moscow}}
worker: {{every: 0.2s, batch: 100, lease: 5s, max_attempts: 50}}
dispatcher: {{every: 0.2s, batch: 100, lease: 5s, max_attempts: 50, backoff: 0.3s, backoff_max: 3s,
             reconcile_after: 4s}}
logging: {{level: WARNING}}
crms:
  b24:
    type: bitrix24
    webhook_url: "{b24}"
    application_token: "{token}"
    poll_every: 2s
    poll_overlap: 30s
    initial_lookback: 1h  # the run's deals predate the first poll that survives the kills
    rate: 400
    burst: 200
    timeout: 1.5s
    max_attempts: 3
    backoff_initial: 0.1s
    location_fields: {{address: UF_CRM_ADDRESS}}
territories:
{territories}
rules:
  - name: captain-by-location
    crm: b24
    on: [deal.created, deal.updated]
    when: {{stage: ["C1:NEW"]}}
    do:
      - assign_captain: {{fallback: 1}}
      - create_task:
          title: "Проверить техническую возможность: {{{{ deal.title }}}}"
          responsible: captain
          due: 24h
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """One connector process the killer may SIGKILL and restart."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        out = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.starts += 1

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)  # Granian's workers go with their supervisor
            self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Figures:
    shape: str
    database: str
    events: int = 0
    deals: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    acknowledged: int = 0
    lost: int = 0
    unprocessed: int = 0
    missing: int = 0
    duplicated: int = 0
    wrong_captain: int = 0
    drained: bool = False
    feed_seconds: float = 0.0  # from the first event to the last one delivered
    drain_seconds: float | None = None  # from the last event to empty queues and every task (kills included)
    inbox_waiting: int = 0
    outbox_waiting: int = 0
    seconds: float = 0.0
    load_average: list[float] = field(default_factory=list)  # 1-minute load: at start, once the kills end, at end

    @property
    def clean(self) -> bool:
        return self.lost == self.unprocessed == self.missing == self.duplicated == self.wrong_captain == 0


def _processes(shape: str, config: Path, port: int, workdir: Path) -> list[Proc]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONNECTOR_CONFIG": str(config)}
    run = [sys.executable, "-m", "connector.cli", "run", "--config", str(config)]
    if shape == "single":
        return [Proc("connector", run, env, workdir / "connector.log")]
    # The production intake as docs/deployment.md runs it.
    granian = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--factory",
        "connector.wsgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
        "--blocking-threads",
        "8",
        "--backpressure",
        "64",
        "--http",
        "1",
        "--no-ws",
    ]
    return [
        Proc("intake", granian, env, workdir / "intake.log"),
        Proc("worker-1", [*run, "--roles", "worker"], env, workdir / "worker-1.log"),
        Proc("worker-2", [*run, "--roles", "worker"], env, workdir / "worker-2.log"),
        Proc("dispatcher-1", [*run, "--roles", "dispatcher"], env, workdir / "dispatcher-1.log"),
        Proc("dispatcher-2", [*run, "--roles", "dispatcher"], env, workdir / "dispatcher-2.log"),
        Proc("scheduler-1", [*run, "--roles", "scheduler"], env, workdir / "scheduler-1.log"),
        Proc("scheduler-2", [*run, "--roles", "scheduler"], env, workdir / "scheduler-2.log"),
    ]


def _wait_for_intake(port: int, limit: float = 60.0) -> None:
    """Until the intake answers ``/healthz`` (its server may take seconds to start its workers)."""
    import requests

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the intake did not answer on port {port} within {limit:.0f} s")


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0


# How long after a (re)start the drain is not judged: the first poll runs at start.
FIRST_POLL_SETTLE = 6.0


def _waiting(store: Any) -> tuple[int, int]:
    """Inbox rows waiting for the worker, and writes pending or under way."""
    from sqlalchemy import func, select

    from connector.storage.models import InboxRow, OutboxRow

    try:
        with store.reading() as s:
            inbox = s.scalar(select(func.count(InboxRow.id)).where(InboxRow.status == "new")) or 0
            outbox = s.scalar(select(func.count(OutboxRow.id)).where(OutboxRow.status.in_(("pending", "sending")))) or 0
    except Exception:  # noqa: BLE001 - the database restarting under us: ask again
        return -1, -1
    return int(inbox), int(outbox)


def _deals_stored_and_processed(store: Any) -> tuple[set[str], set[str]]:
    """Deals with anything in the inbox; deals processed (a snapshot, and no inbox row waiting)."""
    from sqlalchemy import select

    from connector.storage.models import DealSnapshotRow, InboxRow

    with store.reading() as s:
        stored = {d for d in s.scalars(select(InboxRow.deal_id).distinct()) if d}
        waiting = {d for d in s.scalars(select(InboxRow.deal_id).where(InboxRow.status != "done").distinct()) if d}
        seen = set(s.scalars(select(DealSnapshotRow.deal_id)))
    return stored, seen - waiting


def _acknowledged_deals(sim: Bitrix24Simulator) -> set[str]:
    """Deals with at least one webhook delivery the intake answered 200."""
    deals: set[str] = set()
    for delivery in sim.webhooks.log:
        if delivery.status == 200 and isinstance(delivery.body, list):
            deals.update(v for k, v in delivery.body if k == "data[FIELDS][ID]")
    return deals


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def run_chaos(
    events: int = 10_000,
    *,
    db: str | None = None,
    shape: str = "single",
    fault_rate: float = 0.2,
    kill_every: tuple[float, float] = (4.0, 12.0),
    min_kills: int = 5,
    seed: int = 7,
    settle: float = 180.0,
    verbose: bool = True,
) -> Figures:
    """Feed ``events`` webhook events (a creation and three updates per deal) and check the end state.

    Processes are killed while events arrive and while the backlog drains, at least
    ``min_kills`` times; then every process runs again and the state must converge.
    """
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the simulator's access log
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="connector-chaos-"))
    database = db or f"sqlite:///{workdir / 'chaos.db'}"
    if database.startswith("postgresql"):
        _reset_postgres(database)
    sim = Bitrix24Simulator(application_token=TOKEN, rate=2000, burst=4000)
    for name in ("Иван", "Олег", "Анна"):
        sim.add_user(name)  # ids 2, 3, 4: the captains
    share = fault_rate / 5  # spread over five kinds of fault
    sim.faults.error_rate = share * 2
    sim.faults.limit_rate = share
    sim.faults.error_after_effect_rate = share
    sim.faults.timeout_rate = share / 4
    sim.faults.timeout_stall = 2.0
    sim.faults.latency = (0.0, 0.005)
    sim.faults.drop_webhook_rate = share
    sim.faults._rng.seed(seed)
    server = sim.serve()
    port = _free_port()
    sim.handler_url = f"http://127.0.0.1:{port}/hooks/bitrix24/b24"
    config = workdir / "chaos.yaml"
    config.write_text(
        CONFIG.format(
            db=database,
            port=port,
            b24=f"{server.base_url}{sim.webhook_base}",
            token=TOKEN,
            territories="\n".join(
                f"  - {{match: {{city: Казань, district: {d}}}, captain: {c}}}" for d, c in TERRITORIES
            ),
        ),
        encoding="utf-8",
    )
    figures = Figures(shape=shape, database=database.split(":")[0], load_average=[_load()])
    procs = _processes(shape, config, port, workdir)
    for p in procs:
        p.start()
    _wait_for_intake(port)  # migrations and start-up: the feed begins once webhooks are taken

    killing_on = threading.Event()
    killing_on.set()

    def killer() -> None:
        while killing_on.is_set():
            time.sleep(rng.uniform(*kill_every))
            if not killing_on.is_set():
                break
            victim = rng.choice(procs)
            victim.kill()
            figures.kills += 1
            time.sleep(0.3)
            victim.start()

    killing = threading.Thread(target=killer, daemon=True)
    killing.start()
    began = time.monotonic()
    deals: dict[str, str] = {}
    per_deal = 4
    for i in range(max(1, events // per_deal)):
        district, captain = TERRITORIES[i % len(TERRITORIES)]
        deal = sim.add_deal(
            {
                "TITLE": f"Заявка {i}",
                "CATEGORY_ID": "1",
                "STAGE_ID": "C1:NEW",
                "ASSIGNED_BY_ID": "1",
                "UF_CRM_ADDRESS": f"Казань, {district} район, ул. Мира, {i}",
            }
        )
        deals[deal] = captain
        for n in range(per_deal - 1):
            sim.update_deal(deal, {"COMMENTS": f"звонок {n}"})
        if i % 50 == 0:
            time.sleep(0.05)  # a steady stream, not one burst
    sim.webhooks.wait_idle()
    events_in = time.monotonic()
    figures.feed_seconds = round(events_in - began, 1)
    figures.events = len(deals) * per_deal
    figures.deals = len(deals)

    def settled() -> bool:
        return all(sim.deals[d].get("ASSIGNED_BY_ID") == c and sim.tasks_for_deal(d) for d, c in deals.items())

    kill_deadline = events_in + settle
    while time.monotonic() < kill_deadline and (figures.kills < min_kills or not settled()):
        time.sleep(0.5)  # the killer goes on while the backlog drains
    killing_on.clear()
    killing.join()
    restarted_at = 0.0
    for p in procs:  # whatever the killer left dead comes back
        if p.popen is None or p.popen.poll() is not None:
            p.start()
            restarted_at = time.monotonic()

    from connector.storage.store import Store

    store = Store(database, apply_migrations=False)
    figures.load_average.append(_load())
    drain_began = time.monotonic()
    while time.monotonic() < drain_began + settle:
        waiting = _waiting(store)
        # A process just started polls at once: its first poll may still add work.
        if waiting == (0, 0) and settled() and time.monotonic() - restarted_at > FIRST_POLL_SETTLE:
            figures.drained = True
            figures.drain_seconds = round(time.monotonic() - events_in, 1)
            break
        time.sleep(1.0)
    time.sleep(3.0)  # late duplicates would show now
    # A poll (every 2 s here) may just have stored the echo of our own last writes: let the
    # worker take it before the processes stop, or it would count as unprocessed.
    echo_deadline = time.monotonic() + 15.0
    while figures.drained and _waiting(store) != (0, 0) and time.monotonic() < echo_deadline:
        time.sleep(0.5)
    figures.seconds = time.monotonic() - began
    for p in procs:
        p.stop()
    server.stop()
    figures.inbox_waiting, figures.outbox_waiting = _waiting(store)
    stored, processed = _deals_stored_and_processed(store)
    store.close()
    acknowledged = _acknowledged_deals(sim)
    figures.acknowledged = len(acknowledged & set(deals))
    for deal, captain in deals.items():
        tasks = sim.tasks_for_deal(deal)
        figures.lost += deal in acknowledged and deal not in stored
        figures.unprocessed += deal in stored and deal not in processed
        figures.missing += not tasks
        figures.duplicated += max(0, len(tasks) - 1)
        figures.wrong_captain += (
            any(t.get("RESPONSIBLE_ID") != captain for t in tasks) or sim.deals[deal].get("ASSIGNED_BY_ID") != captain
        )
    figures.load_average.append(_load())
    figures.faults = dict(sim.faults.injected) | {"refused_by_bucket": sim.bucket.refused}
    sim.close()
    if verbose:
        print(
            json.dumps(figures.__dict__ | {"clean": figures.clean, "logs": str(workdir)}, ensure_ascii=False, indent=2)
        )
        drain = f"drained {figures.drain_seconds} s after the last event" if figures.drained else "did NOT drain"
        print(
            f"{figures.shape}/{figures.database}: {drain} (load {figures.load_average}); lost {figures.lost}, "
            f"acknowledged but unprocessed {figures.unprocessed}, missing {figures.missing}, "
            f"duplicated {figures.duplicated}, wrong captain {figures.wrong_captain}"
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--shape", choices=("single", "multi"), default="single")
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-kills", type=int, default=10)
    parser.add_argument(
        "--kill-every",
        type=float,
        nargs=2,
        default=(4.0, 12.0),
        metavar=("MIN", "MAX"),
        help="seconds between kills, drawn uniformly",
    )
    parser.add_argument(
        "--settle", type=float, default=600.0, help="seconds to wait for the kills, then for the queues to drain"
    )
    args = parser.parse_args(argv)
    machine = Snapshot()
    figures = run_chaos(
        args.events,
        db=args.db,
        shape=args.shape,
        fault_rate=args.fault_rate,
        seed=args.seed,
        settle=args.settle,
        min_kills=args.min_kills,
        kill_every=tuple(args.kill_every),
    )
    print(f"# {machine.line()}")
    return 0 if figures.clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
