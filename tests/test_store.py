"""Tests of engine/store.py (SQLite store, retention), engine/capture.py (Parquet
capture) and engine/backup.py (online backup), on real files in tmp_path."""
from __future__ import annotations

import csv
import io
import os
import sqlite3
import threading
import time

import numpy as np
import orjson
import pytest

from engine import backup, capture, store
from engine.journal import Journal, list_segments
from engine.store import FillRow, OrderRow, PositionRow, Store, StoreError
from tests.conftest import shared_file

U64_MAX = 2**64 - 1


def order(i: int, **kw) -> OrderRow:
    base = dict(cl_ord_id=i, symbol="AAPL", side=i % 2, qty=100, price=12345 + i, ord_type=1, tif=0,
                state="New", filled_qty=0, stage="paper", created_ns=1_000 + i % 10**6,
                updated_ns=1_000 + i % 10**6)
    base.update(kw)
    return OrderRow(**base)


@pytest.fixture
def st(tmp_path):
    s = Store(tmp_path / "engine.sqlite")
    yield s
    s.close()


# ----------------------------------------------------------------- store

def test_orders_upsert_and_uint64_ids(st):
    st.upsert_order(order(1))
    st.upsert_order(order(U64_MAX, price=None, ord_type=0))        # market order, max uint64 id
    st.upsert_order(order(1, state="Filled", filled_qty=100, updated_ns=5000, venue_order_id="V1"))
    st.flush()
    got = st.get_order(1)
    assert got.state == "Filled" and got.filled_qty == 100 and got.venue_order_id == "V1"
    assert got.created_ns == 1001                                    # creation time kept
    assert st.get_order(U64_MAX).price is None and st.get_order(U64_MAX).cl_ord_id == U64_MAX
    assert st.get_order(2) is None
    assert sorted(o.cl_ord_id for o in st.orders()) == [1, U64_MAX]
    assert [o.cl_ord_id for o in st.orders(state="New")] == [U64_MAX]
    assert len(st.orders(states=["New", "Filled"], stage="paper")) == 2
    assert st.orders(states=[]) == []


def test_fills_are_idempotent_by_exec_id(st):
    f = FillRow("E1", 7, "AAPL", 0, 40, 12345, 2_000, "paper", fee=0.12, liquidity="maker")
    st.insert_fill(f)
    st.insert_fill(f)
    st.insert_fill(FillRow("E2", 7, "AAPL", 0, 60, 12346, 3_000, "paper"))
    st.insert_fill(FillRow("E3", 8, "MSFT", 1, 5, 500, 1_000, "shadow"))
    st.flush()
    assert [x.exec_id for x in st.fills()] == ["E3", "E1", "E2"]          # by time
    assert st.fills(cl_ord_id=7) == [f, FillRow("E2", 7, "AAPL", 0, 60, 12346, 3_000, "paper")]
    assert [x.exec_id for x in st.fills(stage="paper", since_ns=2_500)] == ["E2"]


def test_positions_evidence_and_promotions(st):
    st.upsert_position(PositionRow("paper", "AAPL", 100, 12345.5, 0.0, 1))
    st.upsert_position(PositionRow("paper", "AAPL", -20, 12000.0, 55.25, 2))
    st.upsert_position(PositionRow("live", "MSFT", 3, 500.0, 0.0, 3))
    st.record_evidence("backtest", "run-1", {"sharpe": 1.4, "max_drawdown": 0.08, "digest_runs": [1, 2]},
                       started_ns=10, ended_ns=20, digest="d1", recorded_ns=100)
    st.record_evidence("backtest", "run-1", {"sharpe": 1.6}, started_ns=10, ended_ns=30, digest="d2",
                       recorded_ns=200)                                 # same run recorded again: replaced
    st.record_evidence("paper", "run-2", {"errors": 0}, started_ns=40, ended_ns=50, recorded_ns=300)
    criteria = [{"name": "sharpe", "value": 1.6, "threshold": 1.0, "passed": True}]
    st.record_promotion("backtest", "paper", True, criteria, ["all criteria met"], evidence_ids=[1],
                        decided_by="engine", decided_ns=400)
    st.record_promotion("paper", "shadow", False, [], ["minimum duration not met"], decided_ns=500)
    st.flush()
    assert st.positions("paper") == [PositionRow("paper", "AAPL", -20, 12000.0, 55.25, 2)]
    assert [p.symbol for p in st.positions()] == ["MSFT", "AAPL"]           # live < paper
    ev = st.evidence("backtest")
    assert len(ev) == 1 and ev[0].metrics == {"sharpe": 1.6} and ev[0].digest == "d2" and ev[0].ended_ns == 30
    assert [e.stage for e in st.evidence()] == ["backtest", "paper"]
    p1, p2 = st.promotions()
    assert p1.approved is True and p1.criteria == criteria and p1.evidence_ids == [1] and p1.decided_by == "engine"
    assert st.last_promotion() == p2 and p2.approved is False and p2.reasons == ["minimum duration not met"]


