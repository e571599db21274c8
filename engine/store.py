"""The embedded store: SQLite (WAL) for orders, fills, positions, stage evidence and
promotion decisions; plus file retention.

Storage, retention and backup
=============================

A running engine keeps its state under one data directory::

    data/
      journal/        order journal: hash-chained JSON-lines segments (engine.journal).
                      The source of truth for orders: written before an order leaves,
                      replayed on restart, verified by `engine audit verify`.
      engine.sqlite   this store (+ engine.sqlite-wal, -shm while open): orders, fills,
                      positions, stage evidence, promotion decisions. A queryable view
                      derived from the journal and the venue; rebuilt from them if lost.
      capture/        market data captured to Parquet (engine.capture), one directory
                      per kind (quotes/, trades/), files part-<UTC time>-<n>.parquet.
      logs/           JSON-lines logs (engine.logs): engine.log, orders.log, fills.log,
                      risk.log, rotated by size or time; archive/ holds gzipped rotations.

*Writes stay off the hot path.* The journal's writer thread fsyncs at most
``fsync_interval_ms`` after a record; this store and the capture write from their own
background threads; readers of the store query SQLite directly (WAL lets them run
while the writer commits). The store uses ``synchronous=NORMAL``: a power cut can lose
its last transactions, never its consistency, and the journal has them.

*Retention.* ``apply_retention(directory, max_age_days, archive_dir=None)`` deletes
files older than N days (by modification time) or, with ``archive_dir``, moves them
there keeping their relative path; the newest ``keep_newest`` matching files are never
touched (the live segment or log). Typical use, from a daily timer or cron::

    apply_retention("data/capture", 30, patterns=("*.parquet",))
    apply_retention("data/logs/archive", 90)
    apply_retention("data/journal", 365, patterns=("journal-*.jsonl",), archive_dir="/mnt/cold/journal")

Pruning journal segments is allowed: `engine audit verify` then checks the chain from
the first remaining record and says so ("older segments pruned"); archive them instead
of deleting them if the full chain must stay verifiable.

*Backup.* ``engine backup`` (``engine.backup.backup_main(store_path, journal_dir,
out_dir)``) writes ``out_dir/backup-<UTC time>/`` with ``engine.sqlite`` (an online copy
through ``sqlite3.Connection.backup``: consistent while the engine keeps writing),
``journal/`` (the segments, copied in order; a record being written at that moment is
at worst a torn tail, which recovery discards) and ``manifest.json`` (size and SHA-256
of every file, record counts, the journal's last seq and hash). The copy is checked
before the command reports success: ``PRAGMA integrity_check`` on the database copy and
the hash chain of the journal copy. To restore, stop the engine and copy
``engine.sqlite`` and ``journal/`` back into the data directory; on start the engine
replays the journal and reconciles with the venue before trading.

API
===

``Store(path)`` opens (creating) the database and starts the writer thread. Writes
(`upsert_order`, `insert_fill`, `upsert_position`, `record_evidence`,
`record_promotion`) validate their arguments at once (raising `StoreError` naming the
field), then queue; the writer commits queued writes in groups, each write in its own
savepoint so one failing write does not take others with it. ``flush()`` waits until
everything queued has been committed and raises `StoreError` if a write failed since
the previous flush. Reads (`get_order`, `orders`, `fills`, `positions`, `evidence`,
`promotions`, `last_promotion`) query directly on a per-thread connection and see
what has been committed (``flush()`` first to read your own writes).

Units: prices int ticks, quantities int lots, times int ns since the epoch (UTC),
``cl_ord_id`` uint64 (stored as the signed 64-bit integer with the same bits).
"""
from __future__ import annotations

import fnmatch
import logging
import os
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from engine.errors import EngineError

