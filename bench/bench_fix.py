"""FIX 4.4 codec benchmarks: encode NewOrderSingle, parse ExecutionReport, validate.

Baseline in the same run: simplefix (FixMessage.encode / FixParser.get_message) doing
the same work from Python. Targets: encode <= 500 ns, parse <= 1 us per message,
>= 20x simplefix.

    python -m bench.bench_fix [--quick]
    pytest bench/bench_fix.py --benchmark-only
"""
from __future__ import annotations

import sys
import time

import simplefix

from bench.harness import Result, measure, report, throughput
from core_ext import fix

SENDER, TARGET = "ME", "VENUE"


def _ours_encoder():
    enc = fix.FixEncoder(SENDER, TARGET)

    def op():
        return enc.new_order_single(1000, "ORD123456", "INTC", 0, 100, 12345, 2)
    return op


def _simplefix_encoder():
    def op():
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, "D", header=True)
        m.append_pair(34, 1000, header=True)
        m.append_pair(49, SENDER, header=True)
        m.append_utc_timestamp(52, precision=3, header=True)
        m.append_pair(56, TARGET, header=True)
        m.append_pair(11, "ORD123456")
        m.append_pair(38, 100)
        m.append_pair(40, "2")
        ticks = 12345
        m.append_pair(44, f"{ticks // 100}.{ticks % 100:02d}")
        m.append_pair(54, "1")
        m.append_pair(55, "INTC")
        m.append_pair(59, "0")
        m.append_utc_timestamp(60, precision=3)
        return m.encode()
    return op


def execution_report() -> bytes:
    enc = fix.FixEncoder(TARGET, SENDER)
    return enc.execution_report(2000, "OID-778899", "EXEC-000123", "F", "1", "INTC", 0, 40, 60,
                                avg_px=10050, cl_ord_id="ORD123456", order_qty=100, price=10100,
                                last_qty=60, last_px=10050, decimals=2)


def _ours_parser(raw: bytes):
    p = fix.FixParser()

    def op():
        p.feed(raw)
        return p.next()
    return op


def _simplefix_parser(raw: bytes):
    p = simplefix.FixParser()

    def op():
        p.append_buffer(raw)
        return p.get_message()
    return op


def _check_equivalent(raw: bytes) -> None:
    """Both sides really do the same work: same message out."""
    ours = _ours_parser(raw)()
    theirs = _simplefix_parser(raw)()
    assert isinstance(ours, fix.FixMessage)
    assert ours.fields() == [(int(t), v) for t, v in theirs.pairs]
    enc = fix.parse_message(_ours_encoder()())
    sf = fix.parse_message(_simplefix_encoder()())
    assert [t for t, _ in enc.fields()] == [t for t, _ in sf.fields()]
    assert [v for t, v in enc.fields() if t not in (9, 10, 52, 60)] == \
        [v for t, v in sf.fields() if t not in (9, 10, 52, 60)]


def _entry(ours: Result, base: Result | None) -> dict:
    return {
        **ours.as_dict(),
        "baseline": ({**base.as_dict()} if base else None),
        "ratio": (base.p50 / ours.p50 if base else None),
    }


def _measure(quick: bool) -> tuple[list[tuple[Result, Result | None]], list[dict]]:
    samples = 2_000 if quick else 20_000
    er = execution_report()
    _check_equivalent(er)
    rows: list[tuple[Result, Result | None]] = []

    ours = measure("fix encode NewOrderSingle", _ours_encoder(), samples=samples)
    base = measure("simplefix encode NewOrderSingle", _simplefix_encoder(), samples=samples // 10 or 1)
    rows.append((ours, base))

    ours = measure("fix parse ExecutionReport", _ours_parser(er), samples=samples)
    base = measure("simplefix parse ExecutionReport", _simplefix_parser(er), samples=samples // 10 or 1)
    rows.append((ours, base))

    p = fix.FixParser()

    def parse_and_read():
        p.feed(er)
        m = p.next()
        return m.msg_type, m.seq_num, m.get(11), m.get(150), m.get(14)
    sp = simplefix.FixParser()

    def sf_parse_and_read():
        sp.append_buffer(er)
        m = sp.get_message()
        return m.message_type, int(m.get(34)), m.get(11), m.get(150), m.get(14)
    rows.append((measure("fix parse + read 5 fields", parse_and_read, samples=samples),
                 measure("simplefix parse + read 5 fields", sf_parse_and_read,
                         samples=samples // 10 or 1)))

    msg = fix.parse_message(er)
    rows.append((measure("fix validate ExecutionReport", lambda: fix.validate(msg), samples=samples),
                 None))

    entries = [_entry(o, b) for o, b in rows]
    # Throughput: one coarse call parsing a batch of back-to-back messages.
    batch = er * (2_000 if quick else 20_000)
    count = len(batch) // len(er)

    def parse_batch():
        return len(fix.FixParser(max_message_size=1 << 16).parse(batch))

    def sf_parse_batch():
        # simplefix re-slices its whole buffer per field, so it is fed one message per
        # call (as a socket reader would) rather than the whole batch at once.
        sp2 = simplefix.FixParser()
        n = 0
        for _ in range(count // 20):
            sp2.append_buffer(er)
            if sp2.get_message() is not None:
                n += 1
        return n

    tp = throughput("fix parse batch ExecutionReport", parse_batch, repeat=3)
    tp_base = throughput("simplefix parse batch ExecutionReport", sf_parse_batch, repeat=1)
    entries.append({"name": tp["name"], "unit": "msgs/s", "p50": tp["best"], "p99": None, "p999": None,
                    "max": None, "n": count,
                    "baseline": {"name": tp_base["name"], "unit": "msgs/s", "p50": tp_base["best"],
                                 "p99": None, "p999": None, "max": None, "n": count // 20},
                    "ratio": tp["best"] / tp_base["best"]})
    return rows, entries


def run(quick: bool = False) -> list[dict]:
    """Entries for `engine bench`: latency rows (ns) and one throughput row (msgs/s)."""
    return _measure(quick)[1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    t0 = time.perf_counter()
    rows, entries = _measure(quick)
    print(report(rows))
    tp = entries[-1]
    print(f"{tp['name']:32} {tp['p50']:>12,.0f} msgs/s   baseline {tp['baseline']['p50']:,.0f} msgs/s"
          f"   ratio {tp['ratio']:.1f}")
    print(f"(ns per message; {time.perf_counter() - t0:.1f} s)")
    return 0


# -- pytest-benchmark view -----------------------------------------------------

def test_bench_fix_encode_new_order_single(benchmark):
    benchmark(_ours_encoder())


def test_bench_simplefix_encode_new_order_single(benchmark):
    benchmark(_simplefix_encoder())


def test_bench_fix_parse_execution_report(benchmark):
    benchmark(_ours_parser(execution_report()))


def test_bench_simplefix_parse_execution_report(benchmark):
    benchmark(_simplefix_parser(execution_report()))


if __name__ == "__main__":
    sys.exit(main())
