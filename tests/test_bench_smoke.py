"""`engine bench --quick` as CI's smoke test: it runs, writes the JSON with every named
benchmark and its fields. It never asserts on the numbers (timing is not a test)."""
from __future__ import annotations

import subprocess
import sys

import orjson

from tests.conftest import REPO_ROOT

NAMES = ("fix_encode_new_order", "fix_parse_exec_report", "book_l2_update", "book_l3_replay", "risk_check",
         "itch_decode_apply", "tick_to_trade_inprocess", "tick_to_trade_loopback", "order_ack_roundtrip",
         "backtest_quotes")


def test_engine_bench_quick_writes_every_named_benchmark(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "bench", "--quick", "--json", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = orjson.loads(out.read_bytes())
    by_name = {e["name"]: e for e in doc["benchmarks"]}
    missing = [n for n in NAMES if n not in by_name]
    assert not missing, missing
    for name in NAMES:
        e = by_name[name]
        for key in ("unit", "p50", "p99", "p999", "max", "n"):
            assert key in e, (name, key)
        assert e["n"] > 0
        if e.get("baseline") is not None:
            assert e["ratio"] is not None and "p50" in e["baseline"] and "name" in e["baseline"]
    # the loopback runs carry the engine's own share, from the JSON line `engine run`
    # prints when it stops: at least one tick_to_order sample per order the venue timed
    for name in ("tick_to_trade_loopback", "tick_to_trade_loopback_cython"):
        inside = by_name[name]["engine_tick_to_order"]
        assert inside["n"] >= by_name[name]["n"], (name, inside)
        assert 0 < inside["p50_ns"] <= inside["p99_ns"] <= inside["p999_ns"] <= inside["max_ns"], (name, inside)
    # the floor under the loopback rows (the same trip with a relay that does no work),
    # with its asyncio baseline
    floor = by_name["loopback_floor"]
    assert floor["n"] > 0 and floor["baseline"]["name"] == "loopback_floor[asyncio]", floor
    assert "of which inside engine run" in proc.stdout
    assert "loadavg_1m" in doc["meta"] and doc["meta"]["quick"] is True
    assert "tick_to_trade_inprocess" in proc.stdout


def test_engine_bench_rejects_an_unknown_module():
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "bench", "--only", "nosuch"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "nosuch" in proc.stderr and "Traceback" not in proc.stderr


def test_loopback_burst_probe_times_both_packets_at_the_engine():
    """bench.loopback_burst runs `engine run` with the write probe loaded and lines the
    engine's write times up with the venue's sends (it raises when they do not line up:
    a write before its packet was sent, or fewer writes than orders)."""
    proc = subprocess.run([sys.executable, "-m", "bench.loopback_burst", "--quick"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("loopback burst, compiled strategy, n=500"), lines
    for which in ("first packet", "second packet"):
        (line,) = [ln for ln in lines if ln.strip().startswith(which)]
        assert "engine write p50" in line and "venue read p50" in line, line
