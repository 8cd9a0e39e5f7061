"""Intake load test: the connector's intake beside its peers, in one run, under the same load.

Rows, each under the same load generator and settings:

* ``ours``: the connector's intake (``connector.wsgi:application()`` in the production shape on
  PostgreSQL; ``connector run --roles intake`` or the same app in one process in the embedded
  shape on SQLite);
* ``ceiling``: the stack's ceiling, a minimal Flask app (``bench/ceiling_app.py``) that stores
  each delivery with one INSERT into the same database and answers 200, under the same server
  with the same settings: what the server, Flask and the database allow at most;
* ``ceiling+group``: the same app with group commit (deliveries that arrive together share
  one transaction), a prototype of what the intake could gain;
* ``n8n``: n8n (``--n8n PATH`` to its installed ``n8n`` command), a Webhook node answering at
  once followed by a Set node, imported and activated by the bench through n8n's CLI, on its
  default SQLite; skipped with a note without ``--n8n``.

Servers: production shape ``gunicorn`` (``-w 5`` sync workers, as documented) and ``granian``
(``--interface wsgi``, ``--granian-workers`` processes with ``--granian-threads`` Python threads
each); embedded shape ``waitress`` (``connector run``: waitress, 8 threads), ``granian-thread``
(Granian inside the process, ``bench/serve_embedded.py``, a prototype) and ``granian-proc``
(``granian --workers 1`` as a child process).

Load: ``wrk`` (Debian's package) with ``bench/wrk_bitrix24.lua``: keep-alive connections, each
request a distinct Bitrix24 form-encoded ``ONCRMDEALUPDATE`` with the application token, at each
``--concurrency`` (connections) for ``--seconds``; without ``wrk``, Python generator processes do
the same (``--generator python``). Comparisons are interleaved (every target at one concurrency,
then the next concurrency; ``--reps`` times), so a change in the machine's load touches all
rows alike; the summary gives the medians and the ratios ours/ceiling and ours/n8n.

Per row: accepted/s (200 and stored), p50/p99 of the acknowledgement, errors (non-200, socket
errors), responses that closed the connection (keep-alive not used), CPU per accepted delivery of
the server's processes and of the PostgreSQL backends of the bench database (sampled from
``/proc`` through the step, so a process that exits during it keeps what it used and none counts
negative), the generator's CPU, and the 1-minute load average. Afterwards every accepted delivery
must be stored: per table, rows >= accepted, rows <= sent (a request in flight when the generator
stopped may be stored unanswered), distinct keys = rows.

    python bench/intake.py --pg postgresql+psycopg://postgres@127.0.0.1:5432/bench_w2
    python bench/intake.py --shapes prod --prod-servers gunicorn,granian --concurrency 32 --reps 3
    python bench/intake.py --n8n /path/to/node_modules/.bin/n8n --seconds 15

Targets (the documented servers: Granian in both shapes; ``--judge`` for others): production
>= 2,000 accepted/s with p99 <= 25 ms and >= 0.9x the ceiling under the same server; embedded
>= 1,000 accepted/s; >= 20x n8n; 0 errors; every accepted delivery stored. Exits 1 when one is
missed. POSIX only (gunicorn, /proc).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import calibration_ms, gunicorn_without_control_socket, load_1min, machine_line  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test_bench"
FORBIDDEN_DATABASES = {"test", "test_me", "test_pd", "test_onec", "chaos"}
B24_TOKEN = "bench-app-token-123"
HOOK_PATH = "/hooks/bitrix24/b24"
STORED_MARKER = '"stored":1'
LUA = Path(__file__).with_name("wrk_bitrix24.lua")
TARGET_RATE, TARGET_P99_MS = 2000.0, 25.0
TARGET_CEILING_SHARE = 0.9
TARGET_EMBEDDED_RATE = 1000.0
TARGET_N8N_RATIO = 20.0
DOCUMENTED = {"prod": "granian", "embedded": "granian-thread"}  # the servers the docs deploy today
CONFIG = """
storage: {{url: "{db}"}}
server: {{host: 127.0.0.1, port: {port}, threads: {threads}, engine: {engine}}}
logging: {{level: {log_level}}}
crms:
  b24:
    type: bitrix24
    webhook_url: "http://127.0.0.1:9/rest/1/benchcode/"
    application_token: "{b24_token}"
