"""Percentile harness shared by every benchmark.

pytest-benchmark reports min/median/mean; trading needs tails. `measure` times an
operation many times with the monotonic nanosecond clock and reports p50/p99/p99.9.

Operations far below a microsecond cannot be timed one by one (the clock read costs
~20-40 ns), so `measure` times groups of `inner` calls and divides: each sample is the
mean of one small group, and the percentiles are over the groups. `inner=1` times
single events (what tick-to-trade uses).
"""
from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Result:
    name: str
    unit: str
    p50: float
    p99: float
    p999: float
    max: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def percentiles(name: str, samples_ns: np.ndarray, unit: str = "ns") -> Result:
    return Result(
        name=name,
        unit=unit,
        p50=float(np.percentile(samples_ns, 50)),
        p99=float(np.percentile(samples_ns, 99)),
        p999=float(np.percentile(samples_ns, 99.9)),
        max=float(samples_ns.max()),
        n=int(samples_ns.size),
    )


def measure(name: str, op: Callable[[], object], samples: int = 20_000, inner: int = 16,
            warmup: int = 2_000) -> Result:
    """Time `op` `samples` times (each sample the mean of `inner` back-to-back calls)."""
    clock = time.perf_counter_ns
    for _ in range(warmup):
        op()
    out = np.empty(samples, dtype=np.float64)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a GC pause is not the operation's latency
    try:
        if inner == 1:
            for i in range(samples):
                t0 = clock()
                op()
                out[i] = clock() - t0
        else:
            rng = range(inner)
            for i in range(samples):
                t0 = clock()
                for _ in rng:
                    op()
                out[i] = (clock() - t0) / inner
    finally:
        if gc_was_enabled:
            gc.enable()
    return percentiles(name, out)


def measure_each(name: str, ops: Callable[[int], object], count: int, warmup: int = 1_000) -> Result:
    """Time `ops(i)` for i in range(count), one event per sample (no batching)."""
    clock = time.perf_counter_ns
    for i in range(min(warmup, count)):
        ops(i)
    out = np.empty(count, dtype=np.float64)
    gc.disable()
    try:
        for i in range(count):
            t0 = clock()
            ops(i)
            out[i] = clock() - t0
    finally:
        gc.enable()
    return percentiles(name, out)


def throughput(name: str, run: Callable[[], int], repeat: int = 5) -> dict:
    """Run a batch `repeat` times; `run` returns the number of events it processed."""
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        n = run()
        dt = time.perf_counter_ns() - t0
        rate = n / (dt / 1e9)
        best = rate if best is None or rate > best else best
    return {"name": name, "unit": "events/s", "best": best}


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"loadavg {one:.2f}/{five:.2f} on {os.cpu_count()} cpus"


def report(rows: list[tuple[Result, Result | None]]) -> str:
    """A table of ours vs baseline, ratio = baseline p50 / ours p50."""
    lines = [f"{'benchmark':32} {'p50':>10} {'p99':>10} {'p99.9':>10}  {'baseline p50':>13} {'ratio':>7}"]
    for ours, base in rows:
        ratio = f"{base.p50 / ours.p50:7.1f}" if base else "      -"
        bp50 = f"{base.p50:13.0f}" if base else f"{'-':>13}"
        lines.append(f"{ours.name:32} {ours.p50:10.0f} {ours.p99:10.0f} {ours.p999:10.0f}  {bp50} {ratio}")
    lines.append(machine_load())
    return "\n".join(lines)
