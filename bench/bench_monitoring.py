"""Cost on the calling (event-loop) thread of monitoring and storage: what the hot
path pays to record a latency sample, journal an order event, capture a quote and
log a line, each against the obvious synchronous alternative measured in the same run.

Rows (ours | baseline):
  latency sample        LatencyRecorder.record (NumPy ring)  | prometheus_client Histogram.observe
  journal append        Journal.append (writer thread)       | encode + os.write per record (no fsync)
  journal append        (the same measurement)               | encode + os.write + fdatasync per record
  capture quote row     MarketDataCapture.record             | list.append of the row tuple
  log line              logger.info through the QueueHandler | logger.info to a FileHandler
  /metrics render       EngineMetrics.render (~150 series)   | -

Run: python -m bench.bench_monitoring [--quick]     or     pytest bench/bench_monitoring.py
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

from bench.harness import Result, measure, report
from engine import logs
from engine.capture import MarketDataCapture
from engine.journal import Journal
from engine.metrics import EngineMetrics, LatencyRecorder

PAYLOAD = {"cl_ord_id": 123456789, "symbol": "AAPL", "side": 0, "qty": 100, "price": 1234500,
           "tif": 0, "ord_type": 1}


def _latency_rows(samples: int) -> tuple[Result, Result]:
    from prometheus_client import CollectorRegistry, Histogram

    rec = LatencyRecorder("tick_to_order", 1 << 16)
    ours = measure("LatencyRecorder.record", lambda: rec.record(12_345), samples=samples)
    hist = Histogram("bench_seconds", "bench", registry=CollectorRegistry(),
                     buckets=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0))
    base = measure("prometheus Histogram.observe", lambda: hist.observe(12.345e-6), samples=samples)
    return ours, base


def _journal_rows(samples: int, tmp: Path) -> list[tuple[Result, Result]]:
    j = Journal(tmp / "journal", fsync_interval_ms=5)
    try:
        ours = measure("Journal.append", lambda: j.append("send", PAYLOAD), samples=samples, inner=4)
        j.sync()
    finally:
        j.close()
    fd = os.open(tmp / "naive.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    prev = ["0" * 64]
    seq = itertools.count(1)

    def naive(sync: bool):
        body = orjson.dumps({"seq": next(seq), "kind": "send", "prev": prev[0], "payload": PAYLOAD})
        prev[0] = hashlib.sha256(body).hexdigest()
        os.write(fd, body + b"\t" + prev[0].encode() + b"\n")
        if sync:
            os.fdatasync(fd)

    try:
        base = measure("encode + os.write per record", lambda: naive(False), samples=samples, inner=4)
        durable = measure("encode + write + fdatasync", lambda: naive(True), samples=max(200, samples // 20),
                          inner=1, warmup=20)
    finally:
        os.close(fd)
    return [(ours, base), (ours, durable)]


def _capture_rows(samples: int, tmp: Path) -> tuple[Result, Result]:
    cap = MarketDataCapture(tmp / "capture", "quotes", ["AAPL"], batch_rows=1 << 15)
    ts = itertools.count(1_700_000_000_000_000_000)
    try:
        ours = measure("MarketDataCapture.record",
                       lambda: cap.record(next(ts), 0, 0, 1234500, 100, 1234600, 200), samples=samples)
    finally:
        cap.close()
    rows: list[tuple] = []
    base = measure("list.append(row tuple)", lambda: rows.append((next(ts), 0, 0, 1234500, 100, 1234600, 200)),
                   samples=samples)
    return ours, base


def _log_rows(samples: int, tmp: Path) -> tuple[Result, Result]:
    handle = logs.setup_logging(logs.LogConfig(directory=tmp / "logs", queue_size=1_000_000))
    lg = logging.getLogger("engine.bench")
    try:
        ours = measure("logger.info via QueueHandler",
                       lambda: lg.info("order %d sent", 42, extra={"symbol": "AAPL"}),
                       samples=samples, inner=4)
    finally:
        handle.stop()
    direct = logging.getLogger("bench.direct")
    direct.propagate = False
    fh = logging.FileHandler(tmp / "direct.log")
    fh.setFormatter(logs.JsonFormatter())
    direct.addHandler(fh)
    direct.setLevel(logging.INFO)
    try:
        base = measure("logger.info to a FileHandler",
                       lambda: direct.info("order %d sent", 42, extra={"symbol": "AAPL"}),
                       samples=samples, inner=4)
    finally:
        direct.removeHandler(fh)
        fh.close()
    return ours, base


def _render_row(samples: int) -> tuple[Result, None]:
    em = EngineMetrics(process_collector=False)
    syms = [f"S{i:02d}" for i in range(20)]
    em.update({"engine_orders_sent_total": dict.fromkeys(syms, 10), "engine_fills_total": dict.fromkeys(syms, 5),
               "engine_position_lots": dict.fromkeys(syms, 3), "engine_position_limit_lots": dict.fromkeys(syms, 9),
               "engine_concentration_ratio": dict.fromkeys(syms, 0.1),
               "engine_quote_staleness_seconds": dict.fromkeys(syms, 0.2), "engine_daily_pnl": 1.0})
    em.observe_ns("engine_tick_to_order_seconds", np.arange(1000) * 1000)
    return measure("EngineMetrics.render", em.render, samples=samples, inner=1, warmup=20), None


def measure_all(quick: bool = False) -> list[tuple[Result, Result | None]]:
    samples = 2_000 if quick else 20_000
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        return [
            _latency_rows(samples),
            *_journal_rows(samples, tmp),
            _capture_rows(samples, tmp),
            _log_rows(samples, tmp),
            _render_row(200 if quick else 2_000),
        ]


def _entry(ours: Result, base: Result | None) -> dict:
    d = ours.as_dict()
    d["baseline"] = base.as_dict() if base else None
    d["ratio"] = (base.p50 / ours.p50) if base else None
    return d


def run(quick: bool = False) -> list[dict]:
    return [_entry(o, b) for o, b in measure_all(quick)]


# ---------------------------------------------------------------- pytest-benchmark view


def test_bench_latency_record(benchmark):
    rec = LatencyRecorder("tick_to_order", 1 << 16)
    benchmark(rec.record, 12_345)


def test_bench_journal_append(benchmark, tmp_path):
    with Journal(tmp_path / "j") as j:
        benchmark(j.append, "send", PAYLOAD)


def test_bench_capture_record(benchmark, tmp_path):
    with MarketDataCapture(tmp_path, "quotes", ["AAPL"]) as cap:
        benchmark(cap.record, 1, 0, 0, 1234500, 100, 1234600, 200)


if __name__ == "__main__":
    print(report(measure_all("--quick" in sys.argv)))
