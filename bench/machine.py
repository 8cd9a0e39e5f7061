"""What every bench prints beside its figures: how fast this machine's CPU is right now, and how busy.

Figures from different machines, or from one machine shared with other work, are only
comparable next to these two: the calibration (the best time of a fixed pure-Python loop,
the kind of work the connector does) and the load average when the figures were taken.
"""

from __future__ import annotations

import os
import time

CALIBRATION_LOOP = 5_000_000  # iterations of the fixed loop
CALIBRATION_ROUNDS = 3  # the best of these counts: the least disturbed by other work


def _loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i ^ (i >> 3)
    return total


def calibration_ms(rounds: int = CALIBRATION_ROUNDS) -> float:
    """Milliseconds of the fixed pure-Python loop on one core, the best of ``rounds``."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        _loop(CALIBRATION_LOOP)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` shows them ("n/a" where the OS has none)."""
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def load_1min() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def machine_line(calibration: float | None = None, load_before: str | None = None) -> str:
    """One line for a bench's header: CPUs, the calibration figure and the load average.

    ``load_before``: the load average when the bench began (``load_average()``), shown beside
    the one now, for a bench that prints its header after its run.
    """
    ms = calibration_ms() if calibration is None else calibration
    load = (
        f"load average {load_average()}"
        if load_before is None
        else (f"load average {load_before} before, {load_average()} after")
    )
    return (
        f"machine: {os.cpu_count()} CPUs; calibration {ms:.0f} ms "
        f"(best of {CALIBRATION_ROUNDS} runs of a {CALIBRATION_LOOP:,}-iteration pure-Python loop; "
        f"lower is faster); {load}"
    )


class Snapshot:
    """The calibration and load average taken when a bench starts, printed with its results."""

    def __init__(self) -> None:
        self.load_before = load_average()
        self.calibration = calibration_ms()

    def line(self) -> str:
        return machine_line(self.calibration, self.load_before)


def gunicorn_without_control_socket() -> list[str]:
    """gunicorn's flag to open no control socket, where it has one (``--no-control-socket``).

    By default gunicorn (24+) listens on a control socket at one shared path in the home
    directory; runs side by side (benches, tests, another helper's) would fight over it.
    """
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:
        return []
    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []
