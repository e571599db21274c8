"""Engine metrics: plain counters and latency samples on the hot path, Prometheus
text exposition off it.

Three layers, each with one job:

* **Hot path** -- bumps plain counters on its own objects (``stats["orders_sent"] += 1``)
  and appends nanosecond samples into a `LatencyRecorder` (a preallocated NumPy ring).
  It never calls prometheus_client, never allocates per sample, never takes a lock.
* **`MetricsCollector`** -- an asyncio task that, every ``interval_s`` (default 1 s),
  calls the registered *sources* (callables, or objects with ``metrics_snapshot()``),
  drains the recorders and samples the host (CPU, memory, disk via psutil) and writes
  the values into `EngineMetrics`. A second small task measures the event-loop lag
  with a timer. After each pass it hands the current values to its listeners (the
  in-process alert evaluator, `engine.alerts`).
* **`EngineMetrics`** -- a prometheus_client ``Collector`` over a custom
  ``CollectorRegistry``: every family the engine exposes is declared once in `FAMILIES`
  (name, type, help, labels). `render()` gives the Prometheus text format served on
  ``GET /metrics`` (`engine.admin`).

A source returns a mapping from exposed metric name to a value::

    {"engine_orders_sent_total": {"AAPL": 120, "MSFT": 87},   # labelled: label value(s) -> number
     "engine_order_rejects_total": 2,                        # unlabelled: a number
     "engine_kill_switch_tripped": 0}

Counters are given as cumulative totals (what the hot path counted since start), gauges
as current values. A labelled family reported by a source replaces all of that
family's series (a symbol that disappears from the mapping disappears from
``/metrics``); each family should come from one source. For a family with several
labels the key is a tuple of label values in the declared order.

Names follow Prometheus conventions: ``engine_`` prefix, base units in the name
(``_seconds``, ``_bytes``, ``_ratio`` for 0..1 fractions, ``_lots``, ``_bps``),
``_total`` on counters, histograms for latencies (buckets 1 us .. 2.5 s). Labels are
low-cardinality only: ``symbol``, ``reason``, ``source``, ``stage``. Money (P&L, VaR)
is in account currency, which has no Prometheus base unit, so those names carry none.

Every latency recorder ``X`` is exposed twice: the histogram ``engine_X_seconds`` (for
dashboards and ``histogram_quantile``) and the gauge ``engine_X_p99_seconds``, the
99th percentile of the samples of the last ``quantile_window_s`` (default 10 s), NaN
when there were none. The alert rules threshold the gauge, so Prometheus and the
in-process evaluator see the same number.
"""
from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

log = logging.getLogger("engine.metrics")

#: Content-Type of `EngineMetrics.render()` (the Prometheus text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Histogram bucket upper bounds, seconds (1 us .. 2.5 s; +Inf is implicit).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
    1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5)
_LATENCY_BUCKETS_NS = np.array([round(b * 1e9) for b in LATENCY_BUCKETS_S], dtype=np.int64)

#: The latency recorders the engine knows (recorder name -> what it measures).
RECORDERS: dict[str, str] = {
    "tick_to_order": "market-data event received to order handed to the execution client",
    "order_to_ack": "order sent to the venue's acknowledgement received",
    "venue_round_trip": "venue request to response round trip (heartbeat/test request or order ack)",
    "market_data_latency": "venue (exchange) timestamp of a market-data message to its receipt",
    "event_loop_lag": "asyncio event-loop lag: how late a periodic timer fired",
}


@dataclass(frozen=True)
class Family:
    """One exposed metric family. ``name`` is the exposed name (counters end in ``_total``;
    histograms are the base name of their ``_bucket``/``_sum``/``_count`` series)."""
    name: str
    kind: str                   # "gauge" | "counter" | "histogram"
    help: str
    labels: tuple[str, ...] = ()


