"""Tests of engine/metrics.py: the hot-path recorder, the metric store and its
Prometheus exposition, the collector (sources, recorders, lag timer, listeners)."""
from __future__ import annotations

import asyncio
import csv
import math

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import metrics as m
from gateway.loops import run as run_loop
from tests.conftest import shared_file


def parse(text: bytes) -> dict[str, dict[tuple, float]]:
    """Exposition -> {sample name: {sorted label items: value}} (through the official parser)."""
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


# ----------------------------------------------------------------- LatencyRecorder

def test_recorder_drains_in_order_and_only_once():
    rec = m.LatencyRecorder("tick_to_order", 8)
    for v in (5, 6, 7):
        rec.record(v)
    assert rec.drain().tolist() == [5, 6, 7]
    assert rec.drain().tolist() == []
    for v in range(10, 16):                       # wraps the ring (3 + 6 > 8)
        rec.record(v)
    assert rec.drain().tolist() == list(range(10, 16))
    assert rec.total == 9 and rec.dropped == 0


def test_recorder_overflow_keeps_newest_and_counts_dropped():
    rec = m.LatencyRecorder("tick_to_order", 4)
    for v in range(10):
        rec.record(v)
    assert rec.drain().tolist() == [6, 7, 8, 9]
    assert rec.dropped == 6


def test_recorder_record_since_is_nonnegative():
    import time
    rec = m.LatencyRecorder("order_to_ack", 4)
    rec.record_since(time.perf_counter_ns())
    (v,) = rec.drain().tolist()
    assert v >= 0


@pytest.mark.parametrize("cap", [0, 1, 3, 100])
def test_recorder_rejects_bad_capacity(cap):
    with pytest.raises(ValueError, match="power of two"):
        m.LatencyRecorder("tick_to_order", cap)


# ----------------------------------------------------------------- EngineMetrics

def test_update_and_exposition_round_trip_through_the_official_parser():
    em = m.EngineMetrics(stage="paper", version="1.2", process_collector=False)
    em.update({"engine_orders_sent_total": {"AAPL": 12, "MSFT": 3},
               "engine_order_rejects_total": 1,
               "engine_kill_switch_tripped": 0,
               "engine_daily_pnl": -12.5})
    got = parse(em.render())
    assert got["engine_orders_sent_total"] == {(("symbol", "AAPL"),): 12.0, (("symbol", "MSFT"),): 3.0}
    assert got["engine_order_rejects_total"] == {(): 1.0}
    assert got["engine_daily_pnl"] == {(): -12.5}
    assert got["engine_info"] == {(("stage", "paper"), ("version", "1.2")): 1.0}
    # counters exposed as counters (TYPE line), with no _created series
    text = em.render().decode()
    assert "# TYPE engine_orders_sent_total counter" in text
    assert "_created" not in text
    assert m.CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_labelled_family_is_replaced_as_a_whole():
    em = m.EngineMetrics(process_collector=False)
    em.update({"engine_position_lots": {"AAPL": 5, "MSFT": -3}})
    em.update({"engine_position_lots": {"AAPL": 7}})
    assert parse(em.render())["engine_position_lots"] == {(("symbol", "AAPL"),): 7.0}


def test_bad_updates_raise_and_write_nothing():
    em = m.EngineMetrics(process_collector=False)
    with pytest.raises(m.MetricsError, match="unknown metric 'engine_nope'"):
        em.update({"engine_daily_pnl": 1.0, "engine_nope": 1})
    assert em.value("engine_daily_pnl") is None           # all-or-nothing
    with pytest.raises(m.MetricsError, match="has no labels"):
        em.update({"engine_daily_pnl": {"x": 1}})
    with pytest.raises(m.MetricsError, match="takes labels"):
        em.set("engine_alerts_firing", 1, labels="only-one")
    with pytest.raises(m.MetricsError, match="not a number"):
        em.update({"engine_daily_pnl": "lots"})
    with pytest.raises(m.MetricsError, match="is a histogram"):
        em.set("engine_tick_to_order_seconds", 1)


