"""Intake load test: webhook deliveries at rising rates against the real intake processes.

Load-generator processes (separate from the server, on loopback) post realistic deliveries,
half Bitrix24 form-encoded events (``event=ONCRMDEALUPDATE&data[FIELDS][ID]=N&ts=…&
auth[application_token]=…``), half Pipedrive v2 JSON bodies with HTTP Basic auth, at each
rate in turn, open loop (each request has its scheduled moment; a generator that falls
behind sends at once and it shows as a lower offered rate). Two shapes are measured:

* ``prod``: gunicorn (``connector.wsgi:application()``, ``--workers`` sync workers, default 5
  = 2 × cores + 1 on this 2-core machine, as docs/deployment.md recommends) on
  PostgreSQL at ``--pg`` (the schema is dropped and recreated);
* ``embedded``: ``connector run --roles intake`` (waitress, 8 threads) on a fresh SQLite file.

Per rate: deliveries sent, accepted (200 with ``stored: 1``), accepted/s, acknowledgement
latency (request written → whole answer read) p50/p99/max, errors. Afterwards every accepted
delivery must be in the inbox: rows = accepted, distinct (crm, dedup_key) = rows.

    python bench/intake.py                                   # both shapes, 250…3000/s, 4 s each
    python bench/intake.py --shapes prod --rates 1000,2000 --seconds 5 --workers 5
    python bench/intake.py --json                            # figures as JSON

Target: >= 2,000 accepted/s with p99 <= 25 ms (production shape). POSIX only (gunicorn).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test_bench"
FORBIDDEN_DATABASES = {"test", "test_me", "test_pd", "test_onec", "chaos"}
B24_TOKEN = "bench-app-token-123"
PD_USER, PD_PASSWORD = "bench", "bench-password-123"
TARGET_RATE, TARGET_P99_MS = 2000.0, 25.0
CONFIG = """
storage: {{url: "{db}"}}
server: {{host: 127.0.0.1, port: {port}, threads: {threads}}}
logging: {{level: {log_level}}}
crms:
  b24:
    type: bitrix24
    webhook_url: "http://127.0.0.1:9/rest/1/benchcode/"
    application_token: "{b24_token}"
  pd:
    type: pipedrive
    base_url: "http://127.0.0.1:9"
    api_token: "bench-api-token-123"
    webhook_user: "{pd_user}"
    webhook_password: "{pd_password}"
"""


# --- the load generator (runs in its own processes) ------------------------------------------


def _b24_body(deal_id: int) -> bytes:
    ts = int(time.time())
    return (
        f"event=ONCRMDEALUPDATE&event_handler_id=7&data%5BFIELDS%5D%5BID%5D={deal_id}&ts={ts}"
        "&auth%5Bdomain%5D=bench.bitrix24.ru&auth%5Bclient_endpoint%5D=https%3A%2F%2Fbench.bitrix24.ru%2Frest%2F"
        "&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F"
        f"&auth%5Bmember_id%5D=5f2b6d2ad1e0c0f3b1f1d8b7a3e2c1d0&auth%5Bapplication_token%5D={B24_TOKEN}"
    ).encode()


def _pd_body(deal_id: int) -> bytes:
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    body = {
        "meta": {
            "action": "change",
            "entity": "deal",
            "entity_id": str(deal_id),
            "id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
            "company_id": "12345678",
            "user_id": "10002",
            "webhook_id": "501",
            "webhook_owner_id": "10001",
            "is_bulk_edit": False,
            "version": "2.0",
            "type": "general",
            "change_source": "app",
            "attempt": 1,
            "host": "bench.pipedrive.com",
            "permitted_user_ids": ["10001", "10002"],
            "timestamp": stamp,
        },
        "data": {
            "id": deal_id,
            "title": f"Deal {deal_id}",
            "status": "open",
            "owner_id": 10002,
            "creator_user_id": 10001,
            "person_id": None,
            "org_id": None,
            "pipeline_id": 1,
            "stage_id": 2,
            "value": 1200,
            "currency": "EUR",
            "lost_reason": None,
            "add_time": "2026-11-20T15:00:01Z",
            "update_time": stamp[:19] + "Z",
            "stage_change_time": stamp[:19] + "Z",
            "close_time": None,
            "won_time": None,
            "lost_time": None,
            "expected_close_date": None,
            "probability": None,
            "label_ids": [],
            "visible_to": "3",
            "custom_fields": {},
        },
        "previous": {"stage_id": 1},
    }
    return json.dumps(body).encode()


_PD_AUTH = "Basic " + base64.b64encode(f"{PD_USER}:{PD_PASSWORD}".encode()).decode()


def _request(seq: int, deal_base: int) -> bytes:
    deal_id = deal_base + seq
    if seq % 2 == 0:
        body = _b24_body(deal_id)
        head = (
            "POST /hooks/bitrix24/b24 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nUser-Agent: Bitrix24 Webhook Engine\r\n"
        )
    else:
        body = _pd_body(deal_id)
        head = (
            "POST /hooks/pipedrive/pd HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: {_PD_AUTH}\r\nUser-Agent: Pipedrive Webhooks\r\n"
        )
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


class _Conn:
    """A minimal keep-alive HTTP/1.1 client: cheap enough to leave the CPU to the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""

    def _open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def post(self, raw: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):
            reused = self.sock is not None
            if self.sock is None:
                self.sock = self._open()
            try:
                self.sock.sendall(raw)
                return self._read()
            except (ConnectionError, BrokenPipeError) as exc:
                self.close()
                if not reused or attempt:  # a fresh connection failed: a real error
                    raise exc
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
            self.close()
        return status, body


