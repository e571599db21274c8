"""`engine demo`: a seeded synthetic market replayed through the compiled core.

What it does, honestly: for each symbol it generates an order-by-order flow
(gateway.synthetic), replays it through the L3 matching book (core_ext.matching) in
batches, keeps an L2 book (core_ext.book) in step with the matching book's depth, and
runs a toy quoting strategy whose every order goes through the pre-trade risk kernel
(core_ext.risk) before it may reach the book. A few deliberately bad orders (fat
finger, oversize, duplicate id, over the position limit) show the kernel rejecting
with its reason codes. Then it prints what happened.

The venue simulator on loopback and the stage pipeline (backtest → paper → shadow →
small with the promotion gate) are separate issues; this demo does not pretend to run
them.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from core_ext import book as l2
from core_ext import matching as mb
from core_ext import risk as rk
from gateway import synthetic
from gateway.exchange import flow_to_ops

OUR_OWNER = 1                 # owner id of our orders in the matching book
OUR_ID_BASE = 1 << 40         # our order ids, far from the synthetic flow's ids
CHUNK = 2_000                 # synthetic events between two strategy decisions
DEPTH = 10                    # L2 levels mirrored from the matching book
TICK = 0.01                   # price of one tick, for display only


@dataclass
class SymbolResult:
    symbol: str
    events: int = 0
    seconds: float = 0.0
    trades: int = 0
    volume: int = 0
    our_orders_sent: int = 0
    our_fills: int = 0
    our_filled_qty: int = 0
    position: int = 0
    cash_ticks: int = 0
    rejects: Counter = field(default_factory=Counter)
    bad_order_rejects: list = field(default_factory=list)
    best_bid: int | None = None
    best_ask: int | None = None
    bid_depth: tuple = ()
    ask_depth: tuple = ()
    crossed_updates: int = 0


def _load_limits(kernel: rk.RiskKernel, inst: int) -> None:
    kernel.add_instrument(inst, contract_multiplier=1)
    kernel.set_instrument_limits(inst, max_order_qty=500, max_order_notional=500 * 12_000,
                                 price_band_bps=200, max_position=2_000, max_open_orders=20,
                                 max_ref_age_ns=1_000_000_000)


def run_symbol(symbol: str, inst: int, events: int, seed: int, kernel: rk.RiskKernel) -> SymbolResult:
    res = SymbolResult(symbol)
    flow = synthetic.generate(events, seed)
    ops = flow_to_ops(flow)
    book = mb.MatchingBook(symbol)
    l2book = l2.L2Book(symbol)
    statuses = np.zeros(CHUNK, dtype=np.uint8)
    next_id = OUR_ID_BASE + (inst << 32)  # client order ids are unique per account
    our_open: dict[int, int] = {}   # order id -> side
    bad_orders_due = [  # (chunk index, label, qty, price offset in ticks from mid)
        (5, "fat finger: 5% through the market", 10, 500),
        (9, "oversize: 600 lots (max 500)", 600, 0),
        (13, "duplicate client order id", 10, -5),
    ]
    started = time.perf_counter()
    for chunk_no, start in enumerate(range(0, len(ops), CHUNK)):
        rows = ops[start:start + CHUNK]
        book.apply_ops(rows, statuses)
        now_ns = int(flow["ts_ns"][start + len(rows) - 1])
        execs, _ = book.drain_events()
        res.trades += len(execs)
        res.volume += int(execs["qty"].sum()) if len(execs) else 0
        for e in execs[(execs["maker_owner"] == OUR_OWNER) | (execs["taker_owner"] == OUR_OWNER)]:
            for owner, side, leaves, oid in ((e["maker_owner"], e["maker_side"], e["maker_leaves"],
                                              e["maker_order_id"]),
                                             (e["taker_owner"], e["aggressor_side"], e["taker_leaves"],
                                              e["taker_order_id"])):
                if owner != OUR_OWNER:
                    continue
                qty, price = int(e["qty"]), int(e["price"])
                kernel.on_fill(inst, int(side), qty, price, int(leaves))
                res.our_fills += 1
                res.our_filled_qty += qty
                res.position += qty if side == mb.SIDE_BUY else -qty
                res.cash_ticks += -qty * price if side == mb.SIDE_BUY else qty * price
                if leaves == 0:
                    our_open.pop(int(oid), None)
        # keep the L2 book in step with the matching book (top DEPTH levels)
        bids, asks = book.depth(mb.SIDE_BUY, DEPTH), book.depth(mb.SIDE_SELL, DEPTH)
        l2book.load_snapshot(np.column_stack([bids["price"], bids["qty"]]),
                             np.column_stack([asks["price"], asks["qty"]]))
        if l2book.best_bid is None or l2book.best_ask is None:
            continue
        mid = (l2book.best_bid + l2book.best_ask) // 2
        kernel.set_reference_price(inst, mid, now_ns)
        # toy strategy: cancel what we have, quote one lot-size either side at the touch
        for oid, side in list(our_open.items()):
            info = book.order(oid)
            if info is not None and book.cancel(oid) == mb.MATCH_OK:
                kernel.on_cancel(inst, side, info.qty)
            our_open.pop(oid)
        book.drain_events()
        for side, price in ((mb.SIDE_BUY, l2book.best_bid), (mb.SIDE_SELL, l2book.best_ask)):
            next_id += 1
            code = kernel.check(inst, side, 25, price, next_id, now_ns)
            if code != rk.RISK_OK:
                res.rejects[rk.REJECT_REASONS[code]] += 1
                continue
            status = book.submit(next_id, OUR_OWNER, side, 25, price, mb.ORDTYPE_LIMIT, mb.TIF_DAY)
            if status != mb.MATCH_OK:
                kernel.on_reject(inst, side, 25)
                continue
            res.our_orders_sent += 1
            our_open[next_id] = side
        for due, label, qty, offset in bad_orders_due:
            if chunk_no == due:
                order_id = next_id if "duplicate" in label else next_id + 1
                next_id = max(next_id, order_id)
                code = kernel.check(inst, mb.SIDE_BUY, qty, mid + offset, order_id, now_ns)
                res.bad_order_rejects.append((label, rk.REJECT_REASONS.get(code, "RISK_OK")))
                if code == rk.RISK_OK:  # never expected; release the reservation honestly
                    kernel.on_reject(inst, mb.SIDE_BUY, qty)
    res.seconds = time.perf_counter() - started
    res.events = len(ops)
    res.best_bid, res.best_ask = l2book.best_bid, l2book.best_ask
    res.bid_depth = tuple(l2book.levels(mb.SIDE_BUY)[:5])
    res.ask_depth = tuple(l2book.levels(mb.SIDE_SELL)[:5])
    res.crossed_updates = l2book.crossed_updates
    return res


def _px(ticks: int | None) -> str:
    return "-" if ticks is None else f"{ticks * TICK:,.2f}"


def main(seed: int = 7, events: int = 200_000, symbols: list[str] | None = None) -> int:
    symbols = [s.strip().upper() for s in (symbols or ["AAPL", "MSFT"]) if s.strip()]
    print(f"engine demo: seeded synthetic market (seed {seed}, {events:,} order events per symbol) "
          f"through the compiled core\n  L3 matching book -> L2 book -> toy quoting strategy -> "
          f"pre-trade risk kernel -> matching book\n")
    kernel = rk.RiskKernel()
    kernel.set_account_limits(max_gross_exposure=50_000_000, max_concentration_bps=10_000,
                              concentration_floor=0, max_orders_per_window=1_000,
                              window_ns=1_000_000_000)
    results = []
    for inst, symbol in enumerate(symbols):
        _load_limits(kernel, inst)
        results.append(run_symbol(symbol, inst, events, seed + inst, kernel))
    for r in results:
        rate = r.events / r.seconds if r.seconds else 0.0
        print(f"{r.symbol}: {r.events:,} events in {r.seconds * 1e3:,.0f} ms ({rate / 1e6:,.2f} M events/s "
              f"including the strategy), {r.trades:,} trades, {r.volume:,} lots traded")
        print(f"  final book: bid {_px(r.best_bid)}  ask {_px(r.best_ask)}  "
              f"(crossed L2 updates seen: {r.crossed_updates})")
        print("  depth (price x lots): bids " + ", ".join(f"{_px(p)}x{q}" for p, q in r.bid_depth)
              + " | asks " + ", ".join(f"{_px(p)}x{q}" for p, q in r.ask_depth))
        pnl = r.cash_ticks + r.position * ((r.best_bid + r.best_ask) // 2 if r.best_bid and r.best_ask else 0)
        print(f"  our quotes: {r.our_orders_sent:,} orders sent, {r.our_fills:,} fills "
              f"({r.our_filled_qty:,} lots), position {r.position:+,} lots, "
              f"mark-to-mid P&L {_px(pnl)}")
        for label, reason in r.bad_order_rejects:
            print(f"  deliberately bad order ({label}): {reason}")
        if r.rejects:
            print("  risk rejects of the strategy's own quotes: "
                  + ", ".join(f"{k} x{v}" for k, v in r.rejects.most_common()))
    counters = kernel.counters()
    print("\nrisk kernel counters: " + ", ".join(
        f"{rk.REJECT_REASONS[code]}={int(n)}" for code, n in enumerate(counters) if n and code in rk.REJECT_REASONS))
    print("\nnot in this demo yet: venue simulator on loopback, stages and promotion gate (see README).")
    return 0