"""


# --- the Python load generator (runs in its own processes; used when wrk is missing) ------------


def _b24_request(deal_id: int) -> bytes:
    body = (
        f"event=ONCRMDEALUPDATE&event_handler_id=7&data%5BFIELDS%5D%5BID%5D={deal_id}&ts={int(time.time())}"
        "&auth%5Bdomain%5D=bench.bitrix24.ru&auth%5Bclient_endpoint%5D=https%3A%2F%2Fbench.bitrix24.ru%2Frest%2F"
        "&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F"
        f"&auth%5Bmember_id%5D=5f2b6d2ad1e0c0f3b1f1d8b7a3e2c1d0&auth%5Bapplication_token%5D={B24_TOKEN}"
    ).encode()
    return body


class _Conn:
    """A minimal keep-alive HTTP/1.1 client: cheap enough to leave the CPU to the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""
        self.closes = 0  # answers that closed the connection

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def post(self, raw: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):
            reused = self.sock is not None
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.buf = b""
            try:
                self.sock.sendall(raw)
                return self._read()
            except (ConnectionError, BrokenPipeError):
                self.close()
                if not reused or attempt:  # a fresh connection failed: a real error
                    raise
        raise AssertionError("unreachable")

    def _read(self) -> tuple[int, bytes]:
        assert self.sock is not None
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("server closed the connection")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("server closed the connection mid-body")
            rest += chunk
        body, self.buf = rest[:length], rest[length:]
        if close:
            self.closes += 1
            self.close()
        return status, body


def load_worker(port: int, path: str, seconds: float, connections: int, base: int, marker: str) -> dict[str, Any]:
    """Closed loop: ``connections`` threads post distinct deliveries for ``seconds``; the figures."""
    lock = threading.Lock()
    counts: dict[str, Any] = {"sent": 0, "accepted": 0, "duplicates": 0, "non_200": 0, "closes": 0}
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    start = time.perf_counter()
    end = start + seconds

    def run(index: int) -> None:
        conn = _Conn(port)
        mine: list[float] = []
        n = 0
        while time.perf_counter() < end:
            n += 1
            body = _b24_request(base + index * 100_000_000 + n)
            raw = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                f"User-Agent: Bitrix24 Webhook Engine\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            t0 = time.perf_counter()
            try:
                status, answer = conn.post(raw)
                kind = (
                    ("accepted" if marker == "-" or marker.encode() in answer else "duplicates")
                    if status == 200
                    else f"http_{status}"
                )
            except (OSError, ValueError, IndexError) as exc:
                kind = type(exc).__name__
                conn.close()
            t1 = time.perf_counter()
            with lock:
                counts["sent"] += 1
                if kind in counts:
                    counts[kind] += 1
                else:
                    counts["non_200"] += 1
                    statuses[kind] = statuses.get(kind, 0) + 1
            if kind == "accepted":
                mine.append(t1 - t0)
        conn.close()
        with lock:
            latencies.extend(mine)
            counts["closes"] += conn.closes

    pool = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(connections)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {**counts, "statuses": statuses, "latencies": latencies, "duration": time.perf_counter() - start}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- CPU from /proc ------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def _group_pids(group: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rpartition(")")[2].split()[2]) == group:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _backend_pids(database: str) -> list[int]:
    """PostgreSQL backends serving ``database`` (their title: ``postgres: user db addr state``)."""
    found, wanted = [], f" {database} ".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"postgres: ") and wanted in title.replace(b"\0", b" "):
                found.append(int(entry.name))
    return found


class CpuSampler:
    """CPU used during a step by a changing set of processes, sampled every ``every`` seconds.

    Each process counts from what it had used when the step began (0 for one born during the
    step) to the last value seen; one that exits keeps what it used until its last sample.
    So the figure never goes negative and backends that come and go are counted.
    """

    def __init__(self, find: Callable[[], list[int]], every: float = 0.2) -> None:
        self._find = find
        self._every = every
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = False

    def _sample(self) -> None:
        for pid in self._find():
            now = _cpu_s(pid)
            if now is None:
                continue
            if pid not in self._first:
                self._first[pid] = now if not self._started else 0.0
            self._last[pid] = now

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._started = True
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(max(0.0, self._last[p] - self._first[p]) for p in self._last)