def load_worker(port: int, rate: float, seconds: float, threads: int, deal_base: int) -> dict[str, object]:
    """Send ``rate``/s for ``seconds`` from ``threads`` threads; answer the figures as a dict."""
    total = max(1, int(rate * seconds))
    lock = threading.Lock()
    next_slot = [0]
    latencies: list[float] = []
    lags: list[float] = []
    errors: dict[str, int] = {}
    counts = {"sent": 0, "accepted": 0, "duplicates": 0}
    first_last = [float("inf"), 0.0]
    start = time.perf_counter() + 0.2

    def run() -> None:
        conn = _Conn(port)
        mine_lat: list[float] = []
        mine_lag: list[float] = []
        while True:
            with lock:
                slot = next_slot[0]
                next_slot[0] += 1
            if slot >= total:
                break
            due = start + slot / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            raw = _request(slot, deal_base)
            t0 = time.perf_counter()
            try:
                status, body = conn.post(raw)
                kind = (
                    "accepted"
                    if status == 200 and b'"stored":1' in body
                    else ("duplicates" if status == 200 else f"http_{status}")
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
                    errors[kind] = errors.get(kind, 0) + 1
                first_last[0] = min(first_last[0], t0)
                first_last[1] = max(first_last[1], t1)
            if kind == "accepted":
                mine_lat.append(t1 - t0)
            mine_lag.append(t0 - due)
        conn.close()
        with lock:
            latencies.extend(mine_lat)
            lags.extend(mine_lag)

    pool = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    cpu = os.times()
    return {
        **counts,
        "errors": errors,
        "latencies": latencies,
        "lags": lags,
        "first": first_last[0],
        "last": first_last[1],
        "cpu": cpu.user + cpu.system,
    }


# --- the servers ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _wait_up(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the intake exited with {proc.returncode}; see its log")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the intake did not come up")


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def _pids(server_group: int, database: str | None) -> list[int]:
    """The server's processes (its process group) and, on PostgreSQL, the backends serving ``database``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[2]) == server_group:
                found.append(int(entry.name))
            elif (
                database
                and (entry / "cmdline").read_bytes().startswith(b"postgres: ")
                and f" {database} ".encode() in (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            ):
                found.append(-int(entry.name))  # negative: a database backend
        except OSError:
            continue
    return found


@dataclass
class Step:
    shape: str
    offered: float
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    accepted_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    lag_p99_ms: float = 0.0  # how late the generator sent, p99: large means it could not keep the rate
    server_cpu_ms: float = 0.0  # CPU per accepted delivery: intake processes
    db_cpu_ms: float = 0.0  # ... PostgreSQL backends of the bench database
    gen_cpu_ms: float = 0.0  # ... the load generator


@dataclass
class ShapeResult:
    shape: str
    database: str
    server: str
    steps: list[Step] = field(default_factory=list)
    inbox_rows: int = 0
    distinct_keys: int = 0
    accepted_total: int = 0

    @property
    def verified(self) -> bool:
        return self.inbox_rows == self.accepted_total == self.distinct_keys


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _run_step(
    shape: str,
    port: int,
    rate: float,
    seconds: float,
    procs: int,
    threads: int,
    deal_base: int,
    server_group: int,
    database: str | None,
) -> Step:
    pids = _pids(server_group, database)
    server_pids, db_pids = [p for p in pids if p > 0], [-p for p in pids if p < 0]
    cpu_before = _cpu_of(server_pids), _cpu_of(db_pids)
    per_proc = rate / procs
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--load-worker",
                str(port),
                str(per_proc),
                str(seconds),
                str(threads),
                str(deal_base + i * 10_000_000),
            ],
            stdout=subprocess.PIPE,
        )
        for i in range(procs)
    ]
    parts = []
    for child in children:
        out, _ = child.communicate()
        parts.append(json.loads(out))
    step = Step(shape=shape, offered=rate)
    latencies: list[float] = []
    lags: list[float] = []
    first, last = min(p["first"] for p in parts), max(p["last"] for p in parts)
    for p in parts:
        step.sent += p["sent"]
        step.accepted += p["accepted"]
        step.duplicates += p["duplicates"]
        for k, v in p["errors"].items():
            step.errors[k] = step.errors.get(k, 0) + v
        latencies += p["latencies"]
        lags += p["lags"]
    step.seconds = max(1e-9, last - first)
    step.accepted_per_s = step.accepted / step.seconds
    step.p50_ms, step.p99_ms = _pct(latencies, 0.50) * 1000, _pct(latencies, 0.99) * 1000
    step.max_ms = max(latencies, default=float("nan")) * 1000
    step.lag_p99_ms = _pct(lags, 0.99) * 1000
    pids = _pids(server_group, database)  # backends opened during the step count too (from 0)
    server_now, db_now = [p for p in pids if p > 0], [-p for p in pids if p < 0]
    server_cpu = _cpu_of(server_now) - cpu_before[0]
    db_cpu = _cpu_of(db_now) - cpu_before[1]
    per = 1000 / max(1, step.accepted)
    step.server_cpu_ms, step.db_cpu_ms = server_cpu * per, db_cpu * per
    step.gen_cpu_ms = sum(p["cpu"] for p in parts) * per
    return step


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


def run_shape(
    shape: str,
    rates: list[float],
    seconds: float,
    *,
    pg: str,
    workers: int,
    procs: int,
    threads: int,
    log_level: str,
    workdir: Path,
    gunicorn_threads: int = 1,
) -> ShapeResult:
    from sqlalchemy.engine import make_url

    port = _free_port()
    if shape == "prod":
        _reset_postgres(pg)
        db = pg
    else:
        db = f"sqlite:///{workdir / 'intake-bench.db'}"
    config = workdir / f"{shape}.yaml"
    config.write_text(
        CONFIG.format(
            db=db,
            port=port,
            threads=8,
            log_level=log_level,
            b24_token=B24_TOKEN,
            pd_user=PD_USER,
            pd_password=PD_PASSWORD,
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONNECTOR_CONFIG": str(config)}
    # The schema first, so the server processes do not race to migrate it.
    subprocess.run(
        [sys.executable, "-m", "connector.cli", "init-db", "--config", str(config)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if shape == "prod":
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--backlog",
            "2048",
            "connector.wsgi:application()",
        ]
        server = f"gunicorn -w {workers} (sync workers)"
        if gunicorn_threads > 1:  # gthread workers: keep-alive and several requests per process
            argv[5:5] = ["--worker-class", "gthread", "--threads", str(gunicorn_threads)]
            server = f"gunicorn -w {workers} --threads {gunicorn_threads} (gthread workers)"
    else:
        argv = [sys.executable, "-m", "connector.cli", "run", "--config", str(config), "--roles", "intake"]
        server = "connector run --roles intake (waitress, 8 threads)"
    log = (workdir / f"{shape}-server.log").open("ab")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    result = ShapeResult(shape=shape, database=db.split(":")[0].split("+")[0], server=server)
    try:
        _wait_up(port, proc)
        for i, rate in enumerate(rates):
            step = _run_step(
                shape,
                port,
                rate,
                seconds,
                procs,
                threads,
                deal_base=1_000_000_000 * (i + 1),
                server_group=proc.pid,
                database=make_url(db).database if shape == "prod" else None,
            )
            result.steps.append(step)
            time.sleep(1.0)  # let the server drain before the next rate
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    result.accepted_total = sum(s.accepted for s in result.steps)
    result.inbox_rows, result.distinct_keys = _count_inbox(db)
    return result


def _print(results: list[ShapeResult]) -> None:
    print(
        f"{'shape':<9} {'offered/s':>9} {'sent':>7} {'accepted':>8} {'acc/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'gen lag p99':>11} {'CPU ms/delivery: intake+db+gen':>31}  errors"
    )
    for r in results:
        for s in r.steps:
            errs = ", ".join(f"{k}={v}" for k, v in s.errors.items()) or "0"
            if s.duplicates:
                errs += f" (duplicates {s.duplicates})"
            print(
                f"{s.shape:<9} {s.offered:>9.0f} {s.sent:>7} {s.accepted:>8} {s.accepted_per_s:>7.0f} "
                f"{s.p50_ms:>7.1f} {s.p99_ms:>7.1f} {s.max_ms:>7.1f} {s.lag_p99_ms:>9.1f}ms "
                f"{s.server_cpu_ms:>12.2f} +{s.db_cpu_ms:>5.2f} +{s.gen_cpu_ms:>5.2f} = "
                f"{s.server_cpu_ms + s.db_cpu_ms + s.gen_cpu_ms:>5.2f}  {errs}"
            )
        ok = "OK" if r.verified else "MISMATCH"
        print(
            f"{'':<9} {r.shape}: {r.server} on {r.database}; inbox rows {r.inbox_rows}, distinct dedup keys "
            f"{r.distinct_keys}, accepted {r.accepted_total}: {ok}"
        )
    prod = [s for r in results if r.shape == "prod" for s in r.steps]
    best = [s for s in prod if s.p99_ms <= TARGET_P99_MS and not s.errors]
    top = max(best, key=lambda s: s.accepted_per_s, default=None)
    met = top is not None and top.accepted_per_s >= TARGET_RATE
    peak = max(prod, key=lambda s: s.accepted_per_s, default=None)
    shown = (
        f"{top.accepted_per_s:.0f} accepted/s at p99 {top.p99_ms:.1f} ms"
        if top
        else "no production step had p99 <= 25 ms without errors"
    )
    if peak is not None:
        shown += f"; peak {peak.accepted_per_s:.0f} accepted/s (p99 {peak.p99_ms:.0f} ms)"
    if prod:
        print(
            f"target: >= 2,000 accepted/s with p99 <= 25 ms (production shape) | measured: best {shown} | "
            f"{'MET' if met else 'MISSED'}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--load-worker":
        port, rate, seconds, threads, base = argv[1:6]
        print(json.dumps(load_worker(int(port), float(rate), float(seconds), int(threads), int(base))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="prod,embedded", help="prod, embedded or both (comma-separated)")
    parser.add_argument("--rates", default="250,500,1000,2000,3000", help="deliveries per second, in order")
    parser.add_argument("--seconds", type=float, default=4.0, help="how long each rate is held")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL for the production shape (emptied!)")
    parser.add_argument(
        "--workers", type=int, default=5, help="gunicorn workers (production shape; the documented 2 x cores + 1)"
    )
    parser.add_argument(
        "--gunicorn-threads",
        type=int,
        default=1,
        help="> 1: gthread workers with this many threads each (default: sync workers, as documented)",
    )
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--threads", type=int, default=16, help="connections (threads) per generator process")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="the intake's logging level (INFO is the default config)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="connector-bench-intake-"))
    results = []
    for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        if shape not in ("prod", "embedded"):
            parser.error(f"unknown shape {shape!r}")
        results.append(
            run_shape(
                shape,
                rates,
                args.seconds,
                pg=args.pg,
                workers=args.workers,
                procs=args.procs,
                threads=args.threads,
                log_level=args.log_level,
                workdir=workdir,
                gunicorn_threads=args.gunicorn_threads,
            )
        )
    print(
        f"# bench/intake.py {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"generator {args.procs} processes x {args.threads} connections, {args.seconds:g} s per rate, "
        f"logs in {workdir}"
    )
    _print(results)
    if args.json:
        print(json.dumps([asdict(r) | {"verified": r.verified} for r in results], indent=2))
    return 0 if all(r.verified for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
