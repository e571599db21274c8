"""ITCH 5.0 / MoldUDP64 benchmarks: decode-and-apply into L2 books, per message.

Data: the real Bitfinex order-by-order feed (../shared/data/L3_feed.json) re-expressed
as ITCH Add / Replace / Delete messages (tests/reference/itch_ref.bitfinex_l3_to_itch),
closed with a Delete for every order left so that the packet sequence can be replayed
in a loop; a seeded synthetic flow (A/F/E/C/X/D/U/P/H/...) over four symbols as a
second data set. Packets of 20 messages; each sample is one whole
``ItchBookApplier.apply_packet`` call (result object included), divided by 20.
Target: <= 100 ns per message.

Baseline in the same run: the pure-Python reference (struct decode + dict-of-levels
books, tests/reference/itch_ref.RefBookApplier) on the same packets.

    python -m bench.bench_itch [--quick]
    pytest bench/bench_itch.py -o python_files='bench_*.py' --benchmark-only
"""
from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from pathlib import Path

from bench.harness import Result, measure_each, report, throughput
from core_ext import itch
from tests.reference import itch_ref as ref

PER_PACKET = 20
L3_FEED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "L3_feed.json"


def real_packets(limit: int | None = None) -> list[bytes] | None:
    """The L3 feed as closed-cycle ITCH packets, or None when the data is not there."""
    if not L3_FEED.is_file():
        return None
    frames = json.loads(L3_FEED.read_text())
    msgs = ref.bitfinex_l3_to_itch(frames if limit is None else frames[:limit])
    msgs = ref.close_flow(msgs, PER_PACKET)
    return ref.packets_of([ref.encode_message(m) for m in msgs], per_packet=PER_PACKET)


def synthetic_packets(n: int = 40_000, seed: int = 1) -> list[bytes]:
    msgs = ref.close_flow(ref.synthetic_flow(random.Random(seed), n), PER_PACKET)
    return ref.packets_of([ref.encode_message(m) for m in msgs], per_packet=PER_PACKET)


def _cycler(apply, packets):
    """op(i) applying the packets in order, wrapping around (the flow is a closed cycle)."""
    n = len(packets)
    pos = [0]

    def op(_i):
        p = packets[pos[0]]
        pos[0] = pos[0] + 1 if pos[0] + 1 < n else 0
        return apply(p)
    return op


def _per_message(r: Result, name: str) -> Result:
    k = PER_PACKET
    return dataclasses.replace(r, name=name, p50=r.p50 / k, p99=r.p99 / k, p999=r.p999 / k,
                               max=r.max / k)


def _check_equivalent(packets) -> None:
    """Both sides do the same work: same results and the same books after one cycle."""
    app, rapp = itch.ItchBookApplier(), ref.RefBookApplier()
    for p in packets:
        res = app.apply_packet(p)
        exp = rapp.apply_packet(p)
        assert (res.seq, res.next_seq, res.top_changed, len(res.trades)) == \
            (exp["seq"], exp["next_seq"], exp["top_changed"], len(exp["trades"]))
    for book, rbook in zip(app.books, rapp.books, strict=True):
        assert book.levels(0) == rbook.sorted_levels(0) and book.levels(1) == rbook.sorted_levels(1)
    assert app.order_count == 0 == len(rapp.orders), "the flow is not a closed cycle"


def _entry(ours: Result, base: Result | None) -> dict:
    return {**ours.as_dict(), "baseline": ({**base.as_dict()} if base else None),
            "ratio": (base.p50 / ours.p50 if base else None)}


def _bench_set(label: str, packets: list[bytes], count: int, base_count: int, rows, entries):
    _check_equivalent(packets)
    app = itch.ItchBookApplier()
    for p in packets:            # one cycle first: books and order table at steady size
        app.apply_packet(p)
    ours = measure_each("apply", _cycler(app.apply_packet, packets), count, warmup=0)
    rapp = ref.RefBookApplier()
    base = measure_each("apply", _cycler(rapp.apply_packet, packets), base_count, warmup=0)
    ours = _per_message(ours, f"itch apply/msg {label}")
    base = _per_message(base, f"ref apply/msg {label}")
    rows.append((ours, base))
    entries.append(_entry(ours, base))

    # decode only (tuples per message, the Python-facing decoder) for comparison
    dec = _per_message(measure_each("decode", _cycler(itch.decode_packet, packets), count // 4,
                                    warmup=0), f"itch decode_packet/msg {label}")
    rdec = _per_message(measure_each("decode", _cycler(ref.decode_packet, packets), base_count,
                                     warmup=0), f"ref decode_packet/msg {label}")
    rows.append((dec, rdec))
    entries.append(_entry(dec, rdec))

    n_msgs = len(packets) * PER_PACKET

    def run_all():
        a = itch.ItchBookApplier()       # a whole cycle from a fresh state
        apply = a.apply_packet
        for p in packets:
            apply(p)
        return n_msgs

    def run_all_ref():
        for p in packets[: max(1, len(packets) // 20)]:
            rapp.apply_packet(p)
        return max(1, len(packets) // 20) * PER_PACKET

    # the reference runs a prefix of the cycle: restart it so its state stays consistent
    rapp = ref.RefBookApplier()
    tp = throughput(f"itch apply throughput {label}", run_all, repeat=3)
    tp_base = throughput(f"ref apply throughput {label}", run_all_ref, repeat=1)
    entries.append({"name": tp["name"], "unit": "msgs/s", "p50": tp["best"], "p99": None,
                    "p999": None, "max": None, "n": n_msgs,
                    "baseline": {"name": tp_base["name"], "unit": "msgs/s", "p50": tp_base["best"],
                                 "p99": None, "p999": None, "max": None, "n": n_msgs // 20},
                    "ratio": tp["best"] / tp_base["best"]})


def run(quick: bool = False) -> list[dict]:
    count = 5_000 if quick else 50_000          # packets timed (x 20 messages)
    base_count = 300 if quick else 2_000
    rows: list[tuple[Result, Result | None]] = []
    entries: list[dict] = []
    real = real_packets(limit=20_000 if quick else None)
    if real is not None:
        _bench_set("(L3 feed)", real, count, base_count, rows, entries)
    _bench_set("(synthetic)", synthetic_packets(8_000 if quick else 40_000), count, base_count,
               rows, entries)
    run.rows = rows
    return entries


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    t0 = time.perf_counter()
    entries = run(quick="--quick" in argv)
    print(report(run.rows))
    for e in entries:
        if e["unit"] == "msgs/s":
            print(f"{e['name']:36} {e['p50']:>14,.0f} msgs/s   baseline {e['baseline']['p50']:>12,.0f}"
                  f"   ratio {e['ratio']:.1f}")
    print(f"(ns per message, packets of {PER_PACKET}; {time.perf_counter() - t0:.1f} s)")
    return 0


# -- pytest-benchmark view -----------------------------------------------------

def _packets():
    return real_packets(limit=20_000) or synthetic_packets(8_000)


def test_bench_itch_apply_packet(benchmark):
    packets = _packets()
    app = itch.ItchBookApplier()
    benchmark(_cycler(app.apply_packet, packets), 0)


def test_bench_ref_apply_packet(benchmark):
    packets = _packets()
    rapp = ref.RefBookApplier()
    benchmark(_cycler(rapp.apply_packet, packets), 0)


if __name__ == "__main__":
    sys.exit(main())