log = logging.getLogger("engine.store")
#: the writer commits at most this often (rows queue up in between; a flush() waits at most this much longer)
WRITE_INTERVAL_S = 0.02

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS orders (
    cl_ord_id      INTEGER PRIMARY KEY,        -- uint64 bits as int64
    symbol         TEXT    NOT NULL,
    side           INTEGER NOT NULL CHECK (side IN (0, 1)),
    qty            INTEGER NOT NULL CHECK (qty > 0),
    price          INTEGER,                    -- ticks; NULL for a market order
    ord_type       INTEGER NOT NULL,
    tif            INTEGER NOT NULL,
    state          TEXT    NOT NULL,
    filled_qty     INTEGER NOT NULL CHECK (filled_qty >= 0),
    stage          TEXT    NOT NULL,
    created_ns     INTEGER NOT NULL,
    updated_ns     INTEGER NOT NULL,
    venue_order_id TEXT,
    reason         TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS orders_state ON orders (state);
CREATE INDEX IF NOT EXISTS orders_stage ON orders (stage, created_ns);
CREATE TABLE IF NOT EXISTS fills (
    exec_id    TEXT    PRIMARY KEY,
    cl_ord_id  INTEGER NOT NULL,
    symbol     TEXT    NOT NULL,
    side       INTEGER NOT NULL CHECK (side IN (0, 1)),
    qty        INTEGER NOT NULL CHECK (qty > 0),
    price      INTEGER NOT NULL,
    ts_ns      INTEGER NOT NULL,
    stage      TEXT    NOT NULL,
    fee        REAL    NOT NULL,
    liquidity  TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS fills_order ON fills (cl_ord_id);
CREATE INDEX IF NOT EXISTS fills_stage_ts ON fills (stage, ts_ns);
CREATE TABLE IF NOT EXISTS positions (
    stage        TEXT    NOT NULL,
    symbol       TEXT    NOT NULL,
    qty          INTEGER NOT NULL,             -- lots, signed
    avg_price    REAL    NOT NULL,             -- ticks
    realized_pnl REAL    NOT NULL,             -- account currency
    updated_ns   INTEGER NOT NULL,
    PRIMARY KEY (stage, symbol)
) STRICT;
CREATE TABLE IF NOT EXISTS stage_evidence (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    stage       TEXT    NOT NULL,
    run_id      TEXT    NOT NULL,
    started_ns  INTEGER NOT NULL,
    ended_ns    INTEGER NOT NULL,
    metrics     TEXT    NOT NULL,              -- JSON object
    digest      TEXT,
    recorded_ns INTEGER NOT NULL,
    UNIQUE (stage, run_id)
) STRICT;
CREATE TABLE IF NOT EXISTS promotions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    from_stage   TEXT    NOT NULL,
    to_stage     TEXT    NOT NULL,
    approved     INTEGER NOT NULL CHECK (approved IN (0, 1)),
    criteria     TEXT    NOT NULL,             -- JSON
    reasons      TEXT    NOT NULL,             -- JSON list of strings
    evidence_ids TEXT    NOT NULL,             -- JSON list of stage_evidence ids
    decided_ns   INTEGER NOT NULL,
    decided_by   TEXT
) STRICT;
"""


class StoreError(EngineError, ValueError):
    """A store argument is invalid, a queued write failed, or the database cannot be
    opened; the message names the table and field."""


def _u64_to_i64(v: int) -> int:
    return v - (1 << 64) if v >= (1 << 63) else v


def _i64_to_u64(v: int) -> int:
    return v + (1 << 64) if v < 0 else v


def _int(name: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise StoreError(f"{name}: expected an integer, got {v!r}")
    if lo is not None and v < lo:
        raise StoreError(f"{name}: must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise StoreError(f"{name}: must be <= {hi}, got {v}")
    return v


def _str(name: str, v: Any, *, optional: bool = False) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v:
        raise StoreError(f"{name}: expected a non-empty string, got {v!r}")
    return v


def _float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise StoreError(f"{name}: expected a finite number, got {v!r}")
    return float(v)


_I64 = (-(1 << 63), (1 << 63) - 1)


@dataclass(frozen=True, slots=True)
class OrderRow:
    cl_ord_id: int                 # uint64
    symbol: str
    side: int                      # 0 buy, 1 sell
    qty: int                       # lots
    price: int | None              # ticks; None for a market order
    ord_type: int                  # ORDTYPE_* of core_ext.common
    tif: int                       # TIF_* of core_ext.common
    state: str                     # the order manager's state name
    filled_qty: int
    stage: str
    created_ns: int
    updated_ns: int
    venue_order_id: str | None = None
    reason: str | None = None      # reject/cancel reason

    def validate(self) -> None:
        _int("orders.cl_ord_id", self.cl_ord_id, 1, (1 << 64) - 1)
        _str("orders.symbol", self.symbol)
        _int("orders.side", self.side, 0, 1)
        _int("orders.qty", self.qty, 1, _I64[1])
        if self.price is not None:
            _int("orders.price", self.price, *_I64)
        _int("orders.ord_type", self.ord_type, 0, 255)
        _int("orders.tif", self.tif, 0, 255)
        _str("orders.state", self.state)
        _int("orders.filled_qty", self.filled_qty, 0, _I64[1])
        _str("orders.stage", self.stage)
        _int("orders.created_ns", self.created_ns, 0, _I64[1])
        _int("orders.updated_ns", self.updated_ns, 0, _I64[1])
        _str("orders.venue_order_id", self.venue_order_id, optional=True)
        if self.reason is not None and not isinstance(self.reason, str):
            raise StoreError(f"orders.reason: expected a string, got {self.reason!r}")


@dataclass(frozen=True, slots=True)
class FillRow:
    exec_id: str                   # unique per execution (the venue's ExecID)
    cl_ord_id: int
    symbol: str
    side: int
    qty: int
    price: int                     # ticks
    ts_ns: int
    stage: str
    fee: float = 0.0               # account currency
    liquidity: str | None = None   # "maker" | "taker" | None

    def validate(self) -> None:
        _str("fills.exec_id", self.exec_id)
        _int("fills.cl_ord_id", self.cl_ord_id, 1, (1 << 64) - 1)
        _str("fills.symbol", self.symbol)
        _int("fills.side", self.side, 0, 1)
        _int("fills.qty", self.qty, 1, _I64[1])
        _int("fills.price", self.price, *_I64)
        _int("fills.ts_ns", self.ts_ns, 0, _I64[1])
        _str("fills.stage", self.stage)
        _float("fills.fee", self.fee)
        if self.liquidity not in (None, "maker", "taker"):
            raise StoreError(f"fills.liquidity: expected 'maker', 'taker' or None, got {self.liquidity!r}")


@dataclass(frozen=True, slots=True)
class PositionRow:
    stage: str
    symbol: str
    qty: int                       # lots, signed
    avg_price: float               # ticks
    realized_pnl: float            # account currency
    updated_ns: int

    def validate(self) -> None:
        _str("positions.stage", self.stage)
        _str("positions.symbol", self.symbol)
        _int("positions.qty", self.qty, *_I64)
        _float("positions.avg_price", self.avg_price)
        _float("positions.realized_pnl", self.realized_pnl)
        _int("positions.updated_ns", self.updated_ns, 0, _I64[1])


@dataclass(frozen=True, slots=True)
class EvidenceRow:
    id: int
    stage: str
    run_id: str
    started_ns: int
    ended_ns: int
    metrics: dict[str, Any]
    digest: str | None
    recorded_ns: int


@dataclass(frozen=True, slots=True)
class PromotionRow:
    id: int
    from_stage: str
    to_stage: str
    approved: bool
    criteria: Any                  # JSON: e.g. [{"name", "value", "threshold", "passed"}, ...]
    reasons: list[str]
    evidence_ids: list[int]
    decided_ns: int
    decided_by: str | None


def _json(name: str, v: Any) -> str:
    try:
        return orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError as exc:
        raise StoreError(f"{name}: not JSON-serialisable: {exc}") from None


_STOP = object()


@dataclass
class _Op:
    sql: str
    params: Sequence[Any]
    what: str


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


class Store:
    """See the module docstring."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "NORMAL",
                 max_batch: int = 1000, busy_timeout_ms: int = 5000) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StoreError(f"synchronous: expected OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = Path(path)
        self._sync_mode = synchronous.upper()
        self._busy_ms = busy_timeout_ms
        self.max_batch = max_batch
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the store: {exc}") from exc
        try:
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {row[0]}, this engine knows {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{self.path}: not a usable engine store: {exc}") from exc
        self._wconn = conn
        self._queue: queue.Queue[Any] = queue.Queue()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._errors: list[str] = []
        self._errors_lock = threading.Lock()
        self.stats = {"committed": 0, "failed": 0, "transactions": 0}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._sync_mode}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        conn = self._wconn
        while True:
            item = self._queue.get()
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = False
            ops = []
            flushes = []
            for it in batch:
                if it is _STOP:
                    stop = True
                elif isinstance(it, _Flush):
                    flushes.append(it)
                else:
                    ops.append(it)
            if ops:
                try:
                    self._commit(conn, ops)
                except Exception as exc:          # never let the writer thread die
                    self._fail(f"unexpected {type(exc).__name__}: {exc}", len(ops))
            for f in flushes:
                f.done.set()
            for _ in batch:
                self._queue.task_done()
            if stop:
                return
            if not flushes:
                # let the next rows queue up: the event loop's put then wakes nobody (a
                # woken writer takes the GIL from the loop, on the order's path)
                time.sleep(WRITE_INTERVAL_S)

    def _commit(self, conn: sqlite3.Connection, ops: list[_Op]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._fail(f"cannot begin a transaction: {exc}", len(ops))
            return
        ok = 0
        # runs of the same statement go in one executemany (binding in C: the writer
        # holds the GIL far less per row); a run that fails is redone row by row, so one
        # bad row costs only itself, as before
        i, n = 0, len(ops)
        while i < n:
            j = i + 1
            while j < n and ops[j].sql == ops[i].sql:
                j += 1
            run = ops[i:j]
            i = j
            if len(run) > 1:
                try:
                    conn.execute("SAVEPOINT r")
                    conn.executemany(run[0].sql, [op.params for op in run])
                    conn.execute("RELEASE r")
                    ok += len(run)
                    continue
                except sqlite3.Error:
                    try:
                        conn.execute("ROLLBACK TO r")
                        conn.execute("RELEASE r")
                    except sqlite3.Error:
                        pass
            for op in run:
                try:
                    conn.execute("SAVEPOINT w")
                    conn.execute(op.sql, op.params)
                    conn.execute("RELEASE w")
                    ok += 1
                except sqlite3.Error as exc:
                    try:
                        conn.execute("ROLLBACK TO w")
                        conn.execute("RELEASE w")
                    except sqlite3.Error:
                        pass
                    self._fail(f"{op.what}: {exc}", 1)
        try:
            conn.execute("COMMIT")
            self.stats["committed"] += ok
            self.stats["transactions"] += 1
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._fail(f"commit failed: {exc}", ok)

    def _fail(self, message: str, count: int) -> None:
        self.stats["failed"] += count
        log.error("store write failed: %s", message)
        with self._errors_lock:
            self._errors.append(message)

    def _put(self, sql: str, params: Sequence[Any], what: str) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: store is closed")
        self._queue.put(_Op(sql, params, what))

    def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until every write queued so far is committed. Raises `StoreError` on
        timeout or if a write failed since the previous flush (its message)."""
        if not self._closed:
            marker = _Flush()
            self._queue.put(marker)
            if not marker.done.wait(timeout):
                raise StoreError(f"{self.path}: flush timed out after {timeout} s")
        with self._errors_lock:
            errors, self._errors = self._errors, []
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise StoreError(f"{self.path}: write failed: {errors[0]}{more}")

    def close(self) -> None:
        """Commit what is queued, stop the writer, close every connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        try:
            self._wconn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._wconn.close()
        with self._readers_lock:
            for c in self._readers:
                c.close()
            self._readers.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writes

    def upsert_order(self, row: OrderRow) -> None:
        """Insert or replace the order with this cl_ord_id."""
        row.validate()
        self._put(
            "INSERT INTO orders (cl_ord_id, symbol, side, qty, price, ord_type, tif, state, filled_qty, stage,"
            " created_ns, updated_ns, venue_order_id, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (cl_ord_id) DO UPDATE SET symbol=excluded.symbol, side=excluded.side,"
            " qty=excluded.qty, price=excluded.price, ord_type=excluded.ord_type, tif=excluded.tif,"
            " state=excluded.state, filled_qty=excluded.filled_qty, stage=excluded.stage,"
            " updated_ns=excluded.updated_ns, venue_order_id=excluded.venue_order_id, reason=excluded.reason",
            (_u64_to_i64(row.cl_ord_id), row.symbol, row.side, row.qty, row.price, row.ord_type, row.tif,
             row.state, row.filled_qty, row.stage, row.created_ns, row.updated_ns, row.venue_order_id,
             row.reason),
            f"orders cl_ord_id={row.cl_ord_id}")

    def insert_fill(self, row: FillRow) -> None:
        """Insert a fill; a fill whose exec_id is already stored is ignored (replays
        are idempotent)."""
        row.validate()
        self._put(
            "INSERT OR IGNORE INTO fills (exec_id, cl_ord_id, symbol, side, qty, price, ts_ns, stage, fee,"
            " liquidity) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (row.exec_id, _u64_to_i64(row.cl_ord_id), row.symbol, row.side, row.qty, row.price, row.ts_ns,
             row.stage, float(row.fee), row.liquidity),
            f"fills exec_id={row.exec_id!r}")

    def upsert_position(self, row: PositionRow) -> None:
        row.validate()
        self._put(
            "INSERT INTO positions (stage, symbol, qty, avg_price, realized_pnl, updated_ns) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT (stage, symbol) DO UPDATE SET qty=excluded.qty, avg_price=excluded.avg_price,"
            " realized_pnl=excluded.realized_pnl, updated_ns=excluded.updated_ns",
            (row.stage, row.symbol, row.qty, float(row.avg_price), float(row.realized_pnl), row.updated_ns),
            f"positions {row.stage}/{row.symbol}")

    def record_evidence(self, stage: str, run_id: str, metrics: dict[str, Any], *, started_ns: int,
                        ended_ns: int, digest: str | None = None, recorded_ns: int | None = None) -> None:
        """Record (or replace) the evidence of one run of a stage: its metrics as a JSON
        object, its time span and the result digest of a reproducible run."""
        _str("stage_evidence.stage", stage)
        _str("stage_evidence.run_id", run_id)
        if not isinstance(metrics, dict):
            raise StoreError(f"stage_evidence.metrics: expected a dict, got {type(metrics).__name__}")
        _int("stage_evidence.started_ns", started_ns, 0, _I64[1])
        _int("stage_evidence.ended_ns", ended_ns, started_ns, _I64[1])
        _str("stage_evidence.digest", digest, optional=True)
        rec = time.time_ns() if recorded_ns is None else _int("stage_evidence.recorded_ns", recorded_ns, 0)
        self._put(
            "INSERT INTO stage_evidence (stage, run_id, started_ns, ended_ns, metrics, digest, recorded_ns)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT (stage, run_id) DO UPDATE SET started_ns=excluded.started_ns,"
            " ended_ns=excluded.ended_ns, metrics=excluded.metrics, digest=excluded.digest,"
            " recorded_ns=excluded.recorded_ns",
            (stage, run_id, started_ns, ended_ns, _json("stage_evidence.metrics", metrics), digest, rec),
            f"stage_evidence {stage}/{run_id}")

    def record_promotion(self, from_stage: str, to_stage: str, approved: bool, criteria: Any,
                         reasons: Iterable[str] = (), *, evidence_ids: Iterable[int] = (),
                         decided_by: str | None = None, decided_ns: int | None = None) -> None:
        """Record a promotion decision with the criteria it was taken on."""
        _str("promotions.from_stage", from_stage)
        _str("promotions.to_stage", to_stage)
        if not isinstance(approved, bool):
            raise StoreError(f"promotions.approved: expected a bool, got {approved!r}")
        reasons_l = list(reasons)
        if not all(isinstance(r, str) for r in reasons_l):
            raise StoreError("promotions.reasons: expected strings")
        ids = [_int("promotions.evidence_ids", i, 1) for i in evidence_ids]
        dec = time.time_ns() if decided_ns is None else _int("promotions.decided_ns", decided_ns, 0)
        self._put(
            "INSERT INTO promotions (from_stage, to_stage, approved, criteria, reasons, evidence_ids, decided_ns,"
            " decided_by) VALUES (?,?,?,?,?,?,?,?)",
            (from_stage, to_stage, int(approved), _json("promotions.criteria", criteria),
             _json("promotions.reasons", reasons_l), _json("promotions.evidence_ids", ids), dec, decided_by),
            f"promotions {from_stage}->{to_stage}")

    # ------------------------------------------------------------ reads

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"{self.path}: store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._reader().execute(sql, params).fetchall()

    @staticmethod
    def _order(r: tuple) -> OrderRow:
        return OrderRow(_i64_to_u64(r[0]), *r[1:])

    _ORDER_COLS = ("cl_ord_id, symbol, side, qty, price, ord_type, tif, state, filled_qty, stage, created_ns,"
                   " updated_ns, venue_order_id, reason")

    def get_order(self, cl_ord_id: int) -> OrderRow | None:
        _int("cl_ord_id", cl_ord_id, 1, (1 << 64) - 1)
        rows = self._query(f"SELECT {self._ORDER_COLS} FROM orders WHERE cl_ord_id = ?", (_u64_to_i64(cl_ord_id),))
        return self._order(rows[0]) if rows else None

    def orders(self, *, state: str | None = None, stage: str | None = None,
               states: Iterable[str] | None = None) -> list[OrderRow]:
        """Orders by creation time, optionally of one state (or any of ``states``) and stage."""
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if states is not None:
            st = list(states)
            where.append(f"state IN ({','.join('?' * len(st))})" if st else "0")
            params.extend(st)
        if stage is not None:
            where.append("stage = ?")
            params.append(stage)
        sql = f"SELECT {self._ORDER_COLS} FROM orders"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [self._order(r) for r in self._query(sql + " ORDER BY created_ns, cl_ord_id", params)]

    def fills(self, *, cl_ord_id: int | None = None, stage: str | None = None,
              since_ns: int | None = None) -> list[FillRow]:
        """Fills by time, optionally of one order, one stage, from a time on."""
        where, params = [], []
        if cl_ord_id is not None:
            where.append("cl_ord_id = ?")
            params.append(_u64_to_i64(cl_ord_id))
        if stage is not None:
            where.append("stage = ?")
            params.append(stage)
        if since_ns is not None:
            where.append("ts_ns >= ?")
            params.append(since_ns)
        sql = "SELECT exec_id, cl_ord_id, symbol, side, qty, price, ts_ns, stage, fee, liquidity FROM fills"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._query(sql + " ORDER BY ts_ns, exec_id", params)
        return [FillRow(r[0], _i64_to_u64(r[1]), *r[2:]) for r in rows]

    def positions(self, stage: str | None = None) -> list[PositionRow]:
        sql = "SELECT stage, symbol, qty, avg_price, realized_pnl, updated_ns FROM positions"
        rows = self._query(sql + " WHERE stage = ? ORDER BY symbol", (stage,)) if stage is not None else \
            self._query(sql + " ORDER BY stage, symbol")
        return [PositionRow(*r) for r in rows]

    def evidence(self, stage: str | None = None) -> list[EvidenceRow]:
        """Stage evidence by recording time (oldest first)."""
        sql = "SELECT id, stage, run_id, started_ns, ended_ns, metrics, digest, recorded_ns FROM stage_evidence"
        rows = self._query(sql + " WHERE stage = ? ORDER BY recorded_ns, id", (stage,)) if stage is not None \
            else self._query(sql + " ORDER BY recorded_ns, id")
        return [EvidenceRow(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), r[6], r[7]) for r in rows]

    def promotions(self) -> list[PromotionRow]:
        """Promotion decisions, oldest first."""
        rows = self._query("SELECT id, from_stage, to_stage, approved, criteria, reasons, evidence_ids, decided_ns,"
                           " decided_by FROM promotions ORDER BY decided_ns, id")
        return [PromotionRow(r[0], r[1], r[2], bool(r[3]), orjson.loads(r[4]), orjson.loads(r[5]),
                             orjson.loads(r[6]), r[7], r[8]) for r in rows]

    def last_promotion(self) -> PromotionRow | None:
        rows = self.promotions()
        return rows[-1] if rows else None


