"""Tests of engine/journal.py and engine/audit.py: append/read, the hash chain,
recovery from a crash mid-write (the file cut at random points), tamper detection
(one flipped byte names the record), segment rotation and fail-closed writes."""
from __future__ import annotations

import io
import os
import random
import re
import shutil
import threading
import time

import pytest

from engine import audit
from engine import journal as jn


def payload(i: int) -> dict:
    return {"cl_ord_id": 1000 + i, "symbol": "AAPL" if i % 2 else "MSFT", "side": i % 2, "qty": 100 + i,
            "price": 12345 + i, "text": "tab\there, newline\nthere, quote \" é"}


def write(directory, n: int, **kw) -> list[int]:
    with jn.Journal(directory, **kw) as j:
        seqs = [j.append(jn.KINDS[i % len(jn.KINDS)], payload(i)) for i in range(n)]
        assert j.sync()
    return seqs


def verify(path, **kw) -> tuple[int, str]:
    out = io.StringIO()
    code = audit.verify_main(path, out=out, **kw)
    return code, out.getvalue()


# ----------------------------------------------------------------- basics

def test_append_read_round_trip(tmp_path):
    seqs = write(tmp_path / "j", 50)
    assert seqs == list(range(1, 51))
    recs = list(jn.read_journal(tmp_path / "j"))
    assert [r.seq for r in recs] == seqs
    assert [r.payload for r in recs] == [payload(i) for i in range(50)]
    assert [r.kind for r in recs] == [jn.KINDS[i % len(jn.KINDS)] for i in range(50)]
    assert recs[0].prev == jn.GENESIS_HASH
    assert all(b.prev == a.hash for a, b in zip(recs, recs[1:], strict=False))
    assert all(r.ts_ns > 0 for r in recs)
    code, out = verify(tmp_path / "j")
    assert code == 0 and "OK: 50 record(s), seq 1..50, chain intact from genesis" in out


def test_each_line_is_json_then_tab_then_hash(tmp_path):
    write(tmp_path / "j", 3)
    (seg,) = jn.list_segments(tmp_path / "j")
    for line in seg.read_bytes().splitlines():
        assert re.fullmatch(rb'\{"seq":\d+,"ts":\d+,"kind":"[a-z]+","prev":"[0-9a-f]{64}","payload":.*\}\t[0-9a-f]{64}',
                            line)


def test_reopen_continues_the_chain(tmp_path):
    write(tmp_path / "j", 10)
    with jn.Journal(tmp_path / "j") as j:
        assert j.last_seq == 10
        assert j.append("fill", {"x": 1}) == 11
    recs = list(jn.read_journal(tmp_path / "j"))
    assert [r.seq for r in recs] == list(range(1, 12))
    assert verify(tmp_path / "j")[0] == 0


def test_segments_rotate_and_chain_across_them(tmp_path):
    with jn.Journal(tmp_path / "j", segment_max_bytes=4096) as j:
        for i in range(300):
            j.append("send", payload(i))
            if i % 20 == 0:
                j.sync()
    segs = jn.list_segments(tmp_path / "j")
    assert len(segs) > 3
    first_seqs = [int(s.name[8:28]) for s in segs]
    assert first_seqs[0] == 1 and first_seqs == sorted(first_seqs)
    assert [r.seq for r in jn.read_journal(tmp_path / "j")] == list(range(1, 301))
    # retention pruned the oldest segment: the rest still verifies, from an anchor
    segs[0].unlink()
    code, out = verify(tmp_path / "j")
    assert code == 0 and "older segments pruned" in out
    # a missing segment in the middle is named
    segs[2].unlink()
    code, out = verify(tmp_path / "j")
    assert code == 1 and "a segment is missing" in out


def test_bad_arguments(tmp_path):
    with jn.Journal(tmp_path / "j") as j:
        with pytest.raises(jn.JournalError, match="kind 'Send!'"):
            j.append("Send!", {})
        with pytest.raises(jn.JournalError, match="not JSON-serialisable"):
            j.append("send", {"x": object()})
        assert j.append("send", {"ok": 1}) == 1            # the failed appends took no seq
    with pytest.raises(jn.JournalError, match="fsync_interval_ms"):
        jn.Journal(tmp_path / "k", fsync_interval_ms=-1)
    assert verify(tmp_path / "nope")[0] == 2


def test_appends_from_many_threads_form_one_chain(tmp_path):
    with jn.Journal(tmp_path / "j") as j:
        got: list[int] = []
        lock = threading.Lock()

        def worker(k):
            for i in range(200):
                s = j.append("send", {"thread": k, "i": i})
                with lock:
                    got.append(s)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(got) == list(range(1, 801))
    recs = list(jn.read_journal(tmp_path / "j"))
    assert len(recs) == 800
    for k in range(4):                                     # each thread's order is kept
        assert [r.payload["i"] for r in recs if r.payload["thread"] == k] == list(range(200))


def test_fsync_interval_bounds_durability_without_sync(tmp_path):
    with jn.Journal(tmp_path / "j", fsync_interval_ms=5) as j:
        seq = j.append("intent", {"x": 1})
        deadline = time.monotonic() + 10
        while j.durable_seq < seq and time.monotonic() < deadline:
            time.sleep(0.001)
        assert j.durable_seq == seq and j.written_seq == seq


