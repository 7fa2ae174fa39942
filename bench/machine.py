"""How fast this machine runs Python right now, printed first by the benchmarks whose figures
are times: the same code measured on two days differs as much as the machines (or their
neighbours) do, and this figure says by how much.

    python bench/machine.py
"""

from __future__ import annotations

import os
import time

LOOPS = 10_000_000


def loop_seconds() -> float:
    """One core's time for a plain Python loop of ten million additions (best of three)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(LOOPS):
            total += number
        best = min(best, time.perf_counter() - started)
    return best


def describe() -> str:
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} cores, a 10M-addition Python loop takes "
        f"{loop_seconds():.2f} s, load average {load}"
    )


if __name__ == "__main__":
    print(describe())
