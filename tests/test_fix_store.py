"""The persistent FIX session store."""
from __future__ import annotations

from gateway.fix_store import SqliteStore, StoredMessage


def test_write_through_store_persists_sequence_numbers_at_once(tmp_path):
    path = str(tmp_path / "s.db")
    store = SqliteStore(path, "A-B", flush_interval=0)
    store.store(StoredMessage(1, b"D", b"11=X\x01", b"20260101-00:00:00.000"))
    store.set_next_sender(2)
    store.set_next_target(5)
    # no close(), no flush(): a crash right here must not lose the numbers
    reopened = SqliteStore(path, "A-B", flush_interval=0)
    assert (reopened.next_sender_seq, reopened.next_target_seq) == (2, 5)
    assert [m.seq_num for m in reopened.get_range(1, 10)] == [1]


def test_buffered_store_writes_on_flush(tmp_path):
    path = str(tmp_path / "s.db")
    store = SqliteStore(path, "A-B", flush_interval=1.0)
    store.set_next_sender(7)
    assert SqliteStore(path, "A-B").next_sender_seq == 1     # not yet flushed
    store.flush()
    assert SqliteStore(path, "A-B").next_sender_seq == 7


def test_sequence_file_keeps_the_numbers_between_flushes(tmp_path):
    """SqliteStore(seq_file=...): the numbers written through to the memory-mapped file
    win over older ones in SQLite (a crash between flushes); a file that is not ours
    (wrong magic) is ignored."""
    from gateway.fix_store import SeqNumFile, SqliteStore
    db, seq = str(tmp_path / "s.db"), str(tmp_path / "s.seq")
    a = SqliteStore(db, "K", flush_interval=0.05, seq_file=seq)
    a.set_next_sender(5)
    a.flush()                                   # SQLite: 5
    a.set_next_sender(9)                        # not flushed: only the seq file has 9
    a.set_next_target(7)
    b = SqliteStore(db, "K", flush_interval=0.05, seq_file=seq)
    assert (b.next_sender_seq, b.next_target_seq) == (9, 7)
    b._db.close()
    no_file = SqliteStore(db, "K", flush_interval=0.05)
    assert no_file.next_sender_seq == 5         # what SQLite alone holds
    no_file._db.close()
    with open(seq, "r+b") as f:
        f.write(b"garbage!")
    c = SqliteStore(db, "K", flush_interval=0.05, seq_file=seq)
    assert c.next_sender_seq == 5 and SeqNumFile(seq).valid   # ignored, then rewritten
    c.close()
    a._db.close()
