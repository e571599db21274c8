"""The order journal: an append-only, hash-chained record of every order event.

Every order event (intent, send, ack, fill, cancel, reject, ...) is appended *before*
the order leaves the process; a restart replays the journal to rebuild the orders and
then reconciles with the venue (DESIGN.md, "Nothing is lost").

**API.** ``seq = journal.append(kind, payload)`` encodes the record, chains it and puts
it in the writer's buffer, then returns (a few microseconds; no I/O on the caller's
thread). A background writer thread writes each batch with one ``write`` as soon as
it is woken and calls ``fsync`` at most ``fsync_interval_ms`` after a record was
written (default 5 ms), so the records that can be lost by a power cut are those of
the last interval; a process crash loses only what was still in the buffer.
``journal.sync()`` forces everything appended so far to disk and waits for it.
If the writer ever fails (disk full, I/O error) every later ``append`` raises
`JournalError`: no order can leave unjournaled.

**Format.** A directory of segment files ``journal-<first seq, 20 digits>.jsonl``; a
segment is closed once it reaches ``segment_max_bytes`` and the next one starts at
the next seq. One record per line::

    {"seq":7,"ts":1714571112123456789,"kind":"send","prev":"<hash of record 6>","payload":{...}}\\t<sha256 hex of the JSON>\\n

``prev`` of the first record is `GENESIS_HASH`; each record's hash is the SHA-256 of
its exact JSON bytes, which include ``prev``, so altering, removing or reordering any
record breaks the chain at that record (``engine.audit.verify_main`` names it).

**Crash recovery.** The newline is the commit marker. After a crash mid-write the last
line of the last segment may be incomplete (or zero-filled); `read_journal` yields
every complete record before it and stops there (`JournalReader.torn` describes the
tail); opening the `Journal` again moves the torn bytes to
``<segment>.torn-<UTC time>`` (kept for inspection), truncates the segment after the
last complete record and continues the chain from it. A bad *complete* line, or a
bad line followed by good ones, is not a crash artefact: it raises
`JournalCorruptError` naming the file, line and seq.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from engine.errors import DataError, EngineError

log = logging.getLogger("engine.journal")

#: ``prev`` of the first record of a journal.
GENESIS_HASH = hashlib.sha256(b"trading-engine journal v1 genesis").hexdigest()

# Standard record kinds (any lowercase identifier up to 32 characters is accepted).
KIND_INTENT = "intent"        # the strategy wants an order; nothing sent yet
KIND_SEND = "send"            # the order (or a cancel/replace) is about to be written to the venue
KIND_ACK = "ack"              # the venue accepted it
KIND_FILL = "fill"            # an execution
KIND_CANCEL = "cancel"        # the order ended cancelled (or a cancel was requested: payload says)
KIND_REJECT = "reject"        # the venue or the risk kernel rejected it
KIND_REPLACE = "replace"      # the order was replaced
KIND_EXPIRE = "expire"        # the order ended by its time in force
KINDS = (KIND_INTENT, KIND_SEND, KIND_ACK, KIND_FILL, KIND_CANCEL, KIND_REJECT, KIND_REPLACE, KIND_EXPIRE)

SEGMENT_GLOB = "journal-*.jsonl"
_SEGMENT_RE = re.compile(r"^journal-(\d{20})\.jsonl$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_HEX = frozenset(b"0123456789abcdef")


class JournalError(EngineError):
    """The journal cannot be written or opened."""


class JournalCorruptError(JournalError, DataError):
    """A complete record is invalid or the chain is broken: not a crash artefact.
    ``path``, ``line`` (1-based, in that file), ``seq`` (the record expected there)
    and ``reason`` name it."""

    def __init__(self, path: Path, line: int, seq: int, reason: str) -> None:
        self.path, self.line, self.seq, self.reason = path, line, seq, reason
        super().__init__(f"{path}: line {line} (record seq {seq}): {reason}")


@dataclass(frozen=True, slots=True)
class JournalRecord:
    seq: int
    ts_ns: int
    kind: str
    payload: Any
    prev: str            # hash of the record before (GENESIS_HASH for the first)
    hash: str            # sha256 hex of this record's JSON


@dataclass(frozen=True)
class TornTail:
    """Bytes after the last complete record of the last segment (a crash mid-write)."""
    path: Path
    offset: int          # where the complete records end
    length: int          # bytes after that


def segment_name(first_seq: int) -> str:
    return f"journal-{first_seq:020d}.jsonl"


def list_segments(directory: str | os.PathLike[str]) -> list[Path]:
    """The segment files of a journal directory, in seq order."""
    d = Path(directory)
    return sorted(p for p in d.iterdir() if _SEGMENT_RE.match(p.name)) if d.is_dir() else []


def _encode(seq: int, ts_ns: int, kind: str, prev: str, payload: Any) -> tuple[bytes, str]:
    body = orjson.dumps({"seq": seq, "ts": ts_ns, "kind": kind, "prev": prev, "payload": payload})
    h = hashlib.sha256(body).hexdigest()
    return body + b"\t" + h.encode() + b"\n", h


def _decode(line: bytes) -> tuple[dict[str, Any] | None, str, str]:
    """(record dict or None, stored hash, reason if invalid) of one line without '\\n'."""
    body, sep, stored = line.rpartition(b"\t")
    if not sep or len(stored) != 64 or not set(stored) <= _HEX:
        return None, "", "malformed line (no '<json>\\t<sha256>' form)"
    h = stored.decode()
    if hashlib.sha256(body).hexdigest() != h:
        return None, h, "hash mismatch: the record was altered"
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, h, "record is not valid JSON"
    if (not isinstance(doc, dict) or set(doc) != {"seq", "ts", "kind", "prev", "payload"}
            or not isinstance(doc["seq"], int) or not isinstance(doc["ts"], int)
            or not isinstance(doc["kind"], str) or not isinstance(doc["prev"], str)):
        return None, h, "record does not have the journal fields"
    return doc, h, ""


class JournalReader:
    """Iterates the records of a journal directory (or of one segment file), checking
    every hash and the chain. After iteration: ``count``, ``first_seq``, ``last_seq``,
    ``last_hash``, ``torn`` (a `TornTail` or None) and ``anchored`` (False when the
    first available segment does not start at seq 1: older segments were removed by
    retention and the chain is checked from there on).

    Raises `JournalCorruptError` for anything that is not a torn tail."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if p.is_dir():
            self.segments = list_segments(p)
        elif p.is_file():
            self.segments = [p]
        else:
            raise JournalError(f"{p}: no such journal file or directory")
        self.count = 0
        self.first_seq: int | None = None
        self.last_seq = 0
        self.last_hash = GENESIS_HASH
        self.torn: TornTail | None = None
        self.anchored = True
        self.end_offset = 0           # end of the last complete record in the last segment

    def __iter__(self) -> Iterator[JournalRecord]:
        expect_seq: int | None = None
        expect_prev: str | None = None
        nseg = len(self.segments)
        for si, seg in enumerate(self.segments):
            is_last = si == nseg - 1
            m = _SEGMENT_RE.match(seg.name)
            seg_first = int(m.group(1)) if m else None
            if expect_seq is not None and seg_first is not None and seg_first != expect_seq:
                raise JournalCorruptError(seg, 1, expect_seq,
                                          f"segment starts at seq {seg_first}, expected {expect_seq} "
                                          f"(a segment is missing or renamed)")
            offset = 0
            self.end_offset = 0
            with open(seg, "rb") as f:
                for lineno, raw in enumerate(f, start=1):
                    complete = raw.endswith(b"\n")
                    line = raw[:-1] if complete else raw
                    seq_here = expect_seq if expect_seq is not None else (seg_first or 1)
                    if not complete:
                        if not is_last:
                            raise JournalCorruptError(seg, lineno, seq_here,
                                                      "incomplete record in a closed segment")
                        self.torn = TornTail(seg, offset, len(raw))
                        return
                    doc, h, reason = _decode(line)
                    if doc is None:
                        rest = f.read()
                        if is_last and not line.strip(b"\x00") and not rest.strip(b"\x00\n"):
                            self.torn = TornTail(seg, offset, len(raw) + len(rest))   # zero-filled tail
                            return
                        raise JournalCorruptError(seg, lineno, seq_here, reason)
                    if expect_seq is None:
                        # first record available: genesis, or an anchor after pruning
                        if doc["seq"] != 1 or doc["prev"] != GENESIS_HASH:
                            if doc["seq"] == 1:
                                raise JournalCorruptError(seg, lineno, 1, "first record does not chain "
                                                          "from the genesis hash")
                            self.anchored = False
                        if seg_first is not None and doc["seq"] != seg_first:
                            raise JournalCorruptError(seg, lineno, seg_first,
                                                      f"record seq {doc['seq']} in a segment named for "
                                                      f"seq {seg_first}")
                    else:
                        if doc["seq"] != expect_seq:
                            raise JournalCorruptError(seg, lineno, expect_seq,
                                                      f"seq {doc['seq']} where {expect_seq} was expected "
                                                      f"(a record is missing or out of order)")
                        if doc["prev"] != expect_prev:
                            raise JournalCorruptError(seg, lineno, expect_seq,
                                                      f"chain broken: prev does not match the hash of "
                                                      f"record {expect_seq - 1}")
                    offset += len(raw)
                    self.end_offset = offset
                    rec = JournalRecord(doc["seq"], doc["ts"], doc["kind"], doc["payload"], doc["prev"], h)
                    if self.first_seq is None:
                        self.first_seq = rec.seq
                    self.count += 1
                    self.last_seq = rec.seq
                    self.last_hash = h
                    expect_seq = rec.seq + 1
                    expect_prev = h
                    yield rec


