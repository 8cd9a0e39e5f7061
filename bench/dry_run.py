"""Dry-run speed: 100,000 generated deal events through the full ISP regulations catalogue.

Generates a year of ISP connection applications (``connector.demo.isp_history.isp_year``,
``--deals`` 15,000 gives about 100,000 events) and replays them with
``connector.dryrun.replay.Replay`` through ``examples/isp-field-service.yaml`` (every rule and
deadline of it; B24_WEBHOOK_URL and B24_APP_TOKEN are set to dummies, nothing is called),
as ``connector dry-run`` does. Prints the events, the deadline events they caused, the
would-be actions, the replay's time and events/s, and the peak memory (tracemalloc's peak of
Python allocations during generation + replay, and the process's max RSS).

    python bench/dry_run.py                       # ~100k events
    python bench/dry_run.py --deals 3000          # quicker
    python bench/dry_run.py --profile             # and the top costs (cProfile, cumulative and own time)

Target: the replay of 100,000 events in <= 10 s.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import Snapshot  # noqa: E402

TARGET_SECONDS = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=15_000, help="applications to generate (15,000 ~ 100k events)")
    parser.add_argument("--config", default=str(ROOT / "examples" / "isp-field-service.yaml"))
    parser.add_argument("--year", type=int, default=2026)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also trace Python allocations for their peak (slows the replay ~2x: time is then not "
        "the plain speed); max RSS is always shown",
    )
    parser.add_argument("--profile", action="store_true", help="profile the replay with cProfile and print the top")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    machine = Snapshot()

    os.environ.setdefault("B24_WEBHOOK_URL", "https://bench.invalid/rest/1/dummy/")
    os.environ.setdefault("B24_APP_TOKEN", "bench-dummy-token")
    from connector.config import load_config
    from connector.demo.isp_history import isp_year
    from connector.dryrun.replay import Replay
    from connector.runtime import build_calendar

    config = load_config(args.config)
    calendar = build_calendar(config)
    traced = args.tracemalloc and not args.profile
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if traced:
        tracemalloc.start()
    t0 = time.perf_counter()
    items = list(isp_year(args.year, deals=args.deals, seed=args.seed, calendar=calendar))
    generated = time.perf_counter() - t0
    replay = Replay(config, calendar)
    profiler = cProfile.Profile() if args.profile else None
    t1, c1 = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    result = replay.run(items)
    if profiler is not None:
        profiler.disable()
    replayed = time.perf_counter() - t1
    # CPU time of this (single-threaded) process: on a machine shared with other work the wall
    # time also counts waiting for a core, this does not, so before/after comparisons stay fair.
    replay_cpu = time.process_time() - c1
    peak = tracemalloc.get_traced_memory()[1] if traced else None
    if traced:
        tracemalloc.stop()
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    figures = {
        "deals": args.deals,
        "events": result.events,
        "deadline_events": result.deadline_events,
        "actions": len(result.outcomes),
        "rules": len(config.rules),
        "deadlines": len(config.deadlines),
        "generate_s": round(generated, 2),
        "replay_s": round(replayed, 2),
        "replay_cpu_s": round(replay_cpu, 2),
        "events_per_s": round(result.events / replayed),
        "peak_traced_mb": round(peak / 2**20, 1) if peak else None,
        "max_rss_mb": round(maxrss_mb, 1),
        "max_rss_before_mb": round(rss_before_mb, 1),
        "tracemalloc": traced,
        "profiled": bool(profiler),
    }
    note = (
        " (under cProfile: slower than plain)"
        if profiler
        else (" (under tracemalloc: slower than plain)" if traced else "")
    )
    print(
        f"# bench/dry_run.py {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {Path(args.config).name}, "
        f"{figures['rules']} rules, {figures['deadlines']} deadlines{note}"
    )
    print(f"# {machine.line()}")
    print(f"  deals generated                {args.deals:>10,}   in {generated:.1f} s")
    print(f"  events replayed                {result.events:>10,}   (+{result.deadline_events:,} deadline events)")
    print(f"  would-be actions               {len(result.outcomes):>10,}")
    print(f"  replay time                    {replayed:>10.2f} s")
    print(f"  replay CPU time                {replay_cpu:>10.2f} s  (this process only)")
    print(f"  events/s                       {figures['events_per_s']:>10,}")
    if peak is not None:
        print(f"  peak traced memory             {figures['peak_traced_mb']:>10} MB  (generation + replay)")
    print(
        f"  max RSS                        {figures['max_rss_mb']:>10} MB  "
        f"({rss_before_mb:.0f} MB after imports and config, before generating)"
    )
    scaled = replayed * 100_000 / max(1, result.events)
    met = scaled <= TARGET_SECONDS
    print(
        f"target: 100,000 events in <= {TARGET_SECONDS:g} s | measured: {replayed:.2f} s for {result.events:,} "
        f"({scaled:.2f} s per 100,000) | {'MET' if met else 'MISSED'}"
    )
    if profiler is not None:
        for key in ("cumulative", "tottime"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(args.top)
            text = out.getvalue()
            start = text.find("   ncalls")
            print(f"\n-- top {args.top} by {key} --")
            print(text[start:].replace(str(ROOT) + "/", ""))
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
