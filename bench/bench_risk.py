"""Latency of the pre-trade risk check (core_ext/risk.pyx).

Baseline, measured in the same run: the pure-Python reference with the same rules
(tests/reference/risk_ref.py).

Rows:
  check full chain (partial)     one check from Python that runs all 18 rules and is
                                 rejected by the last one (duplicate id): no state
                                 change, so the same call can repeat. op is a
                                 functools.partial of the bound method.
  check first rule (partial)     the same call on a kernel whose kill switch is tripped:
                                 returns at rule 1, i.e. the cost of the call itself.
  check pass+reserve (map/next)  one passing check from Python (reserves the order:
                                 open qty, exposure, throttle ring, id set). A fresh id
                                 and time per call come from map() over C iterators
                                 (op = next on it), no Python-level wrapper.
  check first rule (map/next)    the same construction on a tripped kernel: the
                                 harness + call floor under the previous row.
  check_many per order           batches of 2_000 passing orders, one Python->C call
                                 each, on one long-lived kernel; batch time / 2_000.

Run: python -m bench.bench_risk [--quick]     or     pytest bench/bench_risk.py
"""
from __future__ import annotations

import functools
import itertools
import sys

import numpy as np

from bench.harness import Result, measure, measure_each, report
from core_ext import risk
from tests.reference import risk_ref

N_INST = 16
INST = 3
REF = 10_000
NOW = 1_000_000
BATCH = 2_000


def make(impl):
    k = impl(max_instruments=64, dup_window=65_536)
    for i in range(N_INST):
        k.add_instrument(i, 10)
        k.set_instrument_limits(i, max_order_qty=1_000, max_order_notional=10**12,
                                price_band_bps=500, max_position=10**12,
                                max_open_orders=10**12, max_ref_age_ns=10**18)
        k.set_reference_price(i, REF + i, 0)
        k.set_position(i, 100 * (i % 3 - 1))
    k.set_account_limits(max_gross_exposure=risk.RISK_NOTIONAL_LIMIT_MAX,
                         max_concentration_bps=10_000, concentration_floor=10**7,
                         max_orders_per_window=1_000, window_ns=1)
    return k


def _full_chain_op(k):
    assert k.check(INST, 0, 10, REF + 5, 7, NOW) == 0           # records id 7
    assert k.check(INST, 0, 10, REF + 5, 7, NOW) == risk.RISK_REJECT_DUPLICATE_ID
    return functools.partial(k.check, INST, 0, 10, REF + 5, 7, NOW)


def _pass_op(k, expect=0):
    # A fresh id and time per call without a Python-level wrapper: map() pulls the six
    # arguments from C iterators and calls the bound method; op() is next() on it.
    calls = map(k.check, itertools.repeat(INST), itertools.repeat(0), itertools.repeat(1),
                itertools.repeat(REF + 5), itertools.count(1_000), itertools.count(NOW))
    op = functools.partial(next, calls)
    assert op() == expect
    return op


def _tripped(impl):
    k = make(impl)
    k.trip_kill_switch()
    return k


def _batch():
    orders = np.zeros(BATCH, dtype=risk.ORDER_DTYPE)
    orders["inst_id"] = np.arange(BATCH) % N_INST
    orders["side"] = np.arange(BATCH) % 2
    orders["qty"] = 1 + np.arange(BATCH) % 7
    orders["price"] = REF + orders["inst_id"]
    orders["cl_ord_id"] = np.arange(1, BATCH + 1)
    orders["now_ns"] = NOW + np.arange(BATCH) * 10
    return orders


def _batches(count):
    batches = []
    for i in range(count):  # distinct ids and later times for every batch
        orders = _batch()
        orders["cl_ord_id"] += i * BATCH
        orders["now_ns"] += i * BATCH * 10
        batches.append(orders)
    return batches


def _batch_rows(quick: bool):
    count = 40 if quick else 200
    batches = _batches(count + 1)
    k = make(risk.RiskKernel)  # one long-lived kernel, as in production
    assert (k.check_many(batches[0]) == 0).all()  # warm-up
    ours = measure_each("check_many per order", lambda i: k.check_many(batches[i + 1]),
                        count=count, warmup=0)
    assert k.counters()[1:].sum() == 0

    ref_count = 4 if quick else 10
    ref = make(risk_ref.RiskReference)
    rows = [[tuple(int(v) for v in row) for row in b.tolist()] for b in batches[:ref_count]]

    def ref_batch(i):
        check = ref.check
        for row in rows[i]:
            check(*row)

    base = measure_each("reference: check loop per order", ref_batch, count=ref_count, warmup=0)
    assert sum(ref.counters()[1:]) == 0
    return _per(ours, BATCH), _per(base, BATCH)


def _per(r: Result, n: int) -> Result:
    return Result(name=r.name, unit="ns/order", p50=r.p50 / n, p99=r.p99 / n, p999=r.p999 / n,
                  max=r.max / n, n=r.n)


def measure_all(quick: bool = False) -> list[tuple[Result, Result | None]]:
    samples = 3_000 if quick else 20_000
    ref_samples = 500 if quick else 3_000
    rows = []

    def pair(name, make_op, expect_ok=False):
        k, ref = make(risk.RiskKernel), make(risk_ref.RiskReference)
        if "first rule" in name:
            k, ref = _tripped(risk.RiskKernel), _tripped(risk_ref.RiskReference)
        ours = measure(name, make_op(k), samples=samples)
        base = measure("reference: " + name, make_op(ref), samples=ref_samples, inner=4,
                       warmup=200)
        if expect_ok:  # every timed call passed
            for impl in (k, ref):
                counts = list(impl.counters())
                assert sum(counts[1:]) == 0 and counts[0] > ref_samples, counts
        rows.append((ours, base))

    pair("check full chain (partial)", _full_chain_op)
    pair("check first rule (partial)",
         lambda k: functools.partial(k.check, INST, 0, 10, REF + 5, 7, NOW))
    pair("check pass+reserve (map/next)", _pass_op, expect_ok=True)
    pair("check first rule (map/next)",
         lambda k: _pass_op(k, expect=risk.RISK_REJECT_KILL_SWITCH))
    rows.append(_batch_rows(quick))
    return rows


def _entry(ours: Result, base: Result | None) -> dict:
    d = ours.as_dict()
    d["baseline"] = base.as_dict() if base else None
    d["ratio"] = (base.p50 / ours.p50) if base else None
    return d


def run(quick: bool = False) -> list[dict]:
    return [_entry(o, b) for o, b in measure_all(quick)]


# ---------------------------------------------------------------- pytest-benchmark view


def test_bench_check_full_chain(benchmark):
    benchmark(_full_chain_op(make(risk.RiskKernel)))


def test_bench_check_full_chain_reference(benchmark):
    benchmark(_full_chain_op(make(risk_ref.RiskReference)))


def test_bench_check_pass(benchmark):
    benchmark(_pass_op(make(risk.RiskKernel)))


def test_bench_check_pass_reference(benchmark):
    benchmark(_pass_op(make(risk_ref.RiskReference)))


def test_bench_check_many(benchmark):
    batches = _batches(61)
    k = make(risk.RiskKernel)
    k.check_many(batches[0])  # warm-up
    pending = iter(batches[1:])
    benchmark.pedantic(lambda b: k.check_many(b), setup=lambda: ((next(pending),), {}),
                       rounds=60)
    assert k.counters()[1:].sum() == 0


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    print(report(measure_all(quick)))
