"""Bulk read: 10,000 deals from the Bitrix24 simulator with the connector's adapter and with the
``fast-bitrix24`` library (``pip install -e '.[bench]'``), in the same run, alternating rounds.

Both clients get the portal's documented limit by default (the simulator's bucket and each
client's own throttle: ``--rate`` 2 hits/s, threshold ``--burst`` 50; a ``batch`` of up to
50 commands is one hit, as Bitrix24's performance guide has it), the same fields
(``DEAL_SELECT``, the adapter's) and start each round with an empty bucket.

* ours: ``Bitrix24Adapter(...).changed_deals(since=None)``: the poller's full read (order
  DATE_MODIFY, ID): the first page counts it, then one ``batch`` per range of 2,450 deals,
  sent together (up to 8 requests in flight): the page at the range's offset and keyset
  pages chained on it, 50 in all; the ranges are joined by key (a range whose rows stop
  short of the next range's first row reads on by key: one more request), waiting on the
  shared throttle, never refused, yielded in order and turned into ``Deal`` objects;
* ours, the same read without the ``Deal`` objects: ``read_deals(client, None)``, the rows as
  the portal sent them (what fast-bitrix24 hands back), to tell the read from the mapping;
* ours, same order as fast-bitrix24: ``client.list_all("crm.deal.list", order ID)``: the
  first page for ``total``, then ``batch`` calls of up to 50 ``start`` offsets, up to 8 in
  flight at once;
* fast-bitrix24 ``Bitrix(webhook).get_all("crm.deal.list", params={"select": …})``: one
  request for ``total``, then parallel ``batch`` calls of 50 page reads each.

fast-bitrix24 takes any URL with a scheme, host and path: the simulator's loopback
``http://127.0.0.1:PORT/rest/1/simcode/`` works as is (``ssl=False`` only skips a
certificate check that plain http does not make).

The simulator answers list pages from a sorted index of its deals kept while no deal
changes (``Bitrix24Simulator._query_deals``; it used to render, filter and sort all 10,000
deals for every page, which swamped both clients' times and made every keyset page, a new
filter each, cost ~0.26 s). The same simulator serves both clients; the bench only counts
HTTP requests.

    python bench/bulk_read.py                      # 10,000 deals, 3 rounds, at 0 and at 50 ms per request
    python bench/bulk_read.py --deals 10000 --rounds 5 --json
    python bench/bulk_read.py --latency 0          # loopback only

Target: ours no slower than fast-bitrix24 (ratio ours / fast-bitrix24 <= 1.0).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.bitrix24.adapter import Bitrix24Adapter  # noqa: E402
from adapters.bitrix24.keyset import read_deals  # noqa: E402
from adapters.bitrix24.mapping import DEAL_SELECT  # noqa: E402
from adapters.bitrix24.settings import Bitrix24Settings  # noqa: E402
from bench.machine import Snapshot  # noqa: E402
from simulators import bitrix24 as b24sim  # noqa: E402


class BenchSimulator(b24sim.Bitrix24Simulator):
    """The simulator; ``http_requests`` counts every hit (refused ones included)."""


@dataclass
class Timing:
    client: str
    seconds: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    refusals: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def _drain(sim: BenchSimulator) -> None:
    while sim.bucket.level > 0.01:
        time.sleep(min(1.0, sim.bucket.level / sim.bucket.rate + 0.01))


def _ours_adapter(url: str, rate: float, burst: float) -> int:
    adapter = Bitrix24Adapter(
        "b24",
        Bitrix24Settings(
            webhook_url=url, application_token="bench-app-token-123", rate=rate, burst=burst, timeout=60.0
        ),
    )
    try:
        deals = list(adapter.changed_deals(since=None))
        return len({d.id for d in deals})
    finally:
        adapter.close()


def _ours_rows(url: str, rate: float, burst: float) -> int:
    adapter = Bitrix24Adapter(
        "b24",
        Bitrix24Settings(
            webhook_url=url, application_token="bench-app-token-123", rate=rate, burst=burst, timeout=60.0
        ),
    )
    try:
        rows = list(read_deals(adapter.client, None, crm="b24"))
        return len({r["ID"] for r in rows})
    finally:
        adapter.close()


def _ours_list_all(url: str, rate: float, burst: float) -> int:
    adapter = Bitrix24Adapter(
        "b24",
        Bitrix24Settings(
            webhook_url=url, application_token="bench-app-token-123", rate=rate, burst=burst, timeout=60.0
        ),
    )
    try:
        rows = list(adapter.client.list_all("crm.deal.list", {"order": {"ID": "ASC"}, "select": DEAL_SELECT}))
        return len({r["ID"] for r in rows})
    finally:
        adapter.close()


def _fast(url: str, rate: float, burst: float) -> int:
    from fast_bitrix24 import Bitrix

    b = Bitrix(url, verbose=False, requests_per_second=rate, request_pool_size=int(burst), ssl=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = b.get_all("crm.deal.list", params={"select": list(DEAL_SELECT)})
    return len({r["ID"] for r in rows})


CLIENTS = {
    "ours: adapter.changed_deals": _ours_adapter,
    "ours: keyset rows, no Deal": _ours_rows,
    "ours: client.list_all (order ID)": _ours_list_all,
    "fast-bitrix24 get_all": _fast,
}


def run(
    deals: int, rounds: int, rate: float, burst: float, latency: float = 0.0
) -> tuple[list[Timing], dict[str, Any]]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("fast_bitrix24").setLevel(logging.WARNING)
    import fast_bitrix24  # noqa: F401  (imported before the clock starts, like requests for ours)

    sim = BenchSimulator(rate=rate, burst=burst)
    sim.faults.latency = (latency, latency)  # per HTTP request (a batch once), like a network round trip
    for i in range(deals):
        sim.add_deal(
            {
                "TITLE": f"Заявка {i}",
                "CATEGORY_ID": "1",
                "STAGE_ID": "C1:NEW",
                "ASSIGNED_BY_ID": "1",
                "OPPORTUNITY": 1000 + i,
                "UF_CRM_ADDRESS": f"Казань, ул. Мира, {i}",
            }
        )
    server = sim.serve()
    url = f"{server.base_url}{sim.webhook_base}"
    timings = {name: Timing(name) for name in CLIENTS}
    try:
        for r in range(rounds):
            order = list(CLIENTS) if r % 2 == 0 else list(reversed(CLIENTS))
            for name in order:
                _drain(sim)
                requests_before, refused_before = sim.http_requests, sim.refusals
                t0 = time.perf_counter()
                rows = CLIENTS[name](url, rate, burst)
                elapsed = time.perf_counter() - t0
                t = timings[name]
                t.seconds.append(elapsed)
                t.rows.append(rows)
                t.requests.append(sim.http_requests - requests_before)  # refused ones included
                t.refusals.append(sim.refusals - refused_before)
    finally:
        server.stop()
        sim.close()
    return list(timings.values()), {"deals": deals, "rounds": rounds, "rate": rate, "burst": burst, "latency": latency}


def _report(timings: list[Timing], setup: dict[str, Any]) -> tuple[bool, bool]:
    print(
        f"\n## latency {setup['latency'] * 1000:g} ms per HTTP request: {setup['deals']} deals, {setup['rounds']} "
        f"rounds alternating, rate {setup['rate']:g}/s burst {setup['burst']:g}, indexed simulator"
    )
    print(f"{'client':<34} {'median s':>9} {'rounds (s)':<28} {'rows':>6} {'requests':>8} {'refusals':>8}")
    for t in timings:
        rounds = ", ".join(f"{s:.2f}" for s in t.seconds)
        print(
            f"{t.client:<34} {t.median:>9.2f} {rounds:<28} {min(t.rows):>6} {max(t.requests):>8} {sum(t.refusals):>8}"
        )
    fast = timings[-1].median
    ok = True
    for t in timings[:-1]:
        ratio = t.median / fast
        ok = ok and ratio <= 1.0
        print(f"ratio {t.client} / fast-bitrix24 = {ratio:.2f}")
    complete = all(r == setup["deals"] for t in timings for r in t.rows)
    print(
        f"target: ours no slower than fast-bitrix24 (ratio <= 1.00) | {'MET' if ok else 'MISSED'}"
        f"{'' if complete else ' | WARNING: a client did not read every deal'}"
    )
    return ok, complete


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=2.0, help="hits/s for the simulator and both clients")
    parser.add_argument("--burst", type=float, default=50.0, help="bucket threshold, the same for all")
    parser.add_argument(
        "--latency",
        default="0,0.05",
        help="seconds the simulator adds to every HTTP request (a network round trip); "
        "comma-separated for several runs (default: loopback as is, then 50 ms)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    machine = Snapshot()
    print(f"# bench/bulk_read.py {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    verdicts = []
    dump = []
    for latency in [float(x) for x in args.latency.split(",") if x.strip()]:
        timings, setup = run(args.deals, args.rounds, args.rate, args.burst, latency)
        verdicts.append(_report(timings, setup))
        dump.append({"setup": setup, "timings": [asdict(t) | {"median": t.median} for t in timings]})
    print(f"# {machine.line()}")
    if args.json:
        print(json.dumps(dump, indent=2))
    return 0 if all(ok and complete for ok, complete in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