def _families() -> dict[str, Family]:
    g, c = "gauge", "counter"
    fams = [
        Family("engine_info", g, "Constant 1; labels carry the stage and the version of the running engine",
               ("stage", "version")),
        # system
        Family("engine_cpu_usage_ratio", g, "Host CPU utilisation over the last collection interval (0..1)"),
        Family("engine_memory_usage_ratio", g, "Host memory in use, (total - available) / total (0..1)"),
        Family("engine_disk_usage_ratio", g, "Used fraction of the filesystem holding the engine's data directory (0..1)"),
        Family("engine_process_resident_memory_bytes", g, "Resident memory of the engine process"),
        Family("engine_metrics_source_errors_total", c,
               "Metric source calls that raised (the source's previous values are kept)", ("source",)),
        # trading
        Family("engine_orders_sent_total", c, "Orders sent to the venue (rate() gives orders/s)", ("symbol",)),
        Family("engine_orders_filled_total", c, "Sent orders that received at least one fill"),
        Family("engine_order_rejects_total", c, "Orders rejected by the venue"),
        Family("engine_fills_total", c, "Fills (executions) received", ("symbol",)),
        Family("engine_filled_lots_total", c, "Filled quantity, lots", ("symbol",)),
        Family("engine_slippage_bps", g,
               "Realised slippage of recent fills vs the arrival price, basis points (mean)", ("symbol",)),
        Family("engine_expected_slippage_bps", g,
               "Slippage the fill model expects for the same fills, basis points", ("symbol",)),
        Family("engine_slippage_model_error_bps", g,
               "Shadow stage: real minus simulated fill price of the same orders, basis points", ("symbol",)),
        Family("engine_reconciliation_mismatches", g,
               "Instruments on which the last reconciliation disagreed with the venue"),
        Family("engine_reconciliations_total", c, "Reconciliations run"),
        # risk
        Family("engine_daily_pnl", g, "Today's P&L (realised + unrealised), account currency"),
        Family("engine_daily_pnl_limit", g, "Configured daily P&L floor (negative), account currency"),
        Family("engine_drawdown_ratio", g, "Drawdown from the equity peak (0..1)"),
        Family("engine_drawdown_limit_ratio", g, "Configured maximum drawdown (0..1)"),
        Family("engine_position_lots", g, "Net position, lots (signed)", ("symbol",)),
        Family("engine_position_limit_lots", g, "Configured maximum absolute position, lots", ("symbol",)),
        Family("engine_concentration_ratio", g, "Instrument share of gross exposure (0..1)", ("symbol",)),
        Family("engine_concentration_limit_ratio", g, "Configured maximum instrument share of gross exposure (0..1)",
               ("symbol",)),
        Family("engine_gross_exposure", g, "Gross exposure, account currency"),
        Family("engine_value_at_risk", g, "1-day 99 % value at risk, account currency"),
        Family("engine_kill_switch_tripped", g, "1 when the kill switch is tripped (latched until an operator reset)"),
        Family("engine_risk_checks_passed_total", c, "Orders that passed the pre-trade risk kernel"),
        Family("engine_risk_rejects_total", c, "Orders rejected by the pre-trade risk kernel, by reason", ("reason",)),
        # market data
        Family("engine_feed_gaps_total", c, "Sequence gaps detected on the market-data feed"),
        Family("engine_quote_staleness_seconds", g, "Time since the last quote update of an instrument", ("symbol",)),
        # alerting (engine.alerts)
        Family("engine_alerts_firing", g, "In-process alert evaluator: alerts firing", ("alertname", "severity")),
        Family("engine_alert_notifications_total", c, "Webhook notifications by result (sent, failed)",
               ("result",)),
    ]
    for name, what in RECORDERS.items():
        fams.append(Family(f"engine_{name}_seconds", "histogram", f"Latency: {what}"))
        fams.append(Family(f"engine_{name}_p99_seconds", g,
                           f"99th percentile over the recent window (NaN if no samples): {what}"))
    return {f.name: f for f in fams}


#: Every family the engine exposes, by exposed name.
FAMILIES: dict[str, Family] = _families()


class MetricsError(KeyError):
    """A source reported an unknown metric or a value of the wrong shape."""

    def __str__(self) -> str:           # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


LabelKey = tuple[str, ...]


