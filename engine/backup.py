"""Online backup of the store and the journal (documented in engine/store.py).

`backup_main(store_path, journal_dir, out_dir)` writes ``out_dir/backup-<UTC time>/``:

* ``engine.sqlite`` -- ``sqlite3.Connection.backup`` of the live database (consistent
  while the engine keeps writing), checked with ``PRAGMA integrity_check``;
* ``journal/`` -- the journal segments copied in seq order and fsynced, their hash
  chain verified (a record being written at that instant is at worst a torn tail);
* ``manifest.json`` -- size and SHA-256 of every file, the journal's record count,
  last seq and last hash, the store's row counts.

The backup is written under ``.backup-<time>.tmp`` and renamed when complete, so an
interrupted backup never looks like a finished one. Exit codes: 0 done, 1 the backup
failed a check (the partial directory is removed), 2 bad arguments.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from engine.audit import verify_journal
from engine.journal import JournalError, list_segments

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_store(store_path: Path, dest: Path) -> dict[str, int]:
    """Online copy of an SQLite database; returns its table row counts. Raises
    `sqlite3.Error` or `RuntimeError` (integrity check failed)."""
    src = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst, pages=1024)
            dst.execute("PRAGMA journal_mode = DELETE")        # a self-contained single file
            result = dst.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                raise RuntimeError(f"integrity check of the copy failed: {result}")
            tables = [r[0] for r in dst.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            counts = {t: dst.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
        finally:
            dst.close()
    finally:
        src.close()
    _fsync_file(dest)
    return counts


def backup_journal(journal_dir: Path, dest: Path) -> list[Path]:
    """Copy the journal segments (in seq order) into ``dest``; returns the copies."""
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for seg in list_segments(journal_dir):
        target = dest / seg.name
        shutil.copyfile(seg, target)
        _fsync_file(target)
        copies.append(target)
    return copies


def backup_main(store_path: str | os.PathLike[str], journal_dir: str | os.PathLike[str],
                out_dir: str | os.PathLike[str], *, out: TextIO | None = None) -> int:
    """Back up the store and the journal into a new directory under ``out_dir``; prints
    what it did and returns the exit code (0 done, 1 failed, 2 bad arguments)."""
    out = out if out is not None else sys.stdout
    store = Path(store_path)
    jdir = Path(journal_dir)
    root = Path(out_dir)
    if not store.is_file():
        print(f"backup: error: store {store} does not exist", file=out)
        return EXIT_USAGE
    if not jdir.is_dir():
        print(f"backup: error: journal directory {jdir} does not exist", file=out)
        return EXIT_USAGE
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"backup: error: cannot create {root}: {exc.strerror}", file=out)
        return EXIT_USAGE
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    tmp = root / f".backup-{stamp}.tmp"
    final = root / f"backup-{stamp}"
    try:
        tmp.mkdir()
        counts = backup_store(store, tmp / "engine.sqlite")
        copies = backup_journal(jdir, tmp / "journal")
        result = verify_journal(tmp / "journal") if copies else None
        if result is not None and not result.ok:
            raise RuntimeError(f"journal copy does not verify: {result.broken_path.name} line "
                               f"{result.broken_line} (record seq {result.broken_seq}): {result.reason}")
        files: dict[str, Any] = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                files[str(p.relative_to(tmp))] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        manifest = {
            "created_utc": stamp,
            "store": {"source": str(store.resolve()), "rows": counts},
            "journal": {
                "source": str(jdir.resolve()),
                "segments": len(copies),
                "records": result.records if result else 0,
                "first_seq": result.first_seq if result else None,
                "last_seq": result.last_seq if result else 0,
                "last_hash": result.last_hash if result else None,
                "torn_tail_bytes": result.torn.length if result and result.torn else 0,
            },
            "files": files,
        }
        (tmp / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        _fsync_file(tmp / "manifest.json")
        os.replace(tmp, final)
    except (OSError, sqlite3.Error, RuntimeError, JournalError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"backup: FAILED: {exc}", file=out)
        return EXIT_FAILED
    rows = ", ".join(f"{t} {n}" for t, n in counts.items())
    jr = manifest["journal"]
    print(f"backup: {final}", file=out)
    print(f"backup: store copied and integrity-checked ({rows})", file=out)
    print(f"backup: journal {jr['segments']} segment(s), {jr['records']} record(s) up to seq {jr['last_seq']}, "
          f"chain verified", file=out)
    return EXIT_OK