# --- the targets -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Target:
    """One server process tree answering webhooks: ours, the ceiling or n8n, under one server."""

    shape: str  # prod, embedded or peer
    app: str  # ours, ceiling, ceiling+group, n8n
    server: str
    settings: str  # how it is run, for the report
    argv: list[str]
    env: dict[str, str]
    port: int
    path: str
    marker: str
    table: str  # where its deliveries land, for the check: "<db url>#<table>"
    database: str | None = None  # a PostgreSQL database whose backends count as its CPU
    health: str = "/healthz"
    prepare: Callable[[], None] | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.app} {self.server}"

    def start(self, workdir: Path) -> None:
        if self.prepare is not None:
            self.prepare()
        self.log = workdir / f"{self.shape}-{self.app}-{self.server}.log".replace("+", "-")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_up(self, timeout: float = 90.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.health}", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not come up in {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def pids(self) -> list[int]:
        assert self.proc is not None
        found = _group_pids(self.proc.pid)
        return found


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if name in FORBIDDEN_DATABASES:
        raise SystemExit(f"refusing to empty database {name!r}: it belongs to the tests or the chaos run")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _init_db(config: Path, env: dict[str, str]) -> None:
    """The schema first, so the server processes do not race to migrate it."""
    subprocess.run(
        [sys.executable, "-m", "connector.cli", "init-db", "--config", str(config)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


@dataclass
class Options:
    pg: str
    workdir: Path
    ports: Callable[[], int]
    workers: int
    granian_workers: int
    granian_threads: int
    threads: int
    log_level: str
    group_wait_ms: float


def _granian_argv(target: str, workers: int, threads: int, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--backpressure",
        str(threads),
        "--runtime-threads",
        "1",
        "--http",
        "1",
        "--no-ws",
        "--backlog",
        "2048",
        "--log-level",
        "warning",
        "--factory",
        target,
    ]


def _gunicorn_argv(target: str, workers: int, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{port}",
        "--backlog",
        "2048",
        *gunicorn_without_control_socket(),
        f"{target}()",
    ]


def build_targets(shapes: list[str], servers: dict[str, list[str]], apps: list[str], o: Options) -> list[Target]:
    from bench.ceiling_app import create_table

    base_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    targets: list[Target] = []
    pg_ready: list[bool] = []

    def pg_prepare() -> None:
        if not pg_ready:  # one reset for every production target: they share the database
            _reset_postgres(o.pg)
            create_table(o.pg)
            pg_ready.append(True)

    for shape in shapes:
        for server in servers[shape]:
            for app in apps:
                if app == "ceiling+group" and server == "gunicorn":
                    continue  # a sync worker serves one request at a time: nothing to group
                port = o.ports()
                if shape == "prod":
                    db, database = o.pg, o.pg.rsplit("/", 1)[1].split("?")[0]
                else:
                    db, database = f"sqlite:///{o.workdir / f'embedded-{server}.db'}", None
                env = dict(base_env)
                ceiling_mode = "group" if app == "ceiling+group" else "one"
                if app == "ours":
                    config = o.workdir / f"{shape}-{server}.yaml"
                    config.write_text(
                        CONFIG.format(
                            db=db,
                            port=port,
                            threads=o.threads,
                            log_level=o.log_level,
                            b24_token=B24_TOKEN,
                            engine="granian" if server == "granian-thread" else "waitress",
                        ),
                        encoding="utf-8",
                    )
                    env["CONNECTOR_CONFIG"] = str(config)
                    table = f"{db}#inbox"
                else:
                    env.update(CEILING_DB_URL=db, CEILING_MODE=ceiling_mode, CEILING_GROUP_WAIT_MS=str(o.group_wait_ms))
                    table = f"{db}#ceiling_inbox"

                def prepare(
                    shape: str = shape, app: str = app, db: str = db, env: dict[str, str] = env, server: str = server
                ) -> None:
                    if shape == "prod":
                        pg_prepare()
                        if app == "ours":
                            _init_db(Path(env["CONNECTOR_CONFIG"]), env)
                    elif app == "ours":
                        _init_db(Path(env["CONNECTOR_CONFIG"]), env)
                    else:
                        from bench.ceiling_app import count_rows

                        try:
                            count_rows(db)  # the table is there already (another server's ceiling made it)
                        except Exception:
                            create_table(db)

                if shape == "prod" and server == "gunicorn":
                    factory = "connector.wsgi:application" if app == "ours" else "bench.ceiling_app:create_from_env"
                    argv = _gunicorn_argv(factory, o.workers, port)
                    settings = f"gunicorn -w {o.workers} sync workers, no keep-alive"
                elif server == "granian" or server == "granian-proc":
                    factory = "connector.wsgi:application" if app == "ours" else "bench.ceiling_app:create_from_env"
                    workers = o.granian_workers if shape == "prod" else 1
                    threads = o.granian_threads if shape == "prod" else o.threads
                    argv = _granian_argv(factory, workers, threads, port)
                    settings = f"granian --interface wsgi --workers {workers} --blocking-threads {threads}"
                elif server in ("waitress", "granian-thread") and app == "ours":
                    argv = [sys.executable, "-m", "connector.cli", "run", "--config", env["CONNECTOR_CONFIG"]]
                    argv += ["--roles", "intake"]
                    engine = "waitress" if server == "waitress" else "granian"
                    settings = f"connector run --roles intake (server.engine: {engine}, {o.threads} threads)"
                elif server in ("waitress", "granian-thread"):
                    kind = "waitress" if server == "waitress" else "granian"
                    argv = [sys.executable, str(ROOT / "bench" / "serve_embedded.py"), "--server", kind]
                    argv += ["--port", str(port), "--threads", str(o.threads)]
                    if app == "ours":
                        argv += ["--app", "ours", "--config", env["CONNECTOR_CONFIG"]]
                    else:
                        argv += ["--app", "ceiling", "--db", db, "--mode", ceiling_mode]
                    settings = f"{kind} in the process, {o.threads} threads (bench/serve_embedded.py)"
                else:
                    raise SystemExit(f"unknown server {server!r} for shape {shape!r}")
                if app == "ceiling+group":
                    settings += f", group commit (wait {o.group_wait_ms:g} ms)"
                targets.append(
                    Target(
                        shape=shape,
                        app=app,
                        server=server,
                        settings=settings,
                        argv=argv,
                        env=env,
                        port=port,
                        path=HOOK_PATH,
                        marker=STORED_MARKER,
                        table=table,
                        database=database,
                        prepare=prepare,
                    )
                )
    return targets


# --- n8n ---------------------------------------------------------------------------------------------

N8N_WORKFLOW_ID = "BenchWebhook0001"


def n8n_workflow() -> dict[str, Any]:
    """Webhook (POST /webhook/bench, answers 200 at once) → Set (keeps the delivery's body)."""
    return {
        "id": N8N_WORKFLOW_ID,
        "name": "bench: webhook then set",
        "active": True,
        "nodes": [
            {
                "parameters": {"httpMethod": "POST", "path": "bench", "responseMode": "onReceived", "options": {}},
                "id": "0f4c1d22-5d3e-4d6a-9d55-1a2b3c4d5e01",
                "name": "Webhook",
                "type": "n8n-nodes-base.webhook",
                "typeVersion": 2,
                "position": [0, 0],
                "webhookId": "7b1f2f4e-8c1a-4b8e-9a51-1a2b3c4d5e02",
            },
            {
                "parameters": {
                    "assignments": {
                        "assignments": [
                            {
                                "id": "5a0e7a4c-3b2d-4c1e-8f9a-1a2b3c4d5e03",
                                "name": "delivery",
                                "value": "={{ $json.body }}",
                                "type": "object",
                            }
                        ]
                    },
                    "options": {},
                },
                "id": "0f4c1d22-5d3e-4d6a-9d55-1a2b3c4d5e04",
                "name": "Set",
                "type": "n8n-nodes-base.set",
                "typeVersion": 3.4,
                "position": [220, 0],
            },
        ],
        "connections": {"Webhook": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}},
        "settings": {"executionOrder": "v1"},
        "pinData": {},
    }


def n8n_target(n8n: Path, o: Options) -> Target:
    """n8n on its default SQLite in a fresh user folder, the workflow imported and activated by its CLI."""
    home = o.workdir / "n8n-home"
    port = o.ports()
    bin_dir = str(n8n.resolve().parent)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),  # a node shipped beside it wins
        "N8N_USER_FOLDER": str(home),
        "N8N_PORT": str(port),
        "N8N_LISTEN_ADDRESS": "127.0.0.1",
        "N8N_HOST": "127.0.0.1",
        "WEBHOOK_URL": f"http://127.0.0.1:{port}/",
        "N8N_DIAGNOSTICS_ENABLED": "false",
        "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
        "N8N_TEMPLATES_ENABLED": "false",
        "N8N_PERSONALIZATION_ENABLED": "false",
        "N8N_SECURE_COOKIE": "false",
        "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "false",
        "N8N_LOG_LEVEL": "warn",
    }
    workflow = o.workdir / "n8n-workflow.json"

    def prepare() -> None:
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        workflow.write_text(json.dumps([n8n_workflow()]), encoding="utf-8")
        for argv in (
            [str(n8n), "import:workflow", f"--input={workflow}"],
            _n8n_activate_argv(n8n, env),
        ):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv[1:])} failed: {(done.stdout + done.stderr).strip()[-800:]}")

    version = subprocess.run([str(n8n), "--version"], env=env, capture_output=True, text=True, timeout=120)
    return Target(
        shape="peer",
        app="n8n",
        server=f"n8n {version.stdout.strip() or '?'}",
        settings="n8n start, default SQLite, Webhook (respond immediately) -> Set, executions saved (its default)",
        argv=[str(n8n), "start"],
        env=env,
        port=port,
        path="/webhook/bench",
        marker="-",
        table="",
        health="/healthz",
        prepare=prepare,
    )


