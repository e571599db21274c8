"""OUCH 4.2 / SoupBinTCP benchmarks: encode and decode per message, de-framing per packet.

Baseline in the same run: the pure-Python struct reference (tests/reference/ouch_ref.py)
doing the same work (same bytes out, same tuples out; checked before timing).

    python -m bench.bench_ouch [--quick]
    pytest bench/bench_ouch.py -o python_files='bench_*.py' --benchmark-only
"""
from __future__ import annotations

import sys
import time

from bench.harness import Result, measure, report, throughput
from core_ext import ouch
from tests.reference import ouch_ref as ref

ENTER = ("O", "TOKEN0000001", "B", 100, "AAPL", 1_502_500, 0, "FIRM", "Y", "A", "N", 0, "N", " ")
ACCEPTED = ("A", 34_200_000_000_000, "TOKEN0000001", "B", 100, "AAPL", 1_502_500, 0, "FIRM", "Y",
            123456789, "A", "N", 0, "N", "L", " ")
EXECUTED = ("E", 34_200_000_000_123, "TOKEN0000001", 40, 1_502_500, "A", 987654321)
FRAMED_PACKETS = 100


def _encode_ours(fields, fn):
    buf = bytearray(256)
    args = fields[1:]

    def op():
        return fn(buf, 0, *args)
    return op


def _encode_ref(fields, direction, ptype):
    def op():
        return ref.soup_frame(ptype, ref.encode(direction, fields))
    return op


def _stream() -> bytes:
    w = ouch.OuchWriter()
    for i in range(FRAMED_PACKETS):
        if i % 3 == 0:
            w.accepted(*ACCEPTED[1:])
        elif i % 3 == 1:
            w.executed(*EXECUTED[1:])
        else:
            w.server_heartbeat()
    return w.take()


def _check_equivalent() -> None:
    buf = bytearray(256)
    for fields, fn, d, t in ((ENTER, ouch.pack_enter_order, "in", "U"),
                             (ACCEPTED, ouch.pack_accepted, "out", "S"),
                             (EXECUTED, ouch.pack_executed, "out", "S")):
        end = fn(buf, 0, *fields[1:])
        assert bytes(buf[:end]) == ref.soup_frame(t, ref.encode(d, fields))
    assert ouch.decode_outbound(ref.encode("out", EXECUTED)) == EXECUTED == \
        ref.decode_outbound(ref.encode("out", EXECUTED))
    assert ouch.decode_inbound(ref.encode("in", ENTER)) == ENTER == ref.decode_inbound(ref.encode("in", ENTER))
    stream = _stream()
    assert ouch.SoupFramer().feed(stream) == ref.soup_split(stream)[0]


def _entry(ours: Result, base: Result | None) -> dict:
    return {**ours.as_dict(), "baseline": ({**base.as_dict()} if base else None),
            "ratio": (base.p50 / ours.p50 if base else None)}


def _per_packet(r: Result, name: str) -> Result:
    k = FRAMED_PACKETS
    return Result(name, r.unit, r.p50 / k, r.p99 / k, r.p999 / k, r.max / k, r.n)


def run(quick: bool = False) -> list[dict]:
    samples = 2_000 if quick else 20_000
    bsamples = samples // 10 or 1
    _check_equivalent()
    rows: list[tuple[Result, Result | None]] = []

    rows.append((measure("ouch encode EnterOrder (framed)", _encode_ours(ENTER, ouch.pack_enter_order),
                         samples=samples),
                 measure("ref encode EnterOrder", _encode_ref(ENTER, "in", "U"), samples=bsamples)))
    w = ouch.OuchWriter()

    def writer_op():
        w.enter_order(*ENTER[1:])
        return w.take()
    rows.append((measure("ouch OuchWriter enter+take", writer_op, samples=samples),
                 measure("ref encode EnterOrder", _encode_ref(ENTER, "in", "U"), samples=bsamples)))
    rows.append((measure("ouch encode Accepted (framed)", _encode_ours(ACCEPTED, ouch.pack_accepted),
                         samples=samples),
                 measure("ref encode Accepted", _encode_ref(ACCEPTED, "out", "S"), samples=bsamples)))

    exe = ref.encode("out", EXECUTED)
    acc = ref.encode("out", ACCEPTED)
    ent = ref.encode("in", ENTER)
    dec = ouch.decode_outbound
    rdec = ref.decode_outbound
    rows.append((measure("ouch decode Executed", lambda: dec(exe), samples=samples),
                 measure("ref decode Executed", lambda: rdec(exe), samples=bsamples)))
    rows.append((measure("ouch decode Accepted", lambda: dec(acc), samples=samples),
                 measure("ref decode Accepted", lambda: rdec(acc), samples=bsamples)))
    rows.append((measure("ouch decode EnterOrder", lambda: ouch.decode_inbound(ent), samples=samples),
                 measure("ref decode EnterOrder", lambda: ref.decode_inbound(ent), samples=bsamples)))

    stream = _stream()
    framer = ouch.SoupFramer()
    ours = measure("soup feed", lambda: framer.feed(stream), samples=samples // 10 or 1, inner=1)
    base = measure("soup split", lambda: ref.soup_split(stream), samples=bsamples // 4 or 1, inner=1)
    rows.append((_per_packet(ours, "soup framer/packet (100 in 1 feed)"),
                 _per_packet(base, "ref soup_split/packet")))
    entries = [_entry(o, b) for o, b in rows]

    n = 20_000 if quick else 200_000
    batch = [exe] * n

    def decode_batch():
        for m in batch:
            dec(m)
        return n

    def ref_decode_batch():
        for m in batch[: n // 20]:
            rdec(m)
        return n // 20

    tp = throughput("ouch decode Executed batch", decode_batch, repeat=3)
    tp_base = throughput("ref decode Executed batch", ref_decode_batch, repeat=1)
    entries.append({"name": tp["name"], "unit": "msgs/s", "p50": tp["best"], "p99": None, "p999": None,
                    "max": None, "n": n,
                    "baseline": {"name": tp_base["name"], "unit": "msgs/s", "p50": tp_base["best"],
                                 "p99": None, "p999": None, "max": None, "n": n // 20},
                    "ratio": tp["best"] / tp_base["best"]})
    run.rows = rows
    return entries


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    t0 = time.perf_counter()
    entries = run(quick="--quick" in argv)
    print(report(run.rows))
    tp = entries[-1]
    print(f"{tp['name']:32} {tp['p50']:>12,.0f} msgs/s   baseline {tp['baseline']['p50']:,.0f} msgs/s"
          f"   ratio {tp['ratio']:.1f}")
    print(f"(ns per message / packet; {time.perf_counter() - t0:.1f} s)")
    return 0


# -- pytest-benchmark view -----------------------------------------------------

def test_bench_ouch_encode_enter_order(benchmark):
    benchmark(_encode_ours(ENTER, ouch.pack_enter_order))


def test_bench_ref_encode_enter_order(benchmark):
    benchmark(_encode_ref(ENTER, "in", "U"))


def test_bench_ouch_decode_executed(benchmark):
    exe = ref.encode("out", EXECUTED)
    benchmark(ouch.decode_outbound, exe)


def test_bench_ref_decode_executed(benchmark):
    exe = ref.encode("out", EXECUTED)
    benchmark(ref.decode_outbound, exe)


def test_bench_soup_framer_feed(benchmark):
    stream = _stream()
    framer = ouch.SoupFramer()
    benchmark(framer.feed, stream)


if __name__ == "__main__":
    sys.exit(main())