@pytest.mark.parametrize("make,what", [
    (lambda: order(1, side=2), "orders.side"),
    (lambda: order(1, qty=0), "orders.qty"),
    (lambda: order(0), "orders.cl_ord_id"),
    (lambda: order(U64_MAX + 1), "orders.cl_ord_id"),
    (lambda: order(1, qty=True), "orders.qty: expected an integer"),
    (lambda: order(1, symbol=""), "orders.symbol"),
    (lambda: FillRow("E", 1, "A", 0, 1, 1, 1, "paper", fee=float("nan")), "fills.fee"),
    (lambda: FillRow("E", 1, "A", 0, 1, 1, 1, "paper", liquidity="both"), "fills.liquidity"),
    (lambda: PositionRow("paper", "A", 1, float("inf"), 0.0, 1), "positions.avg_price"),
])
def test_invalid_rows_are_refused_at_once_naming_the_field(st, make, what):
    row = make()
    method = {OrderRow: st.upsert_order, FillRow: st.insert_fill, PositionRow: st.upsert_position}[type(row)]
    with pytest.raises(StoreError, match=what):
        method(row)


def test_other_invalid_arguments(st):
    with pytest.raises(StoreError, match="stage_evidence.metrics"):
        st.record_evidence("paper", "r", [1, 2], started_ns=1, ended_ns=2)
    with pytest.raises(StoreError, match="stage_evidence.ended_ns"):
        st.record_evidence("paper", "r", {}, started_ns=5, ended_ns=2)
    with pytest.raises(StoreError, match="promotions.approved"):
        st.record_promotion("a", "b", 1, {})
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        st.record_promotion("a", "b", True, {"x": object()})


def test_a_failing_write_does_not_take_the_others_with_it(st):
    st.upsert_order(order(1))
    st._put("INSERT INTO no_such_table VALUES (1)", (), "test write")      # fails in the writer
    st.upsert_order(order(2))
    with pytest.raises(StoreError, match="test write: no such table"):
        st.flush()
    st.flush()                                                             # reported once
    assert [o.cl_ord_id for o in st.orders()] == [1, 2]
    assert st.stats["failed"] == 1


def test_wal_mode_persistence_and_concurrent_reads(tmp_path):
    path = tmp_path / "engine.sqlite"
    s = Store(path)
    assert s._query("PRAGMA journal_mode")[0][0] == "wal"
    stop = threading.Event()
    seen = []
    errors = []

    def reader():
        try:
            while not stop.is_set():
                seen.append(len(s.orders()))
        except Exception as exc:                  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(1, 501):
        s.upsert_order(order(i))
        if i % 100 == 0:
            s.flush()
    stop.set()
    t.join()
    s.close()
    assert not errors and seen and seen == sorted(seen)               # readers see monotone progress
    with pytest.raises(StoreError, match="closed"):
        s.orders()
    with Store(path) as again:
        assert len(again.orders()) == 500


def test_not_a_store(tmp_path):
    p = tmp_path / "x.sqlite"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the store: file is not a database"):
        Store(p)


# ----------------------------------------------------------------- capture