# ===================================================================== retention

@dataclass(frozen=True)
class RetentionResult:
    deleted: list[Path]
    archived: list[Path]             # destinations


def apply_retention(directory: str | os.PathLike[str], max_age_days: float, *,
                    patterns: Iterable[str] = ("*",), archive_dir: str | os.PathLike[str] | None = None,
                    keep_newest: int = 1, now: float | None = None) -> RetentionResult:
    """Delete (or, with ``archive_dir``, move there) the files under ``directory``
    (recursively) whose name matches one of ``patterns`` and whose modification time
    is more than ``max_age_days`` ago. The ``keep_newest`` newest matching files are
    never touched. Returns what was deleted or archived."""
    if not max_age_days >= 0:
        raise StoreError(f"retention: max_age_days must be >= 0, got {max_age_days}")
    if keep_newest < 0:
        raise StoreError(f"retention: keep_newest must be >= 0, got {keep_newest}")
    root = Path(directory)
    if not root.is_dir():
        raise StoreError(f"retention: {root} is not a directory")
    pats = tuple(patterns)
    arch = Path(archive_dir) if archive_dir is not None else None
    if arch is not None:
        arch_res = arch.resolve()
        if arch_res == root.resolve() or root.resolve() in arch_res.parents:
            raise StoreError(f"retention: archive_dir {arch} must be outside {root}")
    files = []
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            if any(fnmatch.fnmatch(n, p) for p in pats):
                p = Path(dirpath) / n
                try:
                    files.append((p.stat().st_mtime, p))
                except FileNotFoundError:
                    continue
    files.sort()
    if keep_newest:
        files = files[:-keep_newest] if len(files) > keep_newest else []
    cutoff = (time.time() if now is None else now) - max_age_days * 86400.0
    deleted: list[Path] = []
    archived: list[Path] = []
    for mtime, p in files:
        if mtime >= cutoff:
            continue
        if arch is None:
            p.unlink(missing_ok=True)
            deleted.append(p)
        else:
            dest = arch / p.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(p, dest)
            archived.append(dest)
    if deleted or archived:
        log.info("retention %s: %d deleted, %d archived (older than %g days)", root, len(deleted), len(archived),
                 max_age_days)
    return RetentionResult(deleted, archived)
