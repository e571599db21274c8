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

import sqlite3
import time
from dataclasses import dataclass

from gateway.errors import SessionStoreError


@dataclass
class StoredMessage:
    seq_num: int
    msg_type: bytes
    body: bytes            # encoded body fields, "tag=value\x01..."
    sending_time: bytes    # original SendingTime (52), reused as OrigSendingTime (122)


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

    def flush(self) -> None:
        """Nothing to write for an in-memory store."""

    def close(self) -> None:
        self.flush()


class SqliteStore(MemoryStore):
    """MemoryStore backed by an SQLite file, written on `flush()`."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS fix_session (
        session TEXT PRIMARY KEY, next_sender INTEGER NOT NULL, next_target INTEGER NOT NULL,
        creation_time REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS fix_outbound (
        session TEXT NOT NULL, seq INTEGER NOT NULL, msg_type BLOB NOT NULL, body BLOB NOT NULL,
        sending_time BLOB NOT NULL, PRIMARY KEY (session, seq));
    """

    def __init__(self, path: str, session_key: str, flush_interval: float = 0.05) -> None:
        super().__init__()
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
        if self.flush_interval == 0:
            self.flush()

    def set_next_target(self, seq: int) -> None:
        super().set_next_target(seq)
        self._dirty = True
        if self.flush_interval == 0:
            self.flush()

    def reset(self) -> None:
        super().reset()
        self._pending.clear()
        self._reset_pending = True
        self._dirty = True
        if self.flush_interval == 0:
            self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        try:
            with self._db:
                self._db.execute("BEGIN")
                if self._reset_pending:
                    self._db.execute("DELETE FROM fix_outbound WHERE session=?", (self.session_key,))
                    self._reset_pending = False
                self._db.executemany(
                    "INSERT OR REPLACE INTO fix_outbound (session, seq, msg_type, body, sending_time) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(self.session_key, m.seq_num, m.msg_type, m.body, m.sending_time) for m in self._pending])
                self._db.execute(
                    "INSERT OR REPLACE INTO fix_session (session, next_sender, next_target, creation_time) "
                    "VALUES (?, ?, ?, ?)",
                    (self.session_key, self.next_sender_seq, self.next_target_seq, self.creation_time))
        except sqlite3.Error as exc:
            raise SessionStoreError(f"cannot write FIX session store {self.path!r}: {exc}") from exc
        self._pending.clear()
        self._dirty = False

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()