def _n8n_activate_argv(n8n: Path, env: dict[str, str]) -> list[str]:
    """n8n 2 publishes a workflow (``publish:workflow``); n8n 1 activates it (``update:workflow``)."""
    listed = subprocess.run([str(n8n), "--help"], env=env, capture_output=True, text=True, timeout=120)
    if "publish:workflow" in listed.stdout + listed.stderr:
        return [str(n8n), "publish:workflow", f"--id={N8N_WORKFLOW_ID}"]
    return [str(n8n), "update:workflow", f"--id={N8N_WORKFLOW_ID}", "--active=true"]


def _wait_webhook(target: Target, timeout: float = 60.0) -> None:
    """n8n answers /healthz before its webhooks are registered: wait for the hook itself."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{target.port}{target.path}"
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, data=b"warm=up", method="POST")
            with urllib.request.urlopen(req, timeout=5) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"n8n's webhook {url} did not answer 200; see {target.log}")


# --- one step ----------------------------------------------------------------------------------------


@dataclass
class Row:
    shape: str
    target: str
    server: str
    concurrency: int
    rep: int
    generator: str
    sent: int = 0
    answered: int = 0
    accepted: int = 0
    duplicates: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    closes: int = 0
    seconds: float = 0.0
    accepted_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    server_cpu_ms: float = 0.0  # per accepted delivery: the server's processes
    db_cpu_ms: float = 0.0  # ... the PostgreSQL backends of the bench database
    gen_cpu_ms: float = 0.0  # ... the load generator
    load1: float = 0.0  # the 1-minute load average at the end of the step
    rows_per_commit: float = 0.0  # group commit: mean rows per transaction (one worker process's count)
    warmup: bool = False

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def _run_wrk(target: Target, concurrency: int, seconds: float, base: int, threads: int) -> tuple[dict[str, Any], float]:
    argv = [
        "wrk",
        f"-t{max(1, min(threads, concurrency))}",
        f"-c{concurrency}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{target.port}",
        "--",
        target.path,
        B24_TOKEN,
        str(base),
        target.marker,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    line = next((x for x in out.decode().splitlines() if x.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no figures (exit {proc.returncode}): {err.decode()[-500:]}")
    figures = json.loads(line)
    return figures, usage.ru_utime + usage.ru_stime


def _run_python(
    target: Target, concurrency: int, seconds: float, base: int, procs: int
) -> tuple[dict[str, Any], float]:
    procs = max(1, min(procs, concurrency))
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--load-worker", str(target.port), target.path, str(seconds), str(n)]
            + [str(base + i * 10_000_000_000), target.marker],
            stdout=subprocess.PIPE,
        )
        for i, n in enumerate(shares)
    ]
    parts, cpu = [], 0.0
    for child in children:
        assert child.stdout is not None
        out = child.stdout.read()
        _, _, usage = os.wait4(child.pid, 0)
        child.returncode = 0
        cpu += usage.ru_utime + usage.ru_stime
        parts.append(json.loads(out))
    latencies = [x for p in parts for x in p["latencies"]]
    statuses: dict[str, int] = {}
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    figures = {
        "sent": sum(p["sent"] for p in parts),
        "requests": sum(p["sent"] for p in parts),
        "accepted": sum(p["accepted"] for p in parts),
        "duplicates": sum(p["duplicates"] for p in parts),
        "non_200": sum(p["non_200"] for p in parts),
        "closes": sum(p["closes"] for p in parts),
        "duration_us": max(p["duration"] for p in parts) * 1e6,
        "p50_us": _pct(latencies, 0.50) * 1e6,
        "p99_us": _pct(latencies, 0.99) * 1e6,
        "max_us": max(latencies, default=float("nan")) * 1e6,
        "statuses": statuses,
    }
    return figures, cpu


def run_step(
    target: Target, concurrency: int, seconds: float, rep: int, base: int, generator: str, gen_threads: int
) -> Row:
    groups_before = _groups(target)
    server_cpu = CpuSampler(target.pids)
    db_name = target.database
    db_cpu = CpuSampler(lambda: _backend_pids(db_name)) if db_name else None
    server_cpu.start()
    if db_cpu is not None:
        db_cpu.start()
    if generator == "wrk":
        figures, gen_cpu = _run_wrk(target, concurrency, seconds, base, gen_threads)
    else:
        figures, gen_cpu = _run_python(target, concurrency, seconds, base, gen_threads)
    server_s = server_cpu.stop()
    db_s = db_cpu.stop() if db_cpu is not None else 0.0
    row = Row(target.shape, target.app, target.server, concurrency, rep, generator)
    row.sent = int(figures["sent"])
    row.answered = int(figures["requests"])
    row.accepted, row.duplicates = int(figures["accepted"]), int(figures["duplicates"])
    row.errors = {k: int(v) for k, v in figures.get("statuses", {}).items()}
    for key in ("connect_errors", "read_errors", "write_errors", "timeouts"):
        if figures.get(key):
            row.errors[key.removesuffix("_errors")] = int(figures[key])
    row.closes = int(figures["closes"])
    row.seconds = max(1e-9, figures["duration_us"] / 1e6)
    row.accepted_per_s = row.accepted / row.seconds
    row.p50_ms, row.p99_ms, row.max_ms = (figures[k] / 1000 for k in ("p50_us", "p99_us", "max_us"))
    per = 1000 / max(1, row.accepted)
    row.server_cpu_ms, row.db_cpu_ms, row.gen_cpu_ms = server_s * per, db_s * per, gen_cpu * per
    row.load1 = load_1min()
    groups_after = _groups(target)
    if groups_before and groups_after and groups_after[1] > groups_before[1]:
        row.rows_per_commit = (groups_after[0] - groups_before[0]) / (groups_after[1] - groups_before[1])
    return row


def _groups(target: Target) -> tuple[int, int] | None:
    """(rows, groups) committed so far by one process of a group-commit ceiling."""
    if target.app != "ceiling+group":
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{target.port}/groups", timeout=5) as answer:
            figures = json.loads(answer.read())
    except (OSError, ValueError):
        return None
    return int(figures["rows"]), int(figures["groups"])


HEADER = (
    f"{'shape':<8} {'target':<14} {'server':<15} {'conn':>4} {'rep':>3} {'accepted':>8} {'acc/s':>7} "
    f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'closes':>7} {'CPU ms/delivery srv+db (gen)':>29} {'load1':>5}"
)


def format_row(r: Row) -> str:
    closes = f"{r.closes / max(1, r.answered):.0%}"
    cpu = f"{r.server_cpu_ms:5.2f} +{r.db_cpu_ms:5.2f} ({r.gen_cpu_ms:4.2f})"
    group = f"  {r.rows_per_commit:.1f} rows/commit" if r.rows_per_commit else ""
    return (
        f"{r.shape:<8} {r.target:<14} {r.server[:15]:<15} {r.concurrency:>4} {r.rep:>3} {r.accepted:>8} "
        f"{r.accepted_per_s:>7.0f} {r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {r.error_count:>6} {closes:>7} {cpu:>29} "
        f"{r.load1:>5.2f}{group}"
    )


# --- the check and the summary -----------------------------------------------------------------------


def verify(targets: list[Target], rows: list[Row]) -> list[tuple[str, bool]]:
    """Per table: rows >= accepted (nothing acknowledged lost), rows <= sent, distinct keys = rows."""
    from bench.ceiling_app import count_rows

    lines = []
    by_table: dict[str, list[Target]] = {}
    for t in targets:
        if t.table:
            by_table.setdefault(t.table, []).append(t)
    for table, owners in by_table.items():
        names = {(t.shape, t.app, t.server) for t in owners}
        mine = [r for r in rows if (r.shape, r.target, r.server) in names]
        accepted, sent = sum(r.accepted for r in mine), sum(r.sent for r in mine)
        url, _, name = table.partition("#")
        if name == "inbox":
            stored, distinct = _count_inbox(url)
        else:
            stored, distinct = count_rows(url)
        ok = accepted <= stored <= sent and distinct == stored
        where = url.rsplit("/", 1)[-1]
        lines.append(
            (
                f"{where}#{name} ({', '.join(sorted(t.name for t in owners))}): rows {stored}, distinct keys "
                f"{distinct}, accepted {accepted}, in flight when the generator stopped {stored - accepted}, "
                f"sent {sent}: {'OK' if ok else 'MISMATCH'}",
                ok,
            )
        )
    return lines


def _count_inbox(url: str) -> tuple[int, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM inbox")).scalar_one()
        distinct = conn.execute(
            text("SELECT count(*) FROM (SELECT DISTINCT crm, dedup_key FROM inbox) AS d")
        ).scalar_one()
    engine.dispose()
    return int(rows), int(distinct)


@dataclass
class Median:
    shape: str
    target: str
    server: str
    concurrency: int
    accepted_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    errors: int
    closes: float
    load1: float


def medians(rows: list[Row]) -> list[Median]:
    groups: dict[tuple[str, str, str, int], list[Row]] = {}
    for r in rows:
        if not r.warmup:
            groups.setdefault((r.shape, r.target, r.server, r.concurrency), []).append(r)
    out = []
    for (shape, target, server, conc), rs in groups.items():
        out.append(
            Median(
                shape,
                target,
                server,
                conc,
                statistics.median(r.accepted_per_s for r in rs),
                statistics.median(r.p50_ms for r in rs),
                statistics.median(r.p99_ms for r in rs),
                statistics.median(r.server_cpu_ms + r.db_cpu_ms for r in rs),
                sum(r.error_count for r in rs),
                sum(r.closes for r in rs) / max(1, sum(r.answered for r in rs)),
                statistics.median(r.load1 for r in rs),
            )
        )
    return out


def _peak(ms: list[Median]) -> Median | None:
    return max(ms, key=lambda m: m.accepted_per_s, default=None)


def summary(ms: list[Median], judge: dict[str, str]) -> tuple[list[str], bool]:
    """The medians with their ratios, and the targets; True when every judged target is met."""
    lines = [
        f"{'shape':<8} {'target':<14} {'server':<15} {'conn':>4} {'acc/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU ms':>6} {'keep-alive':>10} {'ours/ceiling':>12} {'ours/n8n':>8} {'load1':>5}"
    ]
    n8n = {m.concurrency: m for m in ms if m.target == "n8n"}
    for m in sorted(ms, key=lambda m: (m.shape != "prod", m.shape, m.server, m.target, m.concurrency)):
        ceiling = next(
            (
                c
                for c in ms
                if (c.shape, c.server, c.target, c.concurrency) == (m.shape, m.server, "ceiling", m.concurrency)
            ),
            None,
        )
        vs_ceiling = f"{m.accepted_per_s / ceiling.accepted_per_s:.2f}" if m.target == "ours" and ceiling else ""
        peer = n8n.get(m.concurrency)
        vs_n8n = f"{m.accepted_per_s / peer.accepted_per_s:.1f}" if m.target == "ours" and peer else ""
        lines.append(
            f"{m.shape:<8} {m.target:<14} {m.server[:15]:<15} {m.concurrency:>4} {m.accepted_per_s:>7.0f} "
            f"{m.p50_ms:>7.1f} {m.p99_ms:>7.1f} {m.cpu_ms:>6.2f} {1 - m.closes:>10.0%} {vs_ceiling:>12} "
            f"{vs_n8n:>8} {m.load1:>5.2f}"
        )
    lines.append("")
    met_all = True
    n8n_peak = _peak([m for m in ms if m.target == "n8n"])
    for shape in ("prod", "embedded"):
        for server in sorted({m.server for m in ms if m.shape == shape}):
            ours = [m for m in ms if (m.shape, m.server, m.target) == (shape, server, "ours")]
            if not ours:
                continue
            judged = judge.get(shape) == server
            checks: list[tuple[str, str, bool]] = []
            peak = _peak(ours)
            assert peak is not None
            if shape == "prod":
                fit = _peak([m for m in ours if m.p99_ms <= TARGET_P99_MS and m.errors == 0])
                shown = f"{fit.accepted_per_s:.0f}/s at p99 {fit.p99_ms:.1f} ms" if fit else "no step with p99 <= 25 ms"
                checks.append(
                    (">= 2,000 accepted/s with p99 <= 25 ms", shown, bool(fit and fit.accepted_per_s >= TARGET_RATE))
                )
                ceiling = _peak([m for m in ms if (m.shape, m.server, m.target) == (shape, server, "ceiling")])
                if ceiling:
                    share = peak.accepted_per_s / ceiling.accepted_per_s
                    checks.append(
                        (
                            ">= 0.9x the ceiling (peaks)",
                            f"{share:.2f} ({peak.accepted_per_s:.0f} / {ceiling.accepted_per_s:.0f})",
                            share >= TARGET_CEILING_SHARE,
                        )
                    )
            else:
                checks.append(
                    (
                        ">= 1,000 accepted/s",
                        f"peak {peak.accepted_per_s:.0f}/s (p99 {peak.p99_ms:.1f} ms)",
                        peak.accepted_per_s >= TARGET_EMBEDDED_RATE,
                    )
                )
            if n8n_peak is not None:
                ratio = peak.accepted_per_s / max(1e-9, n8n_peak.accepted_per_s)
                checks.append((">= 20x n8n (peaks)", f"{ratio:.1f}x", ratio >= TARGET_N8N_RATIO))
            errors = sum(m.errors for m in ours)
            checks.append(("0 errors", str(errors), errors == 0))
            for what, measured, ok in checks:
                verdict = ("MET" if ok else "MISSED") if judged else ("met" if ok else "missed")
                lines.append(f"target {shape}/{server}: {what} | measured {measured} | {verdict}")
                if judged and not ok:
                    met_all = False
    return lines, met_all


# --- main --------------------------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--load-worker":
        port, path, seconds, connections, base, marker = argv[1:7]
        figures = load_worker(int(port), path, float(seconds), int(connections), int(base), marker)
        print(json.dumps(figures))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="prod,embedded", help="prod, embedded or both (comma-separated)")
    parser.add_argument("--prod-servers", default="gunicorn,granian", help="gunicorn, granian")
    parser.add_argument(
        "--embedded-servers", default="waitress,granian-thread", help="waitress, granian-thread, granian-proc"
    )
    parser.add_argument("--apps", default="ours,ceiling,ceiling+group", help="ours, ceiling, ceiling+group")
    parser.add_argument("--n8n", type=Path, help="the installed n8n command (e.g. node_modules/.bin/n8n)")
    parser.add_argument("--concurrency", default="8,32,64", help="connections per step, in order")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each step lasts")
    parser.add_argument("--reps", type=int, default=1, help="interleaved repetitions (the summary gives medians)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before the first step of a target")
    parser.add_argument("--generator", default="auto", choices=("auto", "wrk", "python"))
    parser.add_argument("--gen-threads", type=int, default=2, help="wrk threads (or Python generator processes)")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL for the production shape (emptied!)")
    parser.add_argument("--port-base", type=int, help="ports from here up, one per target (default: free ports)")
    parser.add_argument("--workers", type=int, default=5, help="gunicorn sync workers (2 x cores + 1, as documented)")
    parser.add_argument("--granian-workers", type=int, default=2, help="granian worker processes (production)")
    parser.add_argument("--granian-threads", type=int, default=8, help="granian Python threads per worker (production)")
    parser.add_argument("--threads", type=int, default=8, help="threads of the embedded servers (waitress's default 8)")
    parser.add_argument("--group-wait-ms", type=float, default=0.0, help="group commit: wait this long for more rows")
    parser.add_argument(
        "--judge",
        default="prod=granian,embedded=granian-thread",
        help="the server whose rows the targets judge, per shape (the documented ones by default)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="the intake's logging level"
    )
    parser.add_argument("--json", action="store_true", help="print every row as JSON too")
    args = parser.parse_args(argv)

    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    elif generator == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk), or use --generator python")
    shapes = _split(args.shapes)
    for shape in shapes:
        if shape not in ("prod", "embedded"):
            parser.error(f"unknown shape {shape!r}")
    servers = {"prod": _split(args.prod_servers), "embedded": _split(args.embedded_servers)}
    missing = []
    if importlib.util.find_spec("granian") is None:  # pip install -e '.[bench]' brings it
        missing.append("granian")
        servers = {shape: [x for x in names if not x.startswith("granian")] for shape, names in servers.items()}
    if importlib.util.find_spec("gunicorn") is None:
        missing.append("gunicorn")
        servers["prod"] = [x for x in servers["prod"] if x != "gunicorn"]
    judge = dict(x.split("=", 1) for x in _split(args.judge))
    next_port = [args.port_base]

    def ports() -> int:
        if next_port[0] is None:
            return _free_port()
        next_port[0] += 1
        return int(next_port[0] - 1)

    workdir = Path(tempfile.mkdtemp(prefix="connector-bench-intake-"))
    options = Options(
        pg=args.pg,
        workdir=workdir,
        ports=ports,
        workers=args.workers,
        granian_workers=args.granian_workers,
        granian_threads=args.granian_threads,
        threads=args.threads,
        log_level=args.log_level,
        group_wait_ms=args.group_wait_ms,
    )
    calibration = calibration_ms()
    print(
        f"# bench/intake.py {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; generator {generator} "
        f"({args.gen_threads} threads), {args.seconds:g} s per step, concurrency {args.concurrency}, "
        f"{args.reps} interleaved repetition(s); logs in {workdir}"
    )
    print(f"# {machine_line(calibration)}")
    targets = build_targets(shapes, servers, _split(args.apps), options)
    notes = []
    if args.n8n:
        if not args.n8n.exists():
            parser.error(f"--n8n {args.n8n}: no such file")
        targets.append(n8n_target(args.n8n, options))
    else:
        notes.append("n8n: skipped (no --n8n PATH given)")
    notes += [f"{name}: not installed, its rows skipped (pip install -e '.[prod,bench]')" for name in missing]
    if "ceiling+group" in _split(args.apps) and "gunicorn" in servers["prod"] and "prod" in shapes:
        notes.append("ceiling+group: not under gunicorn's sync workers (one request per process: nothing to group)")
    for t in targets:
        print(f"#   {t.shape:<8} {t.name:<30} port {t.port}: {t.settings}")
    for note in notes:
        print(f"#   {note}")
    rows: list[Row] = []
    started: list[Target] = []
    deal_base = [1_000_000_000]

    def step(t: Target, conc: int, rep: int, seconds: float, warmup: bool = False) -> Row:
        deal_base[0] += 1_000_000_000
        row = run_step(t, conc, seconds, rep, deal_base[0], generator, args.gen_threads)
        row.warmup = warmup
        rows.append(row)
        return row

    try:
        for t in targets:
            t.start(workdir)
            started.append(t)
            t.wait_up()
            if t.app == "n8n":
                _wait_webhook(t)
            if args.warmup > 0:
                step(t, 8, 0, args.warmup, warmup=True)  # first connections and imports: not measured
        print()
        print(HEADER, flush=True)
        concurrencies = [int(c) for c in _split(args.concurrency)]
        for rep in range(1, args.reps + 1):
            for conc in concurrencies:
                order = targets if rep % 2 else list(reversed(targets))  # alternate who goes first
                for t in order:
                    row = step(t, conc, rep, args.seconds)
                    print(format_row(row), flush=True)
                    time.sleep(0.5)  # let the server drain before the next step
    finally:
        for t in started:
            t.stop()
    print()
    checks = verify(targets, rows)
    for line, _ok in checks:
        print(f"stored: {line}")
    print()
    lines, met = summary(medians(rows), judge)
    print(
        "medians over repetitions; ours/ceiling under the same server and concurrency; keep-alive = answers "
        "that left the connection open"
    )
    print("\n".join(lines))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    verified = all(ok for _line, ok in checks)
    return 0 if met and verified else 1


if __name__ == "__main__":
    raise SystemExit(main())