class LatencyRecorder:
    """A preallocated ring of int64 nanosecond samples for the hot path.

    ``record(ns)`` stores one sample (one NumPy item store and an int add; no
    allocation, no lock). The collector calls ``drain()`` on its timer and gets the
    samples recorded since the previous drain. If more than ``capacity`` samples
    arrive between two drains the oldest are overwritten and counted in ``dropped``.

    Threading: one writer thread; ``drain`` from the same thread (the asyncio loop)
    or accept that a sample being written during a drain may be missed.
    """

    __slots__ = ("name", "capacity", "dropped", "_buf", "_mask", "_n", "_read")

    def __init__(self, name: str, capacity: int = 65536) -> None:
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"LatencyRecorder capacity must be a power of two >= 2, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.dropped = 0
        self._buf = np.zeros(capacity, dtype=np.int64)
        self._mask = capacity - 1
        self._n = 0          # samples ever recorded
        self._read = 0       # samples ever drained (or dropped)

    def record(self, ns: int) -> None:
        """Store one latency sample in nanoseconds."""
        n = self._n
        self._buf[n & self._mask] = ns
        self._n = n + 1

    def record_since(self, start_ns: int) -> None:
        """Store ``time.perf_counter_ns() - start_ns``."""
        n = self._n
        self._buf[n & self._mask] = time.perf_counter_ns() - start_ns
        self._n = n + 1

    @property
    def total(self) -> int:
        """Samples recorded since construction."""
        return self._n

    def drain(self) -> np.ndarray:
        """The samples recorded since the last drain, oldest first (a copy, int64 ns)."""
        end = self._n
        start = self._read
        if end - start > self.capacity:
            self.dropped += end - start - self.capacity
            start = end - self.capacity
        self._read = end
        count = end - start
        if count == 0:
            return np.empty(0, dtype=np.int64)
        i0 = start & self._mask
        i1 = end & self._mask
        if i0 < i1:
            return self._buf[i0:i1].copy()
        return np.concatenate((self._buf[i0:], self._buf[:i1]))


class RunHistogram:
    """Every latency sample of a run, at fixed memory: log-linear buckets, 64 per power
    of two (a value is known to within 1/64, 1.6 %), from 0 to 2**40 ns (18 minutes;
    longer samples count in the last bucket). What ``engine run`` reports for the whole
    run when it stops; the Prometheus histogram's few wide buckets and the 10-second
    p99 window cannot give a run's p99.9.

    Percentiles are nearest-rank and, as HdrHistogram reports them, the highest value
    of the bucket holding that rank (never below the true value, at most 1.6 % above).
    """

    SUB_BITS = 6
    MAX_BITS = 40
    _SIZE = (MAX_BITS - SUB_BITS - 1) * (1 << SUB_BITS) + (1 << (SUB_BITS + 1))   # last: 2**40 - 1

    __slots__ = ("counts", "n", "max_ns")

    def __init__(self) -> None:
        self.counts = np.zeros(self._SIZE, dtype=np.int64)
        self.n = 0
        self.max_ns = 0

    @classmethod
    def bucket_index(cls, samples_ns: np.ndarray) -> np.ndarray:
        """The bucket of each sample: values below 128 are their own bucket; above, the
        top seven bits (a leading one and six more) and the shift."""
        v = np.clip(np.asarray(samples_ns, dtype=np.int64), 0, (1 << cls.MAX_BITS) - 1)
        bits = np.frexp(v.astype(np.float64))[1].astype(np.int64)      # bit length (v < 2**53)
        shift = np.maximum(bits - (cls.SUB_BITS + 1), 0)
        return shift * (1 << cls.SUB_BITS) + (v >> shift)

    @classmethod
    def bucket_highest(cls, index: int) -> int:
        """The highest value that falls in bucket `index`."""
        sub = 1 << cls.SUB_BITS
        if index < 2 * sub:
            return index
        shift = index // sub - 1
        mantissa = index % sub + sub
        return ((mantissa + 1) << shift) - 1

    def observe_ns(self, samples_ns: np.ndarray) -> None:
        samples_ns = np.asarray(samples_ns)
        if samples_ns.size == 0:
            return
        self.counts += np.bincount(self.bucket_index(samples_ns), minlength=self._SIZE)[:self._SIZE]
        self.n += int(samples_ns.size)
        self.max_ns = max(self.max_ns, int(samples_ns.max()))

    def percentile_ns(self, q: float) -> int | None:
        """The q-th percentile (0 < q <= 100), or None without samples."""
        if not 0 < q <= 100:
            raise ValueError(f"percentile {q!r}: expected 0 < q <= 100")
        if self.n == 0:
            return None
        rank = max(1, math.ceil(q / 100.0 * self.n))
        index = int(np.searchsorted(np.cumsum(self.counts), rank, side="left"))
        return min(self.bucket_highest(index), self.max_ns)

    def summary(self) -> dict[str, int | None]:
        """{"n", "p50_ns", "p99_ns", "p999_ns", "max_ns"}."""
        return {"n": self.n, "p50_ns": self.percentile_ns(50), "p99_ns": self.percentile_ns(99),
                "p999_ns": self.percentile_ns(99.9), "max_ns": self.max_ns if self.n else None}