def test_writer_failure_fails_closed(tmp_path):
    j = jn.Journal(tmp_path / "j")
    j.append("send", {"x": 1})
    j.sync()
    os.close(j._fd)                     # the disk goes away under the writer
    j._fd = os.open(os.devnull, os.O_RDONLY)
    j.append("send", {"x": 2})
    with pytest.raises(jn.JournalError, match="writer failed"):
        j.sync()
    with pytest.raises(jn.JournalError, match="refusing to append"):
        j.append("send", {"x": 3})
    with pytest.raises(jn.JournalError):
        j.close()


# ----------------------------------------------------------------- crash recovery

def test_truncated_at_random_points_recovers_every_complete_record(tmp_path):
    """A crash mid-write leaves the file cut anywhere: reading yields exactly the records
    whose line (newline included) is complete, and reopening continues the chain."""
    src = tmp_path / "src"
    write(src, 40)
    (seg,) = jn.list_segments(src)
    data = seg.read_bytes()
    ends = [i + 1 for i, b in enumerate(data) if b == 0x0A]          # end offsets of complete records
    rng = random.Random(1234)
    cuts = sorted({0, len(data), *ends[:3], *(e - 1 for e in ends[:3]), *rng.sample(range(len(data)), 60)})
    for cut in cuts:
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / seg.name).write_bytes(data[:cut])
        complete = sum(1 for e in ends if e <= cut)
        reader = jn.JournalReader(d)
        recs = list(reader)
        assert [r.seq for r in recs] == list(range(1, complete + 1)), cut
        assert [r.payload for r in recs] == [payload(i) for i in range(complete)]
        torn_bytes = cut - (ends[complete - 1] if complete else 0)
        assert (reader.torn is not None) == (torn_bytes > 0), cut
        code, out = verify(d)
        assert code == 0, out
        if torn_bytes:
            assert f"torn last record: {torn_bytes} byte(s)" in out
            assert verify(d, strict=True)[0] == 1
        # restart: the torn bytes are moved aside, the chain continues
        with jn.Journal(d) as j:
            assert j.last_seq == complete
            assert (j.recovered_torn is not None) == (torn_bytes > 0)
            j.append("send", {"after": cut})
        assert [r.seq for r in jn.read_journal(d)] == list(range(1, complete + 2))
        assert verify(d, strict=True)[0] == 0
        aside = list(d.glob("*.torn-*"))
        assert len(aside) == (1 if torn_bytes else 0)
        if aside:
            assert aside[0].read_bytes() == data[cut - torn_bytes:cut]
        shutil.rmtree(d)


def test_zero_filled_tail_is_a_torn_tail(tmp_path):
    write(tmp_path / "j", 5)
    (seg,) = jn.list_segments(tmp_path / "j")
    with open(seg, "ab") as f:
        f.write(b"\x00" * 700 + b"\n" + b"\x00" * 100)
    reader = jn.JournalReader(tmp_path / "j")
    assert len(list(reader)) == 5 and reader.torn.length == 801
    with jn.Journal(tmp_path / "j") as j:
        assert j.last_seq == 5


def test_corruption_in_the_middle_is_not_mistaken_for_a_torn_tail(tmp_path):
    write(tmp_path / "j", 5)
    (seg,) = jn.list_segments(tmp_path / "j")
    lines = seg.read_bytes().splitlines(keepends=True)
    lines[2] = b"garbage\n"
    seg.write_bytes(b"".join(lines))
    with pytest.raises(jn.JournalCorruptError, match="line 3 \\(record seq 3\\)"):
        list(jn.read_journal(tmp_path / "j"))
    with pytest.raises(jn.JournalCorruptError):
        jn.Journal(tmp_path / "j")                     # refuses to append after corruption


# ----------------------------------------------------------------- tamper detection

def test_flipping_any_byte_names_the_altered_record(tmp_path):
    src = tmp_path / "src"
    write(src, 30)
    (seg,) = jn.list_segments(src)
    data = seg.read_bytes()
    ends = [i + 1 for i, b in enumerate(data) if b == 0x0A]
    starts = [0, *ends[:-1]]
    rng = random.Random(99)
    positions = rng.sample(range(len(data) - 1), 80)       # the last newline would only make a torn tail
    positions += [ends[0] - 1, starts[5], ends[5] - 2]     # a newline, a record's first byte, its hash
    for pos in positions:
        record = next(k for k, e in enumerate(ends) if pos < e) + 1
        bad = bytearray(data)
        bad[pos] ^= rng.randrange(1, 256)
        d = tmp_path / "t"
        d.mkdir()
        (d / seg.name).write_bytes(bytes(bad))
        code, out = verify(d)
        assert code == 1, (pos, out)
        assert f"line {record}: record seq {record}:" in out, (pos, out)
        if record > 1:
            assert f"the {record - 1} record(s) before it" in out
        shutil.rmtree(d)


