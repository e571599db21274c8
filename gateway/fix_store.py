"""Persistent FIX session state: sequence numbers and the outbound message store.

A session stores every outbound message before it is written to the socket, so that
a ResendRequest can be answered and a restarted engine resumes where it stopped.

`MemoryStore` keeps everything in process (tests, the acceptance reflector).
`SqliteStore` keeps the same in memory and writes it to an SQLite file (WAL) from
`flush()`, which the session's timer calls every `flush_interval` and which runs on
shutdown. The window between a send and its flush is the price of keeping disk
writes off the send path; `flush_interval=0` writes through on every message.
"""
from __future__ import annotations

import queue
import sqlite3
import threading
import time
from dataclasses import dataclass

from core_ext.records import untrack_acyclic

from gateway.errors import SessionStoreError


@dataclass(slots=True)
class StoredMessage:
    seq_num: int
    msg_type: bytes
    body: bytes            # encoded body fields, "tag=value\x01..."
    sending_time: bytes    # original SendingTime (52), reused as OrigSendingTime (122)

    def __post_init__(self) -> None:
        # kept for the whole session (resends) and never part of a cycle: the cyclic GC
        # need not scan it (core_ext.records module docstring)
        untrack_acyclic(self)


class MemoryStore:
    """Sequence numbers and outbound messages held in process."""

    def __init__(self) -> None:
        self.next_sender_seq = 1
        self.next_target_seq = 1
        self.creation_time = time.time()
        self._messages: dict[int, StoredMessage] = {}

    def store(self, message: StoredMessage) -> None:
        self._messages[message.seq_num] = message

    def get_range(self, begin: int, end: int) -> list[StoredMessage]:
        """Stored messages with begin <= seq <= end, in sequence order."""
        return [self._messages[s] for s in range(begin, end + 1) if s in self._messages]

    def set_next_sender(self, seq: int) -> None:
        self.next_sender_seq = seq

    def set_next_target(self, seq: int) -> None:
        self.next_target_seq = seq

    def reset(self) -> None:
        self.next_sender_seq = 1
        self.next_target_seq = 1
        self.creation_time = time.time()
        self._messages.clear()

    def flush(self, wait: bool = False) -> None:
        """Nothing to write for an in-memory store."""

    def close(self) -> None:
        self.flush()


class SeqNumFile:
    """The two sequence numbers in a small memory-mapped file, written in place.

    A write is a store into the page cache (well under a microsecond, no system call):
    it survives a crash of the process the moment it is made, and reaches the disk with
    the kernel's writeback or `sync()`. Layout: magic, next sender, next target (three
    little-endian u64)."""

    MAGIC = 0x31514553584946     # "FIXSEQ1"
    SIZE = 24

    def __init__(self, path: str) -> None:
        import mmap
        import os
        import struct
        self.path = path
        self._struct = struct.Struct("<QQQ")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size < self.SIZE:
                    os.ftruncate(fd, self.SIZE)
                self._map = mmap.mmap(fd, self.SIZE)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SessionStoreError(f"cannot open FIX sequence file {path!r}: {exc.strerror or exc}") from exc
        magic, sender, target = self._struct.unpack_from(self._map, 0)
        self.valid = magic == self.MAGIC
        self.next_sender, self.next_target = (sender, target) if self.valid else (0, 0)

    def write(self, next_sender: int, next_target: int) -> None:
        self._struct.pack_into(self._map, 0, self.MAGIC, next_sender, next_target)

    def sync(self) -> None:
        self._map.flush()

    def close(self) -> None:
        self._map.close()


