"""Backtest replay throughput (engine.backtest + core_ext.replay), against the same run
driven event by event from Python (engine.backtest.replay_python: StrategyHost.book_changed,
Portfolio.on_quote, RiskKernel.set_reference_price, SimExecution hooks -- what a paper
runtime does per market-data event), measured in the same run.

Data: the real Binance BTCUSDT quotes (../shared/data/quotes.csv, 9,999 quotes, ~26k
book rows) looped end to end (timestamps shifted, each loop opening with a book
snapshot) to 1,000,000 quote events (200,000 with --quick). Strategy: a trivial Python
strategy (on_quote counts the quotes: one Python callback per quote, which is every
event of this file). Everything else is the full backtest stack of the default config
(moving-average limits, fill model, latency, kernel, risk policy, kill switch, 1 s
event-time timer with the equity sample, VaR sampling and order-manager timeouts).

Entries (bench/harness.py format, see run()):

* ``backtest_quotes`` -- unit ``events/s``. The events are replayed in chunks of 1,024
  events (``Replay.run(events, start, stop)``, the chunk timed with perf_counter_ns);
  each chunk gives one throughput sample. p50 is the median chunk throughput; because
  more is better here, p99 / p999 / max are the *slow* tail: the 1st / 0.1th
  percentile and the minimum of the chunk throughputs. ``ratio`` is the speed-up
  ours_p50 / baseline_p50 (> 1: faster than the Python per-event path).
  ``throughput`` is the whole-run figure (all events / replay time, best of 3).
* ``backtest_quotes per-event`` -- unit ``ns/event``: the same chunk timings as ns per
  event (p50/p99/p999/max of the chunks); ``ratio`` = baseline_p50 / ours_p50.

For reference, NautilusTrader's backtest manages about 0.1 M quote events/s on this
machine with this data (not measured here: not installed).

Run: ``python -m bench.bench_backtest [--quick]``; pytest-benchmark view:
``pytest bench/bench_backtest.py --benchmark-only``.
"""
from __future__ import annotations

import gc
import sys
import time
from dataclasses import replace
from functools import cache

import numpy as np

from bench.harness import Result, machine_load, percentiles, report
from core_ext.replay import REPLAY_BOOK_SNAPSHOT, REPLAY_FLAG_END
from engine.backtest import load_inputs, prepare_backtest, replay_python
from engine.strategy import Strategy
from tests.conftest import SHARED_DATA

CHUNK = 1024            # events per timed chunk


class CountQuotes(Strategy):
    """The trivial strategy: one Python call per quote, nothing else."""

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.quotes = 0

    def on_quote(self, quote) -> None:
        self.quotes += 1


@cache
def _base():
    path = SHARED_DATA / "quotes.csv"
    if not path.is_file():
        raise SystemExit(f"bench_backtest needs {path} (the shared market data beside the repo)")
    return load_inputs(None, path)