def test_histogram_buckets_match_numpy():
    em = m.EngineMetrics(process_collector=False)
    rng = np.random.default_rng(3)
    samples = rng.integers(100, 3_000_000_000, 5000)             # 100 ns .. 3 s
    samples[:3] = [1000, 2500, 10_000_000]                      # exactly on bounds: le is inclusive
    em.observe_ns("engine_order_to_ack_seconds", samples)
    got = parse(em.render())
    buckets = got["engine_order_to_ack_seconds_bucket"]
    for b in m.LATENCY_BUCKETS_S:
        expect = int(np.count_nonzero(samples <= round(b * 1e9)))
        assert buckets[(("le", m.go_float_string(b)),)] == expect, b
    assert buckets[(("le", "+Inf"),)] == samples.size
    assert got["engine_order_to_ack_seconds_count"][()] == samples.size
    assert got["engine_order_to_ack_seconds_sum"][()] == pytest.approx(samples.sum() / 1e9)


@pytest.mark.parametrize("value,text", [
    (0.0, "0"), (1.0, "1"), (-3.0, "-3"), (0.25, "0.25"), (1e-4, "0.0001"), (1e-5, "1e-05"),
    (2.5e-6, "2.5e-06"), (123456.0, "123456"), (1e6, "1e+06"), (1234567.5, "1.2345675e+06"),
    (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (float("nan"), "NaN"), (0.1 + 0.2, "0.30000000000000004"),
])
def test_go_float_string(value, text):
    assert m.go_float_string(value) == text


# ----------------------------------------------------------------- collector

class _Orders:
    """A duck-typed source object."""

    def __init__(self):
        self.sent = 0

    def metrics_snapshot(self):
        return {"engine_orders_sent_total": {"AAPL": self.sent}}


def test_collector_reads_sources_and_keeps_values_of_a_failing_source(caplog):
    em = m.EngineMetrics(process_collector=False)
    col = m.MetricsCollector(em, system=False)
    orders = _Orders()
    col.add_source("orders", orders)
    state = {"fail": False}

    def risk():
        if state["fail"]:
            raise RuntimeError("risk state unavailable")
        return {"engine_daily_pnl": 42.0}

    col.add_source("risk", risk)
    orders.sent = 5
    col.collect_once(now=1000.0)
    assert em.value("engine_orders_sent_total", "AAPL") == 5
    assert em.value("engine_daily_pnl") == 42.0
    state["fail"] = True
    orders.sent = 9
    col.collect_once(now=1001.0)
    col.collect_once(now=1002.0)
    assert em.value("engine_orders_sent_total", "AAPL") == 9           # others still updated
    assert em.value("engine_daily_pnl") == 42.0                        # previous value kept
    assert em.value("engine_metrics_source_errors_total", "risk") == 2
    assert em.value("engine_metrics_source_errors_total", "orders") == 0
    assert sum("risk state unavailable" in r.getMessage() for r in caplog.records) == 1   # rate-limited


def test_collector_rejects_a_non_source():
    col = m.MetricsCollector(m.EngineMetrics(process_collector=False), system=False)
    with pytest.raises(TypeError, match="must be callable"):
        col.add_source("x", 42)
    with pytest.raises(m.MetricsError, match="unknown latency recorder"):
        col.add_recorder(m.LatencyRecorder("nope", 8))


def test_p99_gauge_over_window_then_nan_when_window_empties():
    em = m.EngineMetrics(process_collector=False)
    col = m.MetricsCollector(em, system=False, quantile_window_s=10.0)
    rec = col.recorder("tick_to_order", 1024)
    first = np.arange(1, 101) * 1000          # 1..100 us
    for v in first:
        rec.record(int(v))
    col.collect_once(now=100.0)
    assert em.value("engine_tick_to_order_p99_seconds") == pytest.approx(np.percentile(first, 99) / 1e9)
    rec.record(5_000_000)
    col.collect_once(now=105.0)               # window holds both batches
    both = np.append(first, 5_000_000)
    assert em.value("engine_tick_to_order_p99_seconds") == pytest.approx(np.percentile(both, 99) / 1e9)
    col.collect_once(now=111.0)               # first batch (t=100) out of the window
    assert em.value("engine_tick_to_order_p99_seconds") == pytest.approx(5e-3)
    col.collect_once(now=200.0)
    assert math.isnan(em.value("engine_tick_to_order_p99_seconds"))
    assert parse(em.render())["engine_tick_to_order_seconds_count"][()] == 101


def test_market_data_latency_from_real_quotes():
    """local_timestamp - timestamp of the real Binance quotes through the recorder:
    the histogram count and the p99 gauge agree with numpy."""
    with open(shared_file("quotes.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    lat_ns = np.array([(int(r["local_timestamp"]) - int(r["timestamp"])) * 1000 for r in rows], dtype=np.int64)
    assert lat_ns.size > 5000
    em = m.EngineMetrics(process_collector=False)
    col = m.MetricsCollector(em, system=False, quantile_window_s=60.0)
    rec = col.recorder("market_data_latency", 16384)
    for v in lat_ns:
        rec.record(int(v))
    col.collect_once(now=1.0)
    got = parse(em.render())
    assert got["engine_market_data_latency_seconds_count"][()] == lat_ns.size
    assert em.value("engine_market_data_latency_p99_seconds") == pytest.approx(np.percentile(lat_ns, 99) / 1e9)


def test_risk_kernel_source_reads_the_real_kernel():
    from core_ext import risk
    kernel = risk.RiskKernel(max_instruments=4)
    col = m.MetricsCollector(m.EngineMetrics(process_collector=False), system=False)
    col.add_source("risk", m.risk_kernel_source(kernel))
    for i in range(3):                                   # unknown instrument: rejected
        assert kernel.check(3, risk.SIDE_BUY, 1, 100, 1 + i, 0) == risk.RISK_REJECT_UNKNOWN_INSTRUMENT
    kernel.trip_kill_switch()
    assert kernel.check(3, risk.SIDE_BUY, 1, 100, 99, 0) == risk.RISK_REJECT_KILL_SWITCH
    col.collect_once()
    em = col.metrics
    assert em.value("engine_risk_rejects_total", "unknown_instrument") == 3
    assert em.value("engine_risk_rejects_total", "kill_switch") == 1
    assert em.value("engine_risk_rejects_total", "max_position") == 0     # zeros exported too
    assert em.value("engine_risk_checks_passed_total") == 0
    assert len(em.samples()["engine_risk_rejects_total"]) == risk.RISK_CODE_COUNT - 1


def test_system_source_values_are_fractions(tmp_path):
    values = m.system_source(tmp_path)()
    for name in ("engine_cpu_usage_ratio", "engine_memory_usage_ratio", "engine_disk_usage_ratio"):
        assert 0.0 <= values[name] <= 1.0, name
    assert values["engine_process_resident_memory_bytes"] > 1e6


def test_every_family_has_a_conventional_name():
    for name, fam in m.FAMILIES.items():
        assert name.startswith("engine_"), name
        assert (fam.kind == "counter") == name.endswith("_total"), name
        if fam.kind == "histogram":
            assert name.endswith("_seconds"), name
        assert set(fam.labels) <= {"symbol", "reason", "source", "stage", "version", "alertname", "severity",
                                   "result"}, name


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_collector_task_runs_sources_lag_timer_and_listeners(loop):
    async def main():
        em = m.EngineMetrics(process_collector=False)
        col = m.MetricsCollector(em, interval_s=0.02, lag_interval_s=0.005)
        seen = []

        async def listener(samples, now):
            seen.append((now, samples))

        col.add_listener(listener)
        col.add_source("orders", lambda: {"engine_orders_sent_total": {"AAPL": 1}})
        col.start()
        for _ in range(500):
            await asyncio.sleep(0.01)
            lag = em.samples().get("engine_event_loop_lag_seconds_count", {}).get((), 0)
            if len(seen) >= 3 and lag >= 3:
                break
        await col.stop()
        return em, seen

    em, seen = run_loop(main(), loop=loop)
    assert len(seen) >= 3
    assert seen[-1][1]["engine_orders_sent_total"] == {(("symbol", "AAPL"),): 1.0}
    assert em.samples()["engine_event_loop_lag_seconds_count"][()] >= 3
    assert 0.0 <= em.value("engine_cpu_usage_ratio") <= 1.0


def test_run_histogram_percentiles_are_within_its_precision_on_real_latencies():
    """The whole-run histogram of `engine run`'s stop line: on the real quotes' feed
    latencies, every percentile is at or just above numpy's nearest-rank value."""
    with open(shared_file("quotes.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    lat_ns = np.array([(int(r["local_timestamp"]) - int(r["timestamp"])) * 1000 for r in rows], dtype=np.int64)
    h = m.RunHistogram()
    for chunk in np.array_split(lat_ns, 7):
        h.observe_ns(chunk)
    assert h.n == lat_ns.size and h.max_ns == int(lat_ns.max())
    for q in (50, 90, 99, 99.9, 100):
        exact = int(np.percentile(lat_ns, q, method="inverted_cdf"))
        got = h.percentile_ns(q)
        assert exact <= got <= exact * (1 + 1 / 64) + 1, (q, exact, got)
    assert m.RunHistogram().summary() == {"n": 0, "p50_ns": None, "p99_ns": None, "p999_ns": None,
                                          "max_ns": None}
    with pytest.raises(ValueError, match="percentile"):
        h.percentile_ns(0)


def test_run_histogram_buckets_are_contiguous():
    values = np.arange(0, 1 << 17, dtype=np.int64)
    idx = m.RunHistogram.bucket_index(values)
    assert idx[0] == 0 and set(np.diff(idx)) == {0, 1}           # no gaps, never backwards
    for v in (0, 127, 128, 129, 255, 256, 10_000, 123_456_789, (1 << 40) - 1):
        i = int(m.RunHistogram.bucket_index(np.array([v]))[0])
        assert m.RunHistogram.bucket_highest(i) >= v
        assert i == 0 or m.RunHistogram.bucket_highest(i - 1) < v
    huge = m.RunHistogram.bucket_index(np.array([1 << 50, -5]))
    assert huge[0] == m.RunHistogram._SIZE - 1 and huge[1] == 0   # clipped into the ends


def test_run_summary_includes_samples_not_yet_collected():
    em = m.EngineMetrics(process_collector=False)
    col = m.MetricsCollector(em, system=False)
    rec = col.recorder("tick_to_order", 1024)
    for v in range(1, 101):
        rec.record(v * 1000)
    col.collect_once(now=1.0)
    for v in range(101, 201):                 # recorded after the last collection
        rec.record(v * 1000)
    summary = col.run_summary()["tick_to_order"]
    assert summary["n"] == 200 and summary["max_ns"] == 200_000
    assert 100_000 <= summary["p50_ns"] <= 100_000 * (1 + 1 / 64)
    assert parse(em.render())["engine_tick_to_order_seconds_count"][()] == 200   # and in Prometheus
    assert col.run_summary()["tick_to_order"]["n"] == 200                         # idempotent


def test_the_timer_pass_lets_the_loop_run_between_sources():
    """A packet arriving during the per-second pass waits for one source, not all."""
    order: list[str] = []

    async def main():
        loop = asyncio.get_running_loop()
        col = m.MetricsCollector(m.EngineMetrics(process_collector=False), system=False)

        def first():
            order.append("first")
            loop.call_soon(order.append, "packet")      # ready while the pass is running
            return {}

        def second():
            order.append("second")
            return {}
        col.add_source("first", first)
        col.add_source("second", second)
        await col.run_once(now=1.0)
    asyncio.run(main())
    assert order == ["first", "packet", "second"]
