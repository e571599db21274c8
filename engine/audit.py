"""Audit of the order journal: check every record's hash and the chain between them.

``engine audit verify PATH`` (wired to `verify_main`) prints one line per finding and
exits 0 when the chain is intact, 1 when a record is broken (naming the first one:
file, line, seq and what is wrong) and 2 when the path is not a journal. A torn last
record (a crash mid-write, which recovery discards) is reported but is not a failure
unless ``strict``.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from engine.journal import JournalCorruptError, JournalError, JournalReader, TornTail

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of `verify_journal`. ``ok`` is False when a record is broken; then
    ``broken_*`` name the first broken record."""
    ok: bool
    records: int
    first_seq: int | None
    last_seq: int
    last_hash: str
    anchored: bool                       # False: older segments were pruned; checked from first_seq
    torn: TornTail | None
    broken_path: Path | None = None
    broken_line: int | None = None
    broken_seq: int | None = None
    reason: str = ""


def verify_journal(path: str | os.PathLike[str]) -> VerifyResult:
    """Verify a journal directory or segment file. Raises `JournalError` if the path
    is not a journal at all."""
    reader = JournalReader(path)
    try:
        for _ in reader:
            pass
    except JournalCorruptError as exc:
        return VerifyResult(False, reader.count, reader.first_seq, reader.last_seq, reader.last_hash,
                            reader.anchored, None, exc.path, exc.line, exc.seq, exc.reason)
    return VerifyResult(True, reader.count, reader.first_seq, reader.last_seq, reader.last_hash,
                        reader.anchored, reader.torn)


def verify_main(path: str | os.PathLike[str], *, strict: bool = False, out: TextIO | None = None) -> int:
    """Verify and print the verdict; returns the exit code (0 intact, 1 broken, 2 not a
    journal). With ``strict`` a torn tail counts as broken."""
    out = out if out is not None else sys.stdout
    p = Path(path)
    try:
        result = verify_journal(p)
    except JournalError as exc:
        print(f"audit: error: {exc}", file=out)
        return EXIT_USAGE
    except OSError as exc:
        print(f"audit: error: {p}: {exc.strerror or exc}", file=out)
        return EXIT_USAGE
    if not result.ok:
        print(f"audit: BROKEN: {result.broken_path} line {result.broken_line}: record seq {result.broken_seq}: "
              f"{result.reason}", file=out)
        if result.records:
            print(f"audit: the {result.records} record(s) before it (seq {result.first_seq}..{result.last_seq}) "
                  f"verify", file=out)
        return EXIT_BROKEN
    if result.records == 0:
        print(f"audit: {p}: no records", file=out)
    else:
        start = "genesis" if result.anchored else f"seq {result.first_seq} (older segments pruned)"
        print(f"audit: OK: {result.records} record(s), seq {result.first_seq}..{result.last_seq}, chain intact "
              f"from {start}; last hash {result.last_hash}", file=out)
    if result.torn is not None:
        t = result.torn
        print(f"audit: torn last record: {t.length} byte(s) at offset {t.offset} of {t.path} "
              f"(crash mid-write; recovery discards it)", file=out)
        if strict:
            return EXIT_BROKEN
    return EXIT_OK