class SqliteStore(MemoryStore):
    """MemoryStore backed by an SQLite file, written on `flush()`. With `seq_file`, the
    sequence numbers are also written through to a SeqNumFile on every change (cheap):
    a restart takes the larger of the two, so a crash between flushes never brings the
    outbound number back (a number that is too low is fatal at logon); outbound messages
    lost with that crash are answered with a gap fill if the venue asks for them."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS fix_session (
        session TEXT PRIMARY KEY, next_sender INTEGER NOT NULL, next_target INTEGER NOT NULL,
        creation_time REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS fix_outbound (
        session TEXT NOT NULL, seq INTEGER NOT NULL, msg_type BLOB NOT NULL, body BLOB NOT NULL,
        sending_time BLOB NOT NULL, PRIMARY KEY (session, seq));
    """

    def __init__(self, path: str, session_key: str, flush_interval: float = 0.05,
                 seq_file: str | None = None, background: bool = False) -> None:
        super().__init__()
        self._error: BaseException | None = None
        self._writer: threading.Thread | None = None
        self.path = path
        self.session_key = session_key
        self.flush_interval = flush_interval
        self._pending: list[StoredMessage] = []
        self._dirty = False
        self._reset_pending = False
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(self.SCHEMA)
            self._load()
        except sqlite3.Error as exc:
            raise SessionStoreError(f"cannot open FIX session store {path!r}: {exc}") from exc
        self._seq: SeqNumFile | None = None
        if seq_file is not None:
            self._seq = SeqNumFile(seq_file)
            if self._seq.valid:
                self.next_sender_seq = max(self.next_sender_seq, self._seq.next_sender)
                self.next_target_seq = max(self.next_target_seq, self._seq.next_target)
            self._seq.write(self.next_sender_seq, self.next_target_seq)
        if background:
            # SQLite commits (and WAL checkpoints, which fsync) off the caller's thread: the
            # session's timer flushes from the event loop
            self._queue: queue.SimpleQueue = queue.SimpleQueue()
            self._writer = threading.Thread(target=self._run_writer, name="fix-store-writer", daemon=True)
            self._writer.start()

    def _load(self) -> None:
        row = self._db.execute(
            "SELECT next_sender, next_target, creation_time FROM fix_session WHERE session=?",
            (self.session_key,)).fetchone()
        if row is None:
            return
        self.next_sender_seq, self.next_target_seq, self.creation_time = row
        for seq, msg_type, body, sending_time in self._db.execute(
                "SELECT seq, msg_type, body, sending_time FROM fix_outbound WHERE session=? ORDER BY seq",
                (self.session_key,)):
            self._messages[seq] = StoredMessage(seq, bytes(msg_type), bytes(body), bytes(sending_time))

    def store(self, message: StoredMessage) -> None:
        super().store(message)
        self._pending.append(message)
        self._dirty = True
        if self.flush_interval == 0:
            self.flush()

    def set_next_sender(self, seq: int) -> None:
        super().set_next_sender(seq)
        self._dirty = True
        if self._seq is not None:
            self._seq.write(seq, self.next_target_seq)
        if self.flush_interval == 0:
            self.flush()

    def set_next_target(self, seq: int) -> None:
        super().set_next_target(seq)
        self._dirty = True
        if self._seq is not None:
            self._seq.write(self.next_sender_seq, seq)
        if self.flush_interval == 0:
            self.flush()

    def reset(self) -> None:
        super().reset()
        self._pending.clear()
        self._reset_pending = True
        self._dirty = True
        if self._seq is not None:
            self._seq.write(self.next_sender_seq, self.next_target_seq)
        if self.flush_interval == 0:
            self.flush()

    def flush(self, wait: bool = False) -> None:
        """Write what changed since the last flush: here, or -- with ``background`` -- on
        the store's writer thread (the caller only hands over a snapshot; ``wait``: until
        it is written)."""
        if self._error is not None:
            raise SessionStoreError(f"cannot write FIX session store {self.path!r}: {self._error}")
        if wait and self._writer is not None:
            self.flush()
            done = threading.Event()
            self._queue.put(done)
            done.wait(10)
            if self._error is not None:
                raise SessionStoreError(f"cannot write FIX session store {self.path!r}: {self._error}")
            return
        if not self._dirty:
            return
        snapshot = (self._reset_pending, self._pending, self.next_sender_seq, self.next_target_seq,
                    self.creation_time)
        self._pending = []
        self._reset_pending = False
        self._dirty = False
        if self._writer is not None:
            self._queue.put(snapshot)
            return
        self._write(snapshot)
        if self._error is not None:
            raise SessionStoreError(f"cannot write FIX session store {self.path!r}: {self._error}")

    def _write(self, snapshot) -> None:
        reset, pending, next_sender, next_target, creation_time = snapshot
        try:
            with self._db:
                self._db.execute("BEGIN")
                if reset:
                    self._db.execute("DELETE FROM fix_outbound WHERE session=?", (self.session_key,))
                self._db.executemany(
                    "INSERT OR REPLACE INTO fix_outbound (session, seq, msg_type, body, sending_time) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(self.session_key, m.seq_num, m.msg_type, m.body, m.sending_time) for m in pending])
                self._db.execute(
                    "INSERT OR REPLACE INTO fix_session (session, next_sender, next_target, creation_time) "
                    "VALUES (?, ?, ?, ?)",
                    (self.session_key, next_sender, next_target, creation_time))
        except sqlite3.Error as exc:
            self._error = exc

    def _run_writer(self) -> None:
        while True:
            snapshot = self._queue.get()
            if snapshot is None:
                return
            if isinstance(snapshot, threading.Event):   # flush(wait=True): all before it written
                snapshot.set()
            elif self._error is None:
                self._write(snapshot)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._queue.put(None)
                self._writer.join()
                self._writer = None
            self._db.close()
            if self._seq is not None:
                self._seq.sync()
                self._seq.close()
