"""Market-data capture to Parquet, written by a background thread.

The hot path appends rows into a preallocated NumPy structured buffer
(``capture.record(...)`` for one row, ``capture.record_batch(arr)`` for a batch such
as the one the compiled core hands back). When the buffer is full -- or when the
owner calls ``flush()``/``maybe_flush()`` from a timer -- the buffer is handed to the
writer thread and a fresh one takes its place. The writer converts each batch to an
Arrow table and appends it as a row group to the current Parquet file.

Files: ``<directory>/<kind>/date=<YYYY-MM-DD>/part-<UTC time>-<n>.parquet`` (the date
of the first row's ``ts_ns``; Hive-style, so pyarrow.dataset reads the directory as a
partitioned dataset). A file is written as ``.parquet.tmp`` and renamed when it is
closed -- after ``file_max_rows`` rows, ``file_max_seconds`` seconds, or ``close()`` --
so a reader never sees a half-written file; a crash loses at most the open file and
the rows still buffered. Columns: the dtype's fields, with ``symbol_id`` replaced by a
dictionary-encoded ``symbol`` string column.

Capture never blocks trading: if the writer falls ``max_queue_batches`` batches
behind, further batches are dropped and counted in ``stats["dropped_rows"]``.

Threading: ``record``/``record_batch``/``flush``/``maybe_flush`` belong to one owner
thread (the event loop); the writer thread only reads the batches handed to it.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import EngineError

log = logging.getLogger("engine.capture")

#: Top of book: exchange timestamp, receive timestamp, instrument, best bid/ask (ticks, lots).
QUOTE_DTYPE = np.dtype([("ts_ns", "<i8"), ("recv_ns", "<i8"), ("symbol_id", "<i4"),
                        ("bid_px", "<i8"), ("bid_qty", "<i8"), ("ask_px", "<i8"), ("ask_qty", "<i8")])
#: Trades: exchange timestamp, receive timestamp, instrument, price (ticks), qty (lots), aggressor side (0/1).
TRADE_DTYPE = np.dtype([("ts_ns", "<i8"), ("recv_ns", "<i8"), ("symbol_id", "<i4"),
                        ("price", "<i8"), ("qty", "<i8"), ("side", "i1")])
DTYPES = {"quotes": QUOTE_DTYPE, "trades": TRADE_DTYPE}


class CaptureError(EngineError, ValueError):
    """Bad capture arguments or rows (the message names the field)."""


class MarketDataCapture:
    """See the module docstring. ``kind`` names the subdirectory ("quotes", "trades"
    or any name with an explicit ``dtype``); ``symbols[i]`` is the name of
    ``symbol_id`` i. The dtype must have ``ts_ns`` (int64) and ``symbol_id`` fields."""

    def __init__(self, directory: str | os.PathLike[str], kind: str, symbols: Sequence[str], *,
                 dtype: np.dtype | None = None, batch_rows: int = 65536, flush_interval_s: float = 5.0,
                 file_max_rows: int = 1_000_000, file_max_seconds: float = 300.0,
                 max_queue_batches: int = 64, compression: str = "zstd") -> None:
        import pyarrow as pa

        if dtype is None:
            if kind not in DTYPES:
                raise CaptureError(f"capture kind {kind!r}: give a dtype (known kinds: {', '.join(DTYPES)})")
            dtype = DTYPES[kind]
        dtype = np.dtype(dtype)
        if dtype.names is None or "ts_ns" not in dtype.names or "symbol_id" not in dtype.names:
            raise CaptureError("capture dtype must be a structured dtype with ts_ns and symbol_id fields")
        if not symbols or len(set(symbols)) != len(symbols):
            raise CaptureError("capture symbols: give a non-empty list of distinct names")
        if batch_rows < 1 or file_max_rows < 1:
            raise CaptureError("capture batch_rows and file_max_rows must be >= 1")
        if not flush_interval_s > 0 or not file_max_seconds > 0:
            raise CaptureError("capture flush_interval_s and file_max_seconds must be > 0")
        if not kind or "/" in kind or kind.startswith("."):
            raise CaptureError(f"capture kind {kind!r}: expected a plain name")
        self.directory = Path(directory) / kind
        self.directory.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.dtype = dtype
        self.symbols = list(symbols)
        self._nsym = len(self.symbols)
        self._dictionary = pa.array(self.symbols, type=pa.string())
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.file_max_rows = file_max_rows
        self.file_max_seconds = file_max_seconds
        self.compression = compression
        self.stats = {"rows": 0, "written_rows": 0, "files": 0, "dropped_rows": 0, "errors": 0}
        self._buf = np.empty(batch_rows, dtype=dtype)
        self._n = 0
        self._first_at = 0.0
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(max_queue_batches)
        self._closed = False
        self.files: list[Path] = []          # closed files, in order
        self._writer: Any = None
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._file_rows = 0
        self._file_opened = 0.0
        self._file_seq = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"capture-{kind}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ owner thread

    def record(self, *row: Any) -> None:
        """Append one row, fields in dtype order (quotes: ts_ns, recv_ns, symbol_id,
        bid_px, bid_qty, ask_px, ask_qty)."""
        sid = row[2] if len(row) > 2 else -1
        if not 0 <= sid < self._nsym:
            raise CaptureError(f"capture {self.kind}: symbol_id {sid} out of range [0, {self._nsym})")
        n = self._n
        if n == 0:
            self._first_at = time.monotonic()
        self._buf[n] = row
        n += 1
        self._n = n
        if n == self.batch_rows:
            self._hand_off()

    def record_batch(self, rows: np.ndarray) -> None:
        """Append a structured array of the capture's dtype."""
        if rows.dtype != self.dtype:
            raise CaptureError(f"capture {self.kind}: batch dtype {rows.dtype} is not {self.dtype}")
        if rows.size == 0:
            return
        sid = rows["symbol_id"]
        if sid.min() < 0 or sid.max() >= self._nsym:
            raise CaptureError(f"capture {self.kind}: symbol_id out of range [0, {self._nsym}) in batch")
        pos = 0
        while pos < rows.size:
            if self._n == 0:
                self._first_at = time.monotonic()
            take = min(self.batch_rows - self._n, rows.size - pos)
            self._buf[self._n:self._n + take] = rows[pos:pos + take]
            self._n += take
            pos += take
            if self._n == self.batch_rows:
                self._hand_off()

    def _hand_off(self) -> None:
        n = self._n
        if n == 0:
            return
        batch = self._buf if n == self.batch_rows else self._buf[:n].copy()
        self.stats["rows"] += n
        if n == self.batch_rows:
            self._buf = np.empty(self.batch_rows, dtype=self.dtype)
        self._n = 0
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self.stats["dropped_rows"] += n
            log.error("capture %s: writer behind, dropped %d rows", self.kind, n)

    def flush(self) -> None:
        """Hand the buffered rows to the writer now."""
        if self._closed:
            raise CaptureError(f"capture {self.kind} is closed")
        self._hand_off()

    def maybe_flush(self) -> None:
        """`flush` if the oldest buffered row is older than ``flush_interval_s``; call it
        from a periodic timer."""
        if self._n and time.monotonic() - self._first_at >= self.flush_interval_s:
            self._hand_off()

    def close(self, timeout: float = 30.0) -> list[Path]:
        """Flush, let the writer finish and close its file; returns the files written."""
        if not self._closed:
            self._hand_off()
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout)
        if self._error is not None:
            raise CaptureError(f"capture {self.kind}: writer failed: {self._error}") from self._error
        return list(self.files)

    def __enter__(self) -> MarketDataCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writer thread

    def _table(self, batch: np.ndarray) -> Any:
        import pyarrow as pa

        cols, names = [], []
        for name in self.dtype.names:
            col = np.ascontiguousarray(batch[name])
            if name == "symbol_id":
                cols.append(pa.DictionaryArray.from_arrays(pa.array(col, type=pa.int32()), self._dictionary))
                names.append("symbol")
            else:
                cols.append(pa.array(col))
                names.append(name)
        return pa.Table.from_arrays(cols, names=names)

    def _open(self, first_ts_ns: int) -> None:
        import pyarrow.parquet as pq

        day = datetime.fromtimestamp(first_ts_ns / 1e9, UTC).strftime("%Y-%m-%d")
        d = self.directory / f"date={day}"
        d.mkdir(parents=True, exist_ok=True)
        self._file_seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self._final = d / f"part-{stamp}-{self._file_seq:04d}.parquet"
        self._tmp = self._final.with_name(self._final.name + ".tmp")
        self._writer = pq.ParquetWriter(self._tmp, self._table(np.empty(0, self.dtype)).schema,
                                        compression=self.compression)
        self._file_rows = 0
        self._file_opened = time.monotonic()

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        assert self._tmp is not None and self._final is not None
        os.replace(self._tmp, self._final)
        self.files.append(self._final)
        self.stats["files"] += 1

    def _write(self, batch: np.ndarray) -> None:
        if self._writer is None:
            self._open(int(batch["ts_ns"][0]))
        self._writer.write_table(self._table(batch))
        self._file_rows += batch.size
        self.stats["written_rows"] += batch.size
        if self._file_rows >= self.file_max_rows:
            self._close_file()

    def _run(self) -> None:
        while True:
            try:
                batch = self._queue.get(timeout=min(1.0, self.file_max_seconds))
            except queue.Empty:
                batch = "idle"
            try:
                if batch is None:
                    self._close_file()
                    return
                if isinstance(batch, np.ndarray):
                    self._write(batch)
                if self._writer is not None and time.monotonic() - self._file_opened >= self.file_max_seconds:
                    self._close_file()
            except Exception as exc:          # disk full etc.: count, keep the thread alive
                self.stats["errors"] += 1
                self._error = exc
                log.error("capture %s: write failed: %s: %s", self.kind, type(exc).__name__, exc)
                try:
                    if self._writer is not None:
                        self._writer.close()
                except Exception:
                    pass
                self._writer = None


def read_capture(directory: str | os.PathLike[str], kind: str, *, start_ns: int | None = None,
                 end_ns: int | None = None, symbols: Sequence[str] | None = None) -> Any:
    """All closed capture files of a kind as one pyarrow Table sorted by ``ts_ns``
    (optionally ``start_ns <= ts_ns < end_ns`` and only ``symbols``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = Path(directory) / kind
    files = sorted(root.rglob("*.parquet")) if root.is_dir() else []
    if not files:
        raise CaptureError(f"{root}: no capture files")
    tables = [pq.read_table(f) for f in files]
    table = pa.concat_tables(tables, promote_options="permissive")
    mask = None
    if start_ns is not None:
        mask = pc.greater_equal(table["ts_ns"], start_ns)
    if end_ns is not None:
        m = pc.less(table["ts_ns"], end_ns)
        mask = m if mask is None else pc.and_(mask, m)
    if symbols is not None:
        m = pc.is_in(pc.cast(table["symbol"], pa.string()), value_set=pa.array(list(symbols), type=pa.string()))
        mask = m if mask is None else pc.and_(mask, m)
    if mask is not None:
        table = table.filter(mask)
    return table.sort_by("ts_ns")