def looped_quotes(n_events: int):
    """(config, TickData) of quotes.csv looped to at least n_events quote events."""
    cfg, datas = _base()
    d = datas[0]
    ev = d.events
    reps = -(-n_events // d.n_events)
    span = int(ev["ts_ns"][-1] - ev["ts_ns"][0]) + 1_000_000
    big = np.concatenate([ev] * reps)
    big["ts_ns"] += np.repeat(np.arange(reps, dtype=np.int64) * span, ev.size)
    # each loop opens with a snapshot row, so the book is exactly the quote again
    big["kind"][np.arange(1, reps) * ev.size] = REPLAY_BOOK_SNAPSHOT
    return cfg, replace(d, events=big, lines=np.tile(d.lines, reps))


def _chunk_bounds(events: np.ndarray) -> list[tuple[int, int, int]]:
    """(start row, stop row, events) of consecutive chunks of CHUNK events."""
    ends = np.flatnonzero(events["flags"] & REPLAY_FLAG_END) + 1
    out = []
    start = 0
    for k in range(CHUNK - 1, ends.size, CHUNK):
        stop = int(ends[k])
        out.append((start, stop, CHUNK))
        start = stop
    return out


def measure_compiled(n_events: int) -> tuple[np.ndarray, float, int]:
    """Per-chunk ns per event, and the whole-run events/s (this run's chunks summed)."""
    cfg, data = looped_quotes(n_events)
    strat = CountQuotes()
    session = prepare_backtest(cfg, data, strategy=strat)
    session.start()
    replay, events = session.replay, session.events
    bounds = _chunk_bounds(events)
    out = np.empty(len(bounds), dtype=np.float64)
    clock = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i, (a, b, k) in enumerate(bounds):
            t0 = clock()
            replay.run(events, a, b)
            out[i] = (clock() - t0) / k
    finally:
        if gc_was:
            gc.enable()
    total = float(out.sum() * CHUNK)
    n = len(bounds) * CHUNK
    assert strat.quotes == n, (strat.quotes, n)      # one Python callback per quote event
    return out, n / (total / 1e9), n


def throughput_compiled(n_events: int, repeat: int = 3) -> float:
    cfg, data = looped_quotes(n_events)
    best = 0.0
    for _ in range(repeat):
        session = prepare_backtest(cfg, data, strategy=CountQuotes())
        session.run()
        best = max(best, session.n_events / session.replay_seconds)
    return best


def measure_python(n_events: int) -> tuple[np.ndarray, float]:
    cfg, data = looped_quotes(n_events)
    times: list[int] = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        replay_python(cfg, data, strategy=CountQuotes(), chunk_events=CHUNK, chunk_times=times)
    finally:
        if gc_was:
            gc.enable()
    t = np.diff(np.asarray(times, dtype=np.float64)) / CHUNK
    return t, 1e9 / float(t.mean())


def _rate_result(name: str, ns_per_event: np.ndarray) -> Result:
    rate = 1e9 / ns_per_event
    return Result(name=name, unit="events/s", p50=float(np.percentile(rate, 50)),
                  p99=float(np.percentile(rate, 1)), p999=float(np.percentile(rate, 0.1)),
                  max=float(rate.min()), n=int(rate.size))


def run(quick: bool = False) -> list[dict]:
    n = 200_000 if quick else 1_000_000
    n_base = 50_000 if quick else 200_000
    ours_ns, _, _ = measure_compiled(n)
    whole = throughput_compiled(n, repeat=1 if quick else 3)
    base_ns, base_whole = measure_python(n_base)
    ours_rate = _rate_result("backtest_quotes", ours_ns)
    base_rate = _rate_result("python per-event quotes", base_ns)
    ours_pe = percentiles("backtest_quotes per-event", ours_ns, unit="ns/event")
    base_pe = percentiles("python per-event quotes", base_ns, unit="ns/event")
    entries = []
    e = ours_rate.as_dict()
    e["baseline"] = base_rate.as_dict()
    e["ratio"] = ours_rate.p50 / base_rate.p50       # speed-up (more events/s is better)
    e["throughput"] = whole
    e["baseline_throughput"] = base_whole
    e["events"] = n
    entries.append(e)
    e = ours_pe.as_dict()
    e["baseline"] = base_pe.as_dict()
    e["ratio"] = base_pe.p50 / ours_pe.p50
    entries.append(e)
    run.last_table = "\n".join([
        report([(ours_pe, base_pe)]),
        f"backtest_quotes: p50 {ours_rate.p50:,.0f} events/s per {CHUNK}-event chunk, "
        f"whole run {whole:,.0f} events/s over {n:,} events; "
        f"python per-event path p50 {base_rate.p50:,.0f} events/s; speed-up {e['ratio']:.1f}x",
        machine_load()])
    return entries


# ---------------------------------------------------------------- pytest-benchmark view

def test_backtest_quotes_compiled(benchmark):
    cfg, data = looped_quotes(100_000)

    def go():
        session = prepare_backtest(cfg, data, strategy=CountQuotes())
        session.run()
        return session.n_events
    assert benchmark.pedantic(go, rounds=3, iterations=1) == data.n_events


def test_backtest_quotes_python_baseline(benchmark):
    cfg, data = looped_quotes(20_000)
    r = benchmark.pedantic(lambda: replay_python(cfg, data, strategy=CountQuotes()), rounds=2,
                           iterations=1)
    assert r.events == data.n_events


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
    print(run.last_table)