def _real_quotes() -> tuple[np.ndarray, list[str]]:
    """The real Binance quotes as QUOTE_DTYPE rows (prices in 0.01 ticks, qty in 0.001 lots)."""
    with open(shared_file("quotes.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    arr = np.empty(len(rows), capture.QUOTE_DTYPE)
    arr["ts_ns"] = [int(r["timestamp"]) * 1000 for r in rows]
    arr["recv_ns"] = [int(r["local_timestamp"]) * 1000 for r in rows]
    arr["symbol_id"] = 0
    arr["bid_px"] = [round(float(r["bid_price"]) * 100) for r in rows]
    arr["bid_qty"] = [round(float(r["bid_amount"]) * 1000) for r in rows]
    arr["ask_px"] = [round(float(r["ask_price"]) * 100) for r in rows]
    arr["ask_qty"] = [round(float(r["ask_amount"]) * 1000) for r in rows]
    return arr, ["BTCUSDT"]


def test_capture_real_quotes_round_trip_through_parquet(tmp_path):
    arr, symbols = _real_quotes()
    cap = capture.MarketDataCapture(tmp_path, "quotes", symbols, batch_rows=1024, file_max_rows=4000)
    half = arr.size // 2
    for row in arr[:half]:                                   # row by row, as the hot path would
        cap.record(*row.tolist())
    cap.record_batch(arr[half:])                             # and as a batch
    files = cap.close()
    assert len(files) >= 2 and all(f.suffix == ".parquet" for f in files)
    assert not list(tmp_path.rglob("*.tmp"))
    assert all(f.parent.name == "date=2020-02-22" for f in files)
    table = capture.read_capture(tmp_path, "quotes")
    assert table.num_rows == arr.size
    assert table.column_names == ["ts_ns", "recv_ns", "symbol", "bid_px", "bid_qty", "ask_px", "ask_qty"]
    order = np.argsort(arr["ts_ns"], kind="stable")
    for name in ("ts_ns", "recv_ns", "bid_px", "bid_qty", "ask_px", "ask_qty"):
        assert np.array_equal(table[name].to_numpy(), arr[name][order]), name
    assert set(table["symbol"].to_pylist()) == {"BTCUSDT"}
    assert cap.stats["written_rows"] == arr.size and cap.stats["dropped_rows"] == 0


def test_capture_trades_filters_and_symbols(tmp_path):
    rows = np.zeros(100, capture.TRADE_DTYPE)
    rows["ts_ns"] = np.arange(100) * 1_000_000_000 + 1_700_000_000_000_000_000
    rows["symbol_id"] = np.arange(100) % 3
    rows["price"] = np.arange(100)
    rows["qty"] = 1
    with capture.MarketDataCapture(tmp_path, "trades", ["AAPL", "MSFT", "SPY"]) as cap:
        cap.record_batch(rows)
    t = capture.read_capture(tmp_path, "trades", symbols=["MSFT"], start_ns=int(rows["ts_ns"][10]),
                             end_ns=int(rows["ts_ns"][50]))
    assert t["price"].to_pylist() == [p for p in range(10, 50) if p % 3 == 1]
    assert set(t["symbol"].to_pylist()) == {"MSFT"}


def test_capture_flush_timer_and_bad_rows(tmp_path):
    cap = capture.MarketDataCapture(tmp_path, "quotes", ["A"], flush_interval_s=0.01)
    cap.record(1, 2, 0, 3, 4, 5, 6)
    time.sleep(0.02)
    cap.maybe_flush()
    deadline = time.monotonic() + 10
    while cap.stats["written_rows"] < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert cap.stats["written_rows"] == 1
    with pytest.raises(capture.CaptureError, match="symbol_id 1 out of range"):
        cap.record(1, 2, 1, 3, 4, 5, 6)
    bad = np.zeros(2, capture.QUOTE_DTYPE)
    bad["symbol_id"] = [0, -1]
    with pytest.raises(capture.CaptureError, match="out of range"):
        cap.record_batch(bad)
    with pytest.raises(capture.CaptureError, match="dtype"):
        cap.record_batch(np.zeros(2, capture.TRADE_DTYPE))
    assert len(cap.close()) == 1
    with pytest.raises(capture.CaptureError, match="no capture files"):
        capture.read_capture(tmp_path, "trades")


def test_capture_drops_rather_than_blocks_when_the_writer_is_behind(tmp_path):
    cap = capture.MarketDataCapture(tmp_path, "quotes", ["A"], batch_rows=10, max_queue_batches=1)
    gate = threading.Event()
    orig = cap._write

    def slow(batch):
        gate.wait(10)
        orig(batch)

    cap._write = slow
    rows = np.zeros(100, capture.QUOTE_DTYPE)
    rows["ts_ns"] = 1
    cap.record_batch(rows)                 # 10 batches; the writer holds one, the queue one more
    assert cap.stats["dropped_rows"] >= 70
    gate.set()
    cap.close()
    assert cap.stats["written_rows"] + cap.stats["dropped_rows"] == 100


# ----------------------------------------------------------------- retention

def test_retention_deletes_or_archives_old_files_and_keeps_the_newest(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    now = time.time()
    ages = {"a.parquet": 40, "sub/b.parquet": 35, "c.parquet": 5, "d.log": 100, "e.parquet": 50}
    for name, days in ages.items():
        p = root / name
        p.write_text(name)
        os.utime(p, (now - days * 86400, now - days * 86400))
    res = store.apply_retention(root, 30, patterns=("*.parquet",), now=now, keep_newest=1)
    assert sorted(p.name for p in res.deleted) == ["a.parquet", "b.parquet", "e.parquet"]
    assert (root / "c.parquet").exists() and (root / "d.log").exists()
    # archive mode; keep_newest protects the newest even when old
    arch = tmp_path / "cold"
    res = store.apply_retention(root, 30, archive_dir=arch, now=now, keep_newest=1)
    assert [p.relative_to(arch).as_posix() for p in res.archived] == ["d.log"]
    assert (arch / "d.log").read_text() == "d.log"
    res = store.apply_retention(root, 1, now=now, keep_newest=1)
    assert res.deleted == [] and (root / "c.parquet").exists()
    with pytest.raises(StoreError, match="must be outside"):
        store.apply_retention(root, 1, archive_dir=root / "x")
    with pytest.raises(StoreError, match="not a directory"):
        store.apply_retention(tmp_path / "missing", 1)


# ----------------------------------------------------------------- backup

def test_online_backup_while_writing(tmp_path):
    data = tmp_path / "data"
    s = Store(data / "engine.sqlite")
    j = Journal(data / "journal", segment_max_bytes=8192)
    for i in range(1, 201):
        j.append("send", {"cl_ord_id": i})
        s.upsert_order(order(i))
    s.flush()
    stop = threading.Event()

    def keep_writing():
        i = 1000
        while not stop.is_set():
            i += 1
            j.append("send", {"cl_ord_id": i})
            s.upsert_order(order(i))
            time.sleep(0.0005)

    t = threading.Thread(target=keep_writing)
    t.start()
    out = io.StringIO()
    try:
        code = backup.backup_main(data / "engine.sqlite", data / "journal", tmp_path / "backups", out=out)
    finally:
        stop.set()
        t.join()
        j.close()
        s.close()
    assert code == 0, out.getvalue()
    (bdir,) = (tmp_path / "backups").glob("backup-*")
    manifest = orjson.loads((bdir / "manifest.json").read_bytes())
    conn = sqlite3.connect(bdir / "engine.sqlite")
    n_orders = conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert n_orders >= 200 and manifest["store"]["rows"]["orders"] == n_orders
    assert manifest["journal"]["records"] >= 200
    assert len(list_segments(bdir / "journal")) == manifest["journal"]["segments"] >= 2
    for rel, info in manifest["files"].items():
        assert (bdir / rel).stat().st_size == info["bytes"]
    assert "chain verified" in out.getvalue()
    assert not list((tmp_path / "backups").glob(".backup-*"))


def test_backup_refuses_bad_arguments_and_a_broken_journal(tmp_path):
    out = io.StringIO()
    assert backup.backup_main(tmp_path / "nope.sqlite", tmp_path, tmp_path / "b", out=out) == 2
    with Store(tmp_path / "engine.sqlite"):
        pass
    assert backup.backup_main(tmp_path / "engine.sqlite", tmp_path / "nojournal", tmp_path / "b", out=out) == 2
    with Journal(tmp_path / "journal") as j:
        for i in range(5):
            j.append("send", {"i": i})
    (seg,) = list_segments(tmp_path / "journal")
    raw = bytearray(seg.read_bytes())
    raw[10] ^= 0x01
    seg.write_bytes(bytes(raw))
    out = io.StringIO()
    assert backup.backup_main(tmp_path / "engine.sqlite", tmp_path / "journal", tmp_path / "b", out=out) == 1
    assert "does not verify" in out.getvalue() and "record seq 1" in out.getvalue()
    assert not any((tmp_path / "b").iterdir())                      # the failed backup left nothing


def test_a_bad_row_inside_a_run_of_the_same_statement_costs_only_itself(st):
    """The writer commits runs of one statement with executemany; when a row of the run
    fails, the run is redone row by row: the rows around it are kept."""
    from engine.store import _Op
    sql = "INSERT INTO probe (k, v) VALUES (?, ?)"
    st._wconn.execute("CREATE TABLE probe (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    ops = [_Op(sql, (1, "a"), "probe 1"), _Op(sql, (2, None), "probe 2"), _Op(sql, (3, "c"), "probe 3")]
    st._commit(st._wconn, ops)
    assert [r[0] for r in st._wconn.execute("SELECT k FROM probe ORDER BY k")] == [1, 3]
    assert st.stats["failed"] == 1 and st.stats["committed"] == 2
    with pytest.raises(StoreError, match="probe 2: NOT NULL"):
        st.flush()
    st._commit(st._wconn, [_Op(sql, (4, "d"), "probe 4"), _Op(sql, (5, "e"), "probe 5")])
    assert st.stats["committed"] == 4