def read_journal(path: str | os.PathLike[str]) -> Iterator[JournalRecord]:
    """Every complete record of a journal directory or segment file, in order, each
    hash and link checked. Stops quietly (with a warning) at a torn last record;
    raises `JournalCorruptError` on anything else."""
    reader = JournalReader(path)
    yield from reader
    if reader.torn is not None:
        log.warning("journal %s: torn last record (%d bytes at offset %d) ignored: crash mid-write",
                    reader.torn.path, reader.torn.length, reader.torn.offset)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The append side (see the module docstring). Thread-safe ``append``; one writer
    thread per journal. Use as a context manager or call ``close()``."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync_interval_ms: float = 5.0,
                 segment_max_bytes: int = 64 * 1024 * 1024) -> None:
        if not 0 <= fsync_interval_ms <= 10_000:
            raise JournalError(f"fsync_interval_ms must be in [0, 10000], got {fsync_interval_ms}")
        if segment_max_bytes < 4096:
            raise JournalError(f"segment_max_bytes must be >= 4096, got {segment_max_bytes}")
        self.directory = Path(directory)
        self.fsync_interval_s = fsync_interval_ms / 1000.0
        self.segment_max_bytes = segment_max_bytes
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"{self.directory}: cannot create the journal directory: {exc.strerror}") from exc
        self.recovered_torn: TornTail | None = None
        last_seq, last_hash, seg_path = self._recover()
        self._lock = threading.Lock()
        self._pending: list[tuple[int, int, str, orjson.Fragment]] = []   # (seq, ts, kind, payload)
        self._next_seq = last_seq + 1
        self._prev = last_hash
        self._written_seq = last_seq
        self._synced_seq = last_seq
        self._error: BaseException | None = None
        self._closing = False
        self._closed = False
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._sync_requested = False
        if seg_path is None:
            seg_path = self.directory / segment_name(self._next_seq)
        self._segment = seg_path
        try:
            self._fd = os.open(seg_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = os.fstat(self._fd).st_size
            _fsync_dir(self.directory)
        except OSError as exc:
            raise JournalError(f"{seg_path}: cannot open for append: {exc.strerror}") from exc
        self._io_lock = threading.Lock()  # one writer of the segment at a time (loop or thread)
        self._fsyncer = None              # core_ext.fsync.Fsyncer once bound to a loop
        self._fsync_thread: threading.Thread | None = None
        self._writer_idle = True
        self._loop = None                 # bind_loop: write after the loop's event
        self._loop_thread = 0
        self._kick_pending = False
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    def bind_loop(self, loop) -> None:
        """Appends made on `loop`'s thread are written by that thread, once the loop is
        done with the current event (``loop.call_soon``: after the order the record
        journals has left), and the periodic fsync moves to a thread that never takes
        the GIL (core_ext.fsync). The Python writer thread, woken per record or per
        fsync interval, took the GIL from the loop on the order's path: 40-60 us per
        order, and milliseconds when preempted holding it. ``sync()`` still fsyncs at
        once (through the writer thread)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        if self._fsyncer is None and self.fsync_interval_s >= 0.0001:
            # the periodic fsync moves to a thread that never takes the GIL
            from core_ext.fsync import Fsyncer
            with self._io_lock:
                self._fsyncer = Fsyncer(self._fd, int(self.fsync_interval_s * 1e9))
                self._fsyncer.note_written(self._written_seq)
                self._fsyncer.mark_synced(self._synced_seq)
            self._fsync_thread = threading.Thread(target=self._fsyncer.run, name="journal-fsync", daemon=True)
            self._fsync_thread.start()

    def kick(self) -> None:
        """Write what was appended. On the bound loop's thread (see bind_loop) the
        records are written here, after the loop's event, and the writer thread is left
        to fsync on its interval: no thread hand-off per order. Elsewhere it wakes the
        writer thread."""
        self._kick_pending = False
        if self._loop is not None and threading.get_ident() == self._loop_thread and self._error is None:
            try:
                self._drain()
            except OSError as exc:            # disk full, I/O error: fail closed, as the writer does
                self._error = exc
                log.critical("journal write failed: %s: %s; appends now raise", type(exc).__name__, exc)
            if self._fsyncer is None and self._writer_idle and not self._wake.is_set():
                self._wake.set()              # unsynced records now: the writer starts its fsync timer
        elif not self._wake.is_set():
            self._wake.set()

    def _drain(self) -> None:
        """Chain and write every pending record, in seq order (either thread)."""
        with self._io_lock:
            with self._lock:
                pending, self._pending = self._pending, []
            if pending:
                batch = []
                prev = self._prev
                for seq, ts, kind, payload_json in pending:
                    line, prev = _encode(seq, ts, kind, prev, payload_json)
                    batch.append((seq, line))
                self._prev = prev
                self._write_batch(batch)

    # ------------------------------------------------------------ recovery

    def _recover(self) -> tuple[int, str, Path | None]:
        """(last seq, last hash, segment to append to) of an existing journal; a torn
        tail is moved aside and cut off."""
        segments = list_segments(self.directory)
        if not segments:
            return 0, GENESIS_HASH, None
        reader = JournalReader(self.directory)
        for _ in reader:
            pass
        if reader.count == 0:
            m = _SEGMENT_RE.match(segments[-1].name)
            if m is not None and int(m.group(1)) != 1:
                raise JournalError(f"{self.directory}: no complete record left and the segments do not start "
                                   f"at seq 1: cannot continue the chain (restore the journal from a backup)")
        if reader.torn is not None:
            torn = reader.torn
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            aside = torn.path.with_name(f"{torn.path.name}.torn-{stamp}")
            with open(torn.path, "rb") as f:
                f.seek(torn.offset)
                tail = f.read()
            with open(aside, "wb") as f:
                f.write(tail)
                f.flush()
                os.fsync(f.fileno())
            with open(torn.path, "r+b") as f:
                f.truncate(torn.offset)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(self.directory)
            self.recovered_torn = torn
            log.warning("journal %s: crash mid-write; %d torn bytes after seq %d moved to %s",
                        torn.path, torn.length, reader.last_seq, aside.name)
        return reader.last_seq, reader.last_hash, segments[-1]

    # ------------------------------------------------------------ appending

    def append(self, kind: str, payload: Any, *, ts_ns: int | None = None) -> int:
        """Journal one event; returns its seq once the record is in the writer's
        buffer. ``payload`` must be JSON-serialisable (orjson: dict/list/str/int/
        float/bool/None, dataclasses, ...)."""
        if self._error is not None:
            raise JournalError(f"journal writer failed ({self._error}); refusing to append") from self._error
        if self._closing:
            raise JournalError("journal is closed")
        if self._fsyncer is not None and self._fsyncer.failed:
            self._error = OSError(self._fsyncer.failed, os.strerror(self._fsyncer.failed))
            log.critical("journal fsync failed: %s; appends now raise", self._error)
            raise JournalError(f"journal fsync failed ({self._error}); refusing to append")
        if not isinstance(kind, str) or _KIND_RE.match(kind) is None:
            raise JournalError(f"journal record kind {kind!r}: expected a lowercase identifier "
                               f"(e.g. {', '.join(KINDS[:4])}, ...)")
        ts = time.time_ns() if ts_ns is None else ts_ns
        # Only the payload is serialised here (which also checks it); the record line and
        # its hash -- the chain -- are made when the records are written (_drain), so
        # the SHA-256 is not on the path of the order being journaled.
        try:
            payload_json = orjson.Fragment(orjson.dumps(payload))
        except TypeError as exc:
            raise JournalError(f"journal record {kind!r}: payload is not JSON-serialisable: {exc}") from None
        with self._lock:
            seq = self._next_seq
            self._pending.append((seq, ts, kind, payload_json))
            self._next_seq = seq + 1
        if self._loop is not None and threading.get_ident() == self._loop_thread:
            if not self._kick_pending:
                self._kick_pending = True
                try:
                    self._loop.call_soon(self.kick)
                except RuntimeError:        # the loop is closed: wake the writer directly
                    self.kick()
        elif not self._wake.is_set():
            self._wake.set()
        return seq

    @property
    def last_seq(self) -> int:
        """Seq of the last appended record (0 if none)."""
        return self._next_seq - 1

    @property
    def last_hash(self) -> str:
        """Hash of the last appended record (chains what is pending first)."""
        if self._pending and self._error is None:
            self._drain()
        return self._prev

    @property
    def written_seq(self) -> int:
        """Records up to this seq have been written to the file (the OS has them)."""
        return self._written_seq

    @property
    def durable_seq(self) -> int:
        """Records up to this seq have been fsynced."""
        if self._fsyncer is not None:
            return max(self._synced_seq, self._fsyncer.synced)
        return self._synced_seq

    def sync(self, timeout: float | None = 10.0) -> bool:
        """Write and fsync everything appended so far; True once durable, False on
        timeout. Raises `JournalError` if the writer failed."""
        target = self._next_seq - 1
        with self._cond:
            self._sync_requested = True
            self._wake.set()
            ok = self._cond.wait_for(lambda: self._synced_seq >= target or self._error is not None
                                     or self._closed, timeout)
        if self._error is not None:
            raise JournalError(f"journal writer failed: {self._error}") from self._error
        return ok and self._synced_seq >= target

    def close(self, timeout: float = 10.0) -> None:
        """Flush, fsync and stop the writer thread."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        if self._fsyncer is not None:
            self._fsyncer.stop()
            self._fsync_thread.join(timeout)
        try:
            os.close(self._fd)
        except OSError:
            pass
        if self._error is not None:
            raise JournalError(f"journal writer failed: {self._error}") from self._error

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writer thread

    def _rotate(self, next_seq: int) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._segment = self.directory / segment_name(next_seq)
        self._fd = os.open(self._segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0
        _fsync_dir(self.directory)
        if self._fsyncer is not None:
            self._fsyncer.set_fd(self._fd)     # the old segment was fsynced above

    def _write_batch(self, batch: list[tuple[int, bytes]]) -> None:
        data = b"".join(line for _, line in batch)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)
        self._written_seq = batch[-1][0]
        if self._fsyncer is not None:
            self._fsyncer.note_written(self._written_seq)
        if self._size >= self.segment_max_bytes:
            self._rotate(batch[-1][0] + 1)
            with self._cond:
                self._synced_seq = max(self._synced_seq, self._written_seq)
                self._cond.notify_all()

    def _run(self) -> None:
        last_fsync = time.monotonic()
        try:
            while True:
                unsynced = self._written_seq > self._synced_seq and self._fsyncer is None
                if unsynced:
                    timeout = max(0.0, self.fsync_interval_s - (time.monotonic() - last_fsync))
                else:
                    timeout = 0.5
                self._writer_idle = not unsynced
                self._wake.wait(timeout)
                self._wake.clear()
                self._writer_idle = False
                self._drain()
                now = time.monotonic()
                want_sync = (self._sync_requested or self._closing
                             or (self._fsyncer is None and now - last_fsync >= self.fsync_interval_s))
                if want_sync and self._written_seq > self._synced_seq:
                    # fsync a duplicate of the descriptor outside the I/O lock: the loop
                    # thread keeps writing meanwhile, and a rotation may close the original
                    with self._io_lock:
                        target = self._written_seq
                        fd = os.dup(self._fd)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    last_fsync = now
                    if self._fsyncer is not None:
                        self._fsyncer.mark_synced(target)
                    with self._cond:
                        self._synced_seq = max(self._synced_seq, target)
                        self._cond.notify_all()
                if self._sync_requested:
                    with self._cond:
                        if not self._pending:
                            self._sync_requested = False
                        self._cond.notify_all()
                if self._closing:
                    with self._lock:
                        empty = not self._pending
                    if empty:
                        break
        except BaseException as exc:          # disk full, I/O error: fail closed
            self._error = exc
            log.critical("journal writer failed: %s: %s; appends now raise", type(exc).__name__, exc)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
