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
