"""`engine bench`: run the benchmark suite in `bench/`, print a table, write JSON.

Each `bench/bench_*.py` module exposes `run(quick) -> list[dict]` with entries
{name, unit, p50, p99, p999, max, n, baseline, ratio}. The baselines (pure-Python
references in tests/reference, simplefix, asyncio) are measured in the same run.
The suite lives in the source checkout, next to this package.
"""
from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from pathlib import Path

import orjson

from engine.errors import EngineError

# The names users and checks rely on (issue "Latency you can measure"), for the entry that
# measures exactly that; each module's own label is kept in "label".
CANONICAL_NAMES = {
    "fix encode NewOrderSingle": "fix_encode_new_order",
    "fix parse ExecutionReport": "fix_parse_exec_report",
    "book.update quotes": "book_l2_update",
    "feed per-event x64": "book_l3_replay",
    "check full chain (partial)": "risk_check",
    "itch apply/msg (L3 feed)": "itch_decode_apply",
}

MODULES = ("book", "matching", "risk", "fix", "itch", "ouch", "feed", "roundtrip", "backtest", "tick_to_trade")


def _checkout_root() -> Path:
    root = Path(__file__).resolve().parents[1]
    if not (root / "bench").is_dir() or not (root / "tests" / "reference").is_dir():
        raise EngineError(f"engine bench needs the source checkout (bench/ and tests/reference/ beside "
                          f"{root / 'engine'}); run it from the repository")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def format_table(entries: list[dict]) -> str:
    head = f"{'benchmark':34} {'unit':8} {'p50':>10} {'p99':>10} {'p99.9':>10} {'max':>11} " \
           f"{'baseline p50':>13} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    for e in entries:
        base = e.get("baseline") or {}
        ratio = e.get("ratio")
        lines.append(f"{e['name']:34} {e['unit']:8} {_fmt(e['p50']):>10} {_fmt(e['p99']):>10} "
                     f"{_fmt(e['p999']):>10} {_fmt(e['max']):>11} {_fmt(base.get('p50')):>13} "
                     f"{(f'{ratio:.1f}x' if ratio else '-'):>7}")
        inside = e.get("engine_tick_to_order")
        if inside:      # a loopback run's share spent inside `engine run` (its own recorder)
            lines.append(f"{'  of which inside engine run':34} {e['unit']:8} {_fmt(inside.get('p50_ns')):>10} "
                         f"{_fmt(inside.get('p99_ns')):>10} {_fmt(inside.get('p999_ns')):>10} "
                         f"{_fmt(inside.get('max_ns')):>11}")
    return "\n".join(lines)


def main(json_path: str | None = None, quick: bool = False, only: str | None = None) -> int:
    _checkout_root()
    names = MODULES if not only else tuple(n.strip() for n in only.split(",") if n.strip())
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        raise EngineError(f"--only: unknown benchmark module(s) {', '.join(unknown)}; "
                          f"choose from {', '.join(MODULES)}")
    entries: list[dict] = []
    started = time.time()
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        for entry in module.run(quick=quick):
            canonical = CANONICAL_NAMES.get(entry["name"])
            if canonical is not None:
                entry = {**entry, "name": canonical, "label": entry["name"]}
            entries.append(entry)
    load1, load5, _ = os.getloadavg()
    meta = {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "loadavg_1m": load1, "loadavg_5m": load5, "quick": quick,
            "seconds": round(time.time() - started, 1)}
    print(format_table(entries))
    print(f"\nmachine: {meta['cpus']} cpus, load {load1:.2f}/{load5:.2f}; {meta['seconds']} s"
          f"{' (quick)' if quick else ''}")
    if json_path:
        Path(json_path).write_bytes(orjson.dumps({"meta": meta, "benchmarks": entries},
                                                 option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        print(f"written {json_path}")
    return 0