class _Histogram:
    __slots__ = ("counts", "sum_s")

    def __init__(self) -> None:
        self.counts = np.zeros(len(_LATENCY_BUCKETS_NS) + 1, dtype=np.int64)  # last = +Inf
        self.sum_s = 0.0

    def observe_ns(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        idx = np.searchsorted(_LATENCY_BUCKETS_NS, samples, side="left")   # first bound >= sample
        self.counts += np.bincount(idx, minlength=self.counts.size)
        self.sum_s += float(samples.sum()) / 1e9


class EngineMetrics(Collector):
    """The engine's metric values and their Prometheus exposition.

    Written by the collector (or directly, off the hot path); read by ``render()``
    (the admin endpoint) and ``samples()`` (the alert evaluator). A lock keeps a
    scrape from another thread consistent; writes happen at timer rate."""

    def __init__(self, *, stage: str = "", version: str = "", process_collector: bool = True) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[LabelKey, float]] = {}
        self._hists: dict[str, dict[LabelKey, _Histogram]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        if process_collector:
            from prometheus_client import ProcessCollector
            ProcessCollector(registry=self.registry)      # standard process_* metrics (Linux /proc)
        self.set_info(stage=stage, version=version)

    # ---------------------------------------------------------------- writing

    def set_info(self, *, stage: str, version: str) -> None:
        with self._lock:
            self._values["engine_info"] = {(stage, version): 1.0}

    @staticmethod
    def _family(name: str, kinds: Iterable[str] = ("gauge", "counter")) -> Family:
        fam = FAMILIES.get(name)
        if fam is None:
            raise MetricsError(f"unknown metric {name!r} (declare it in engine.metrics.FAMILIES)")
        if fam.kind not in kinds:
            raise MetricsError(f"metric {name!r} is a {fam.kind}; expected one of {', '.join(kinds)}")
        return fam

    @staticmethod
    def _key(fam: Family, labels: Any) -> LabelKey:
        if not fam.labels:
            if labels not in (None, ()):
                raise MetricsError(f"metric {fam.name!r} has no labels, got {labels!r}")
            return ()
        key = labels if isinstance(labels, tuple) else (labels,)
        if len(key) != len(fam.labels):
            raise MetricsError(f"metric {fam.name!r} takes labels {fam.labels}, got {labels!r}")
        return tuple(str(v) for v in key)

    @staticmethod
    def _number(name: str, value: Any) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise MetricsError(f"metric {name!r}: value {value!r} is not a number") from None

    def set(self, name: str, value: float, labels: Any = None) -> None:
        """Set one series of a gauge or counter (counters: the cumulative total)."""
        fam = self._family(name)
        key = self._key(fam, labels)
        v = self._number(name, value)
        with self._lock:
            self._values.setdefault(name, {})[key] = v

    def inc(self, name: str, amount: float = 1.0, labels: Any = None) -> None:
        """Add to one series of a counter (or gauge)."""
        fam = self._family(name)
        key = self._key(fam, labels)
        v = self._number(name, amount)
        with self._lock:
            series = self._values.setdefault(name, {})
            series[key] = series.get(key, 0.0) + v

    def update(self, values: Mapping[str, Any]) -> None:
        """Apply one source's mapping (see the module docstring). All-or-nothing: a bad
        entry raises `MetricsError` before anything is written."""
        staged: list[tuple[str, dict[LabelKey, float] | None, LabelKey, float]] = []
        for name, value in values.items():
            fam = self._family(name)
            if isinstance(value, Mapping):
                if not fam.labels:
                    raise MetricsError(f"metric {name!r} has no labels; give a number, not a mapping")
                series = {self._key(fam, k): self._number(name, v) for k, v in value.items()}
                staged.append((name, series, (), 0.0))
            else:
                staged.append((name, None, self._key(fam, None), self._number(name, value)))
        with self._lock:
            for name, series, key, v in staged:
                if series is not None:
                    self._values[name] = series
                else:
                    self._values.setdefault(name, {})[key] = v

    def remove(self, name: str) -> None:
        """Drop every series of a family."""
        with self._lock:
            self._values.pop(name, None)
            self._hists.pop(name, None)

    def observe_ns(self, name: str, samples_ns: np.ndarray, labels: Any = None) -> None:
        """Add nanosecond samples to a histogram family."""
        fam = self._family(name, ("histogram",))
        key = self._key(fam, labels)
        with self._lock:
            self._hists.setdefault(name, {}).setdefault(key, _Histogram()).observe_ns(
                np.asarray(samples_ns, dtype=np.int64))

    # ---------------------------------------------------------------- reading

    def value(self, name: str, labels: Any = None) -> float | None:
        """The current value of one gauge/counter series, or None if it is not set."""
        fam = self._family(name)
        key = self._key(fam, labels)
        with self._lock:
            return self._values.get(name, {}).get(key)

    def samples(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Current values by exposed sample name; each series keyed by its sorted
        (label, value) pairs. Histograms contribute ``_count`` and ``_sum``. This is
        what the in-process alert evaluator reads."""
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        with self._lock:
            for name, series in self._values.items():
                fam = FAMILIES[name]
                out[name] = {tuple(sorted(zip(fam.labels, key, strict=True))): v for key, v in series.items()}
            for name, series in self._hists.items():
                fam = FAMILIES[name]
                cnt = out.setdefault(name + "_count", {})
                sm = out.setdefault(name + "_sum", {})
                for key, h in series.items():
                    lk = tuple(sorted(zip(fam.labels, key, strict=True)))
                    cnt[lk] = float(h.counts.sum())
                    sm[lk] = h.sum_s
        return out

    def collect(self):
        """prometheus_client Collector protocol: yield the metric families."""
        with self._lock:
            values = {n: dict(s) for n, s in self._values.items()}
            hists = {n: {k: (h.counts.copy(), h.sum_s) for k, h in s.items()} for n, s in self._hists.items()}
        bounds = [_go_float(b) for b in LATENCY_BUCKETS_S] + ["+Inf"]
        for name, fam in FAMILIES.items():
            if fam.kind == "histogram":
                series = hists.get(name)
                if not series:
                    continue
                mf = HistogramMetricFamily(name, fam.help, labels=fam.labels)
                for key, (counts, sum_s) in sorted(series.items()):
                    cum = np.cumsum(counts)
                    mf.add_metric(list(key), [(b, float(c)) for b, c in zip(bounds, cum, strict=True)], sum_s)
                yield mf
                continue
            series = values.get(name)
            if not series:
                continue
            cls = CounterMetricFamily if fam.kind == "counter" else GaugeMetricFamily
            mf = cls(name, fam.help, labels=fam.labels)
            for key, v in sorted(series.items()):
                mf.add_metric(list(key), v)
            yield mf

    def render(self) -> bytes:
        """The Prometheus text exposition (content type `CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def _go_float(v: float) -> str:
    """Format a float the way Go's ``%v`` does (Prometheus prints bucket bounds and
    template values this way)."""
    return go_float_string(v)


def go_float_string(v: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` as printed by ``fmt`` ``%v``:
    shortest round-trip digits; exponent notation when the decimal exponent is < -4
    or >= 6 (so 1e6 prints ``1e+06``); ``+Inf``/``-Inf``/``NaN`` spelled as Go does."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    r = repr(v)
    sign = ""
    if r[0] == "-":
        sign, r = "-", r[1:]
    mant, _, exp_s = r.partition("e")
    exp = int(exp_s) if exp_s else 0
    ip, _, fp = mant.partition(".")
    digits = (ip + fp).lstrip("0")
    lead_zeros = len(ip + fp) - len((ip + fp).lstrip("0"))
    point = len(ip) + exp - lead_zeros          # decimal point position relative to digits
    digits = digits.rstrip("0") or "0"
    x = point - 1                               # decimal exponent of the first digit
    if x < -4 or x >= 6:
        m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{m}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


# -------------------------------------------------------------------- sources

Source = Callable[[], Mapping[str, Any]]


def system_source(disk_path: str | os.PathLike[str] = ".") -> Source:
    """A source sampling the host with psutil: CPU (since the previous call), memory,
    the disk holding ``disk_path``, and the process's resident memory."""
    import psutil

    proc = psutil.Process()
    psutil.cpu_percent(interval=None)            # prime: the first call has no interval
    path = os.fspath(disk_path)

    def sample() -> dict[str, float]:
        vm = psutil.virtual_memory()
        return {
            "engine_cpu_usage_ratio": psutil.cpu_percent(interval=None) / 100.0,
            "engine_memory_usage_ratio": (vm.total - vm.available) / vm.total if vm.total else 0.0,
            "engine_disk_usage_ratio": psutil.disk_usage(path).percent / 100.0,
            "engine_process_resident_memory_bytes": float(proc.memory_info().rss),
        }
    return sample


def risk_reason_name(code_name: str) -> str:
    """``RISK_REJECT_MAX_POSITION`` -> ``max_position`` (the ``reason`` label value)."""
    name = code_name.lower()
    return name[len("risk_reject_"):] if name.startswith("risk_reject_") else name


def risk_kernel_source(kernel: Any) -> Source:
    """A source reading ``core_ext.risk.RiskKernel.counters()`` (index = result code,
    index 0 counts passes): ``engine_risk_checks_passed_total`` and
    ``engine_risk_rejects_total{reason}`` for every reject code (zeros included, so a
    rate is defined from the first scrape)."""
    from core_ext.risk import REJECT_REASONS

    reasons = {code: risk_reason_name(name) for code, name in REJECT_REASONS.items() if code != 0}

    def sample() -> dict[str, Any]:
        counts = kernel.counters()
        return {
            "engine_risk_checks_passed_total": float(counts[0]),
            "engine_risk_rejects_total": {reasons[c]: float(counts[c]) for c in reasons if c < len(counts)},
        }
    return sample


def _as_callable(name: str, source: Any) -> Source:
    if hasattr(source, "metrics_snapshot"):
        return source.metrics_snapshot
    if callable(source):
        return source
    raise TypeError(f"metrics source {name!r} must be callable or have metrics_snapshot(), got {type(source).__name__}")


Listener = Callable[[dict[str, dict[tuple[tuple[str, str], ...], float]], float], Any]


class MetricsCollector:
    """Reads the sources and recorders on a timer and updates `EngineMetrics`.

    ``collect_once()`` is one synchronous pass (tests call it directly); ``start()``
    runs it every ``interval_s`` as an asyncio task, plus an event-loop lag timer
    every ``lag_interval_s`` feeding the ``event_loop_lag`` recorder; ``stop()``
    cancels both. A source that raises is logged (at most once a minute per source),
    counted in ``engine_metrics_source_errors_total{source}``, and its previous
    values stay. Listeners (e.g. the alert evaluator) are called after each pass with
    ``(metrics.samples(), time.time())``; a listener may be sync or async.
    """

    def __init__(self, metrics: EngineMetrics | None = None, *, interval_s: float = 1.0,
                 lag_interval_s: float = 0.1, quantile_window_s: float = 10.0,
                 system: bool = True, disk_path: str | os.PathLike[str] = ".") -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if not lag_interval_s > 0:
            raise ValueError(f"lag_interval_s must be > 0, got {lag_interval_s}")
        if not quantile_window_s > 0:
            raise ValueError(f"quantile_window_s must be > 0, got {quantile_window_s}")
        self.metrics = metrics if metrics is not None else EngineMetrics()
        self.interval_s = interval_s
        self.lag_interval_s = lag_interval_s
        self.quantile_window_s = quantile_window_s
        self._sources: dict[str, Source] = {}
        self._source_errors: dict[str, int] = {}
        self._last_error_log: dict[str, float] = {}
        self._recorders: dict[str, LatencyRecorder] = {}
        self._windows: dict[str, collections.deque[tuple[float, np.ndarray]]] = {}
        self._run_hists: dict[str, RunHistogram] = {}
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.lag_recorder = LatencyRecorder("event_loop_lag", 4096)
        self.add_recorder(self.lag_recorder)
        if system:
            self.add_source("system", system_source(disk_path))

    # ------------------------------------------------------------ registration

    def add_source(self, name: str, source: Any) -> None:
        """Register a source by name: a callable returning a mapping, or an object with
        ``metrics_snapshot()``. Re-registering a name replaces it."""
        self._sources[name] = _as_callable(name, source)
        self._source_errors.setdefault(name, 0)

    def remove_source(self, name: str) -> None:
        self._sources.pop(name, None)

    def add_recorder(self, recorder: LatencyRecorder) -> None:
        """Register a latency recorder; its name must be one of `RECORDERS`."""
        if recorder.name not in RECORDERS:
            raise MetricsError(f"unknown latency recorder {recorder.name!r}; known: {', '.join(RECORDERS)}")
        self._recorders[recorder.name] = recorder
        self._windows.setdefault(recorder.name, collections.deque())
        self._run_hists.setdefault(recorder.name, RunHistogram())

    def recorder(self, name: str, capacity: int = 65536) -> LatencyRecorder:
        """The registered recorder of that name, created and registered if needed."""
        rec = self._recorders.get(name)
        if rec is None:
            rec = LatencyRecorder(name, capacity)
            self.add_recorder(rec)
        return rec

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # ------------------------------------------------------------ collection

    def collect_once(self, now: float | None = None) -> None:
        """One pass: every source, every recorder. ``now`` (time.time()) is for tests."""
        for _ in self._collect_steps(time.time() if now is None else now):
            pass

    def _collect_steps(self, now: float) -> Iterator[None]:
        """The pass, a source or a recorder a step: the timer task runs one step per
        event-loop iteration, so a packet waits for one step (0.1-0.3 ms), not for the
        whole pass (1-2 ms on a small VM, once a second: the engine's p99.9)."""
        for name, source in list(self._sources.items()):
            try:
                self.metrics.update(source())
            except Exception as exc:        # a broken source must not stop the others
                self._source_errors[name] = self._source_errors.get(name, 0) + 1
                last = self._last_error_log.get(name)
                if last is None or now - last >= 60.0:
                    self._last_error_log[name] = now
                    log.error("metrics source %r failed: %s: %s", name, type(exc).__name__, exc)
            yield
        self.metrics.update({"engine_metrics_source_errors_total": dict(self._source_errors)})
        for name, rec in list(self._recorders.items()):
            yield
            samples = self._take(name, rec)
            window = self._windows[name]
            if samples.size:
                window.append((now, samples))
            while window and window[0][0] <= now - self.quantile_window_s:
                window.popleft()
            if window:
                allv = np.concatenate([s for _, s in window])
                p99 = float(np.percentile(allv, 99)) / 1e9
            else:
                p99 = math.nan
            self.metrics.set(f"engine_{name}_p99_seconds", p99)

    def run_summary(self) -> dict[str, dict[str, int | None]]:
        """Each recorder's whole-run percentiles (`RunHistogram.summary`), samples not
        yet collected included (they also reach the Prometheus histograms)."""
        out: dict[str, dict[str, int | None]] = {}
        for name, rec in self._recorders.items():
            self._take(name, rec)
            out[name] = self._run_hists[name].summary()
        return out

    def _take(self, name: str, rec: LatencyRecorder) -> np.ndarray:
        """Drain `rec` into its Prometheus histogram and its whole-run histogram."""
        samples = rec.drain()
        self.metrics.observe_ns(f"engine_{name}_seconds", samples)
        self._run_hists[name].observe_ns(samples)
        return samples

    async def _notify(self, now: float) -> None:
        if not self._listeners:
            return
        samples = self.metrics.samples()
        for listener in list(self._listeners):
            await asyncio.sleep(0)           # one step per listener, as in _collect_steps
            try:
                result = listener(samples, now)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("metrics listener %r failed", listener)

    async def run_once(self, now: float | None = None) -> None:
        """`collect_once`, a step per event-loop iteration, then the listeners."""
        now = time.time() if now is None else now
        for _ in self._collect_steps(now):
            await asyncio.sleep(0)
        await self._notify(now)

    async def _collect_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.run_once()
            next_at += self.interval_s
            delay = next_at - loop.time()
            if delay < 0:                     # fell behind: skip missed ticks, do not burst
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    async def _lag_loop(self) -> None:
        loop = asyncio.get_running_loop()
        rec = self.lag_recorder
        interval = self.lag_interval_s
        while True:
            expected = loop.time() + interval
            await asyncio.sleep(interval)
            rec.record(max(0, int((loop.time() - expected) * 1e9)))

    def start(self) -> None:
        """Start the collection and lag tasks on the running loop."""
        if self._tasks:
            return
        self._tasks = [asyncio.create_task(self._collect_loop(), name="metrics-collector"),
                       asyncio.create_task(self._lag_loop(), name="metrics-loop-lag")]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