def test_rehashed_alteration_breaks_the_link_to_the_next_record(tmp_path):
    """Someone edits record 4 and recomputes its hash: record 5 no longer chains to it."""
    import hashlib
    write(tmp_path / "j", 8)
    (seg,) = jn.list_segments(tmp_path / "j")
    lines = seg.read_bytes().splitlines(keepends=True)
    body = lines[3].split(b"\t")[0].replace(b'"qty":103', b'"qty":999')
    lines[3] = body + b"\t" + hashlib.sha256(body).hexdigest().encode() + b"\n"
    seg.write_bytes(b"".join(lines))
    code, out = verify(tmp_path / "j")
    assert code == 1 and "record seq 5" in out and "chain broken" in out


def test_removed_or_reordered_records_are_named(tmp_path):
    write(tmp_path / "j", 8)
    (seg,) = jn.list_segments(tmp_path / "j")
    lines = seg.read_bytes().splitlines(keepends=True)
    seg.write_bytes(b"".join(lines[:3] + lines[4:]))           # record 4 removed
    code, out = verify(tmp_path / "j")
    assert code == 1 and "record seq 4" in out and "seq 5 where 4 was expected" in out
    seg.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))  # first two swapped
    code, out = verify(tmp_path / "j")
    assert code == 1 and "record seq 1" in out


# ----------------------------------------------------------------------------- bound to a loop



def test_bound_journal_writes_after_the_loops_event_and_chains_the_same(tmp_path, loop_runner):
    """bind_loop: an append on the loop's thread is written once the loop is done with
    the current event (not by the writer thread mid-event); the records, their chain
    and sync() are the same as unbound."""
    async def main():
        import asyncio
        j = jn.Journal(tmp_path / "bound", fsync_interval_ms=1_000)
        j.bind_loop(asyncio.get_running_loop())
        seqs = [j.append("intent", payload(i)) for i in range(3)]
        assert seqs == [1, 2, 3] and j.written_seq == 0      # still this event's
        await asyncio.sleep(0)                                # the loop ran the kick
        assert j.written_seq == 3 and j.durable_seq == 0      # written, fsync later
        done = threading.Event()

        def from_thread():                                    # off the loop: wakes the writer
            j.append("intent", payload(3))
            done.set()
        threading.Thread(target=from_thread).start()
        done.wait(5)
        assert j.sync(timeout=5) and j.durable_seq == 4
        last = j.last_hash
        j.close()
        return last
    last = loop_runner(main)
    code, text = verify(tmp_path / "bound")
    assert code == 0 and "4 record(s)" in text and text.rstrip().endswith(last)
    records = list(jn.JournalReader(tmp_path / "bound"))
    assert [r.payload for r in records] == [payload(i) for i in range(4)]
    for r in records:   # each line is what the dict payload encodes to (the chain is unchanged)
        assert jn._encode(r.seq, r.ts_ns, r.kind, r.prev, r.payload)[1] == r.hash


def test_payload_that_is_not_json_is_refused_at_append(tmp_path):
    j = jn.Journal(tmp_path / "j")
    with pytest.raises(jn.JournalError, match="not JSON-serialisable"):
        j.append("intent", {"x": object()})
    assert j.append("intent", payload(0)) == 1           # nothing was taken by the refusal
    j.close()


def test_bound_journal_fsyncs_on_its_interval_without_sync_and_across_rotations(tmp_path, loop_runner):
    """Bound to a loop, the periodic fsync is core_ext.fsync's (no GIL): records become
    durable within the interval with nobody calling sync(), also after segment
    rotations (the fsync thread follows the new segment)."""
    async def main():
        import asyncio
        j = jn.Journal(tmp_path / "j", fsync_interval_ms=2, segment_max_bytes=4096)
        j.bind_loop(asyncio.get_running_loop())
        assert j._fsync_thread is not None and j._fsync_thread.is_alive()
        for i in range(120):                       # ~30 KB: several segments
            j.append("intent", payload(i))
            await asyncio.sleep(0)
        deadline = time.monotonic() + 5
        while j.durable_seq < 120:
            assert time.monotonic() < deadline, f"durable {j.durable_seq} of 120"
            await asyncio.sleep(0.005)
        segments = len(jn.list_segments(tmp_path / "j"))
        j.close()
        return segments
    segments = loop_runner(main)
    assert segments >= 3
    assert verify(tmp_path / "j")[0] == 0


def test_fsyncer_reports_a_failed_fsync_and_the_journal_then_refuses(tmp_path):
    from core_ext.fsync import Fsyncer
    r, w = os.pipe()                               # fsync(2) on a pipe fails (EINVAL)
    try:
        f = Fsyncer(w, 200_000)
        f.note_written(1)
        t = threading.Thread(target=f.run)
        t.start()
        t.join(5)
        assert not t.is_alive() and f.failed != 0 and f.synced == 0
    finally:
        os.close(r)
        os.close(w)
    j = jn.Journal(tmp_path / "j")
    j._fsyncer = f                                 # as if the fsync thread of this journal failed
    with pytest.raises(jn.JournalError, match="fsync failed"):
        j.append("intent", payload(0))
    j._fsyncer = None
    with pytest.raises(jn.JournalError):
        j.close()
