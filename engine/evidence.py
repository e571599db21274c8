"""Evidence of stage runs, and its persistence (SQLite).

Every stage run records a :class:`StageRun`: its metrics (``engine.analytics.compute_metrics``),
error counts, wall-clock duration, the market-data period it covered, the config digest and
the result digest; for shadow the paired simulated/real fills (:class:`PairedFill`); for
small the risk controls it exercised (:class:`RiskControlCheck`). The promotion gate
(``engine.promotion``) reads them as an :class:`Evidence` and writes its decisions, the
demotions and the forced runs to the same store as :class:`LedgerEntry` rows.

:class:`EvidenceStore` keeps all of it in its own tables (prefix ``ev_``) of one SQLite file,
so it can later share the engine's database: nothing outside this class knows SQL.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.analytics import metrics_from_json, metrics_to_json, slippage_stats
from engine.errors import DataError, EngineError

__all__ = [
    "STAGES", "stage_index", "check_stage", "PairedFill", "RiskControlCheck", "StageRun",
    "LedgerEntry", "Evidence", "EvidenceStore", "EvidenceStoreError", "SCHEMA_VERSION",
    "unjsonable",
]

STAGES = ("backtest", "paper", "shadow", "small", "live")
SCHEMA_VERSION = 1
LEDGER_KINDS = ("decision", "demotion", "forced_run")


class EvidenceStoreError(EngineError):
    """The evidence store file is missing, unreadable or of another schema version."""


def check_stage(stage: str, what: str = "stage") -> str:
    """The stage name, or a DataError naming the allowed ones."""
    if stage not in STAGES:
        raise DataError(f"{what} {stage!r}: must be one of {', '.join(STAGES)}")
    return stage


def stage_index(stage: str) -> int:
    return STAGES.index(check_stage(stage))


@dataclass(frozen=True, slots=True)
class PairedFill:
    """One order filled both by the fill model (simulated) and by the venue (real), shadow stage."""
    cl_ord_id: int
    side: int                 # 0 buy, 1 sell (core_ext SIDE_BUY / SIDE_SELL)
    qty: int                  # lots
    sim_price: float          # simulated fill price (ticks or money; same unit as real_price)
    real_price: float         # real fill price
    sim_ts_ns: int = 0
    real_ts_ns: int = 0
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class RiskControlCheck:
    """A risk control the small stage exercised (e.g. by a deliberate breach) and its outcome."""
    name: str                 # e.g. "max_order_qty", "kill_switch"
    exercised: bool           # the control was actually triggered during the run
    passed: bool              # it acted as specified (rejected / tripped / flattened)
    detail: str = ""


@dataclass(frozen=True, eq=False)
class StageRun:
    """What one stage run left behind. ``run_id``/``recorded_ns`` are set by the store."""
    stage: str
    started_ns: int                       # wall clock, run start
    ended_ns: int                         # wall clock, run end
    config_digest: str                    # digest of the strategy/risk config (stage-independent part)
    result_digest: str                    # engine.analytics.digest(fills, equity)
    metrics: Mapping[str, Any]            # engine.analytics.compute_metrics(...)
    system_errors: int = 0                # errors of the engine itself (exceptions, rejects by bugs)
    critical_errors: int = 0              # errors that stop or endanger trading
    kill_switch_trips: int = 0
    period_start_ns: int | None = None    # market-data period covered; None: the equity curve's span
    period_end_ns: int | None = None
    n_fills: int = 0
    mean_slippage_bps: float | None = None  # fill-model slippage vs arrival mid, mean, bps
    equity_ts_ns: np.ndarray | None = None
    equity: np.ndarray | None = None
    trade_pnls: np.ndarray | None = None
    paired_fills: tuple[PairedFill, ...] = ()
    risk_controls: tuple[RiskControlCheck, ...] = ()
    forced: bool = False                  # run in a stage not reached by promotion (operator force)
    strategy: str = ""
    notes: str = ""
    run_id: int | None = None
    recorded_ns: int | None = None

    def __post_init__(self) -> None:
        check_stage(self.stage)
        for name in ("started_ns", "ended_ns", "system_errors", "critical_errors",
                     "kill_switch_trips", "n_fills"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise DataError(f"StageRun.{name} {v!r}: must be an integer")
            if name not in ("started_ns", "ended_ns") and v < 0:
                raise DataError(f"StageRun.{name} {v!r}: must be >= 0")
        if self.ended_ns < self.started_ns:
            raise DataError(f"StageRun.ended_ns {self.ended_ns} < started_ns {self.started_ns}")
        if not isinstance(self.metrics, Mapping):
            raise DataError("StageRun.metrics: must be the dict of engine.analytics.compute_metrics")
        missing = [k for k in ("sharpe", "max_drawdown", "profit_factor", "total_return") if k not in self.metrics]
        if missing:
            raise DataError(f"StageRun.metrics: missing {', '.join(missing)}")
        if (self.equity_ts_ns is None) != (self.equity is None):
            raise DataError("StageRun: give both equity_ts_ns and equity, or neither")
        if self.equity is not None and len(self.equity) != len(self.equity_ts_ns):
            raise DataError(f"StageRun: equity_ts_ns has {len(self.equity_ts_ns)} points, "
                            f"equity {len(self.equity)}")
        if self.mean_slippage_bps is not None and not math.isfinite(self.mean_slippage_bps):
            raise DataError(f"StageRun.mean_slippage_bps {self.mean_slippage_bps!r}: must be finite")

    @property
    def duration_s(self) -> float:
        """Wall-clock duration of the run, seconds."""
        return (self.ended_ns - self.started_ns) / 1e9

    @property
    def period(self) -> tuple[int | None, int | None]:
        """Market-data period (start_ns, end_ns): the given one, else the equity curve's span."""
        start, end = self.period_start_ns, self.period_end_ns
        if start is None:
            start = self.metrics.get("start_ns")
        if end is None:
            end = self.metrics.get("end_ns")
        return start, end

    def slippage(self) -> dict[str, Any]:
        """engine.analytics.slippage_stats of the paired fills (n = 0 when there are none)."""
        pf = self.paired_fills
        return slippage_stats([p.sim_price for p in pf], [p.real_price for p in pf],
                              [p.side for p in pf])


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A row of the stage ledger: a promotion decision, a demotion, or a forced run.

    ``after_run_id``: the highest run id recorded when the entry was written (so "a run
    after the demotion" is ``run_id > after_run_id``). ``payload``: the numbers used (a
    decision's criteria and criterion results), JSON-serialisable.
    """
    kind: str                       # "decision" | "demotion" | "forced_run"
    from_stage: str | None
    to_stage: str | None
    action: str                     # decision: promote/refuse/rollback/stay/demote; demotion: demote; forced_run: force
    passed: bool
    reason: str = ""
    after_run_id: int = 0
    run_ids: tuple[int, ...] = ()
    payload: Mapping[str, Any] = field(default_factory=dict)
    entry_id: int | None = None
    ts_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything the promotion gate reads: the recorded runs (ascending run id) and the
    ledger (ascending entry id)."""
    runs: tuple[StageRun, ...] = ()
    ledger: tuple[LedgerEntry, ...] = ()

    def runs_of(self, stage: str, *, include_forced: bool = False,
                after_run_id: int | None = None) -> list[StageRun]:
        """Runs of a stage, oldest first; forced runs only when asked."""
        check_stage(stage)
        return [r for r in self.runs
                if r.stage == stage and (include_forced or not r.forced)
                and (after_run_id is None or (r.run_id or 0) > after_run_id)]

    def latest(self, stage: str, *, include_forced: bool = False,
               after_run_id: int | None = None) -> StageRun | None:
        runs = self.runs_of(stage, include_forced=include_forced, after_run_id=after_run_id)
        return runs[-1] if runs else None

    @property
    def max_run_id(self) -> int:
        return max((r.run_id or 0 for r in self.runs), default=0)


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS ev_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ev_runs (
    run_id            INTEGER PRIMARY KEY AUTOINCREMENT,
    stage             TEXT    NOT NULL CHECK (stage IN ({", ".join(repr(s) for s in STAGES)})),
    recorded_ns       INTEGER NOT NULL,
    started_ns        INTEGER NOT NULL,
    ended_ns          INTEGER NOT NULL,
    period_start_ns   INTEGER,
    period_end_ns     INTEGER,
    config_digest     TEXT    NOT NULL,
    result_digest     TEXT    NOT NULL,
    system_errors     INTEGER NOT NULL,
    critical_errors   INTEGER NOT NULL,
    kill_switch_trips INTEGER NOT NULL,
    n_fills           INTEGER NOT NULL,
    mean_slippage_bps REAL,
    forced            INTEGER NOT NULL,
    strategy          TEXT    NOT NULL,
    notes             TEXT    NOT NULL,
    metrics_json      TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS ev_series (
    run_id INTEGER NOT NULL REFERENCES ev_runs (run_id),
    name   TEXT    NOT NULL,
    dtype  TEXT    NOT NULL,
    data   BLOB    NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS ev_paired_fills (
    run_id     INTEGER NOT NULL REFERENCES ev_runs (run_id),
    seq        INTEGER NOT NULL,
    cl_ord_id  TEXT    NOT NULL,
    side       INTEGER NOT NULL,
    qty        INTEGER NOT NULL,
    sim_price  REAL    NOT NULL,
    real_price REAL    NOT NULL,
    sim_ts_ns  INTEGER NOT NULL,
    real_ts_ns INTEGER NOT NULL,
    symbol     TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS ev_risk_controls (
    run_id    INTEGER NOT NULL REFERENCES ev_runs (run_id),
    seq       INTEGER NOT NULL,
    name      TEXT    NOT NULL,
    exercised INTEGER NOT NULL,
    passed    INTEGER NOT NULL,
    detail    TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS ev_ledger (
    entry_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns        INTEGER NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in LEDGER_KINDS)})),
    from_stage   TEXT,
    to_stage     TEXT,
    action       TEXT    NOT NULL,
    passed       INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    after_run_id INTEGER NOT NULL,
    run_ids      TEXT    NOT NULL,
    payload_json TEXT    NOT NULL
);
"""

_RUN_COLS = ("run_id", "stage", "recorded_ns", "started_ns", "ended_ns", "period_start_ns",
             "period_end_ns", "config_digest", "result_digest", "system_errors", "critical_errors",
             "kill_switch_trips", "n_fills", "mean_slippage_bps", "forced", "strategy", "notes",
             "metrics_json")


def _json_dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, allow_nan=False, separators=(",", ":"))


class EvidenceStore:
    """SQLite persistence of stage runs and the stage ledger, in tables prefixed ``ev_``.

    ``EvidenceStore(path)`` opens (and with ``create=True`` creates) the file; with
    ``create=False`` a missing file is an :class:`EvidenceStoreError`. Each write is one
    transaction. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self._path = Path(path)
        if not create and not self._path.is_file():
            raise EvidenceStoreError(f"evidence store {self._path}: no such file")
        try:
            if create:
                self._path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self._path), isolation_level=None)
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA busy_timeout = 5000")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise EvidenceStoreError(f"evidence store {self._path}: {exc}") from None

    # -- lifecycle ------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EvidenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self) -> _Tx:
        return _Tx(self._conn)

    def _init_schema(self) -> None:
        with self._tx():
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._conn.execute(stmt)
            row = self._conn.execute("SELECT value FROM ev_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                self._conn.execute("INSERT INTO ev_meta (key, value) VALUES ('schema_version', ?)",
                                   (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise EvidenceStoreError(f"evidence store {self._path}: schema version {row[0]}, "
                                         f"this engine reads {SCHEMA_VERSION}")

    # -- runs -----------------------------------------------------------------------

    def record_run(self, run: StageRun) -> int:
        """Store a run (its series, paired fills and risk controls too); returns its run id."""
        if run.run_id is not None:
            raise DataError(f"record_run: this run is already recorded (run_id {run.run_id})")
        metrics_json = _json_dumps(metrics_to_json(run.metrics))
        now = time.time_ns()
        with self._tx():
            cur = self._conn.execute(
                f"INSERT INTO ev_runs ({', '.join(_RUN_COLS[1:])}) VALUES ({', '.join('?' * (len(_RUN_COLS) - 1))})",
                (run.stage, now, int(run.started_ns), int(run.ended_ns),
                 None if run.period_start_ns is None else int(run.period_start_ns),
                 None if run.period_end_ns is None else int(run.period_end_ns),
                 run.config_digest, run.result_digest, int(run.system_errors),
                 int(run.critical_errors), int(run.kill_switch_trips), int(run.n_fills),
                 None if run.mean_slippage_bps is None else float(run.mean_slippage_bps),
                 int(bool(run.forced)), run.strategy, run.notes, metrics_json))
            run_id = int(cur.lastrowid)
            series = (("equity_ts_ns", run.equity_ts_ns, "<i8"), ("equity", run.equity, "<f8"),
                      ("trade_pnls", run.trade_pnls, "<f8"))
            for name, arr, dtype in series:
                if arr is not None:
                    data = np.ascontiguousarray(np.asarray(arr).astype(dtype)).tobytes()
                    self._conn.execute("INSERT INTO ev_series (run_id, name, dtype, data) VALUES (?, ?, ?, ?)",
                                       (run_id, name, dtype, data))
            self._conn.executemany(
                "INSERT INTO ev_paired_fills (run_id, seq, cl_ord_id, side, qty, sim_price, real_price, "
                "sim_ts_ns, real_ts_ns, symbol) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, i, str(int(p.cl_ord_id)), int(p.side), int(p.qty), float(p.sim_price),
                  float(p.real_price), int(p.sim_ts_ns), int(p.real_ts_ns), p.symbol)
                 for i, p in enumerate(run.paired_fills)])
            self._conn.executemany(
                "INSERT INTO ev_risk_controls (run_id, seq, name, exercised, passed, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, i, c.name, int(bool(c.exercised)), int(bool(c.passed)), c.detail)
                 for i, c in enumerate(run.risk_controls)])
        return run_id

    def run(self, run_id: int, *, with_series: bool = True) -> StageRun:
        """One run by id (EvidenceStoreError if there is none)."""
        row = self._conn.execute(f"SELECT {', '.join(_RUN_COLS)} FROM ev_runs WHERE run_id = ?",
                                 (int(run_id),)).fetchone()
        if row is None:
            raise EvidenceStoreError(f"evidence store {self._path}: no run {run_id}")
        return self._run_from_row(row, with_series)

    def runs(self, stage: str | None = None, *, include_forced: bool = True,
             with_series: bool = False) -> list[StageRun]:
        """Runs, oldest first, of one stage or all; ``with_series`` loads the curves too."""
        sql = f"SELECT {', '.join(_RUN_COLS)} FROM ev_runs"
        cond, args = [], []
        if stage is not None:
            cond.append("stage = ?")
            args.append(check_stage(stage))
        if not include_forced:
            cond.append("forced = 0")
        if cond:
            sql += " WHERE " + " AND ".join(cond)
        sql += " ORDER BY run_id"
        return [self._run_from_row(r, with_series) for r in self._conn.execute(sql, args).fetchall()]

    def max_run_id(self) -> int:
        row = self._conn.execute("SELECT COALESCE(MAX(run_id), 0) FROM ev_runs").fetchone()
        return int(row[0])

    def _run_from_row(self, row: Sequence[Any], with_series: bool) -> StageRun:
        d = dict(zip(_RUN_COLS, row, strict=True))
        run_id = int(d["run_id"])
        series: dict[str, np.ndarray] = {}
        if with_series:
            for name, dtype, data in self._conn.execute(
                    "SELECT name, dtype, data FROM ev_series WHERE run_id = ?", (run_id,)):
                series[name] = np.frombuffer(data, dtype=dtype).copy()
        paired = tuple(
            PairedFill(cl_ord_id=int(c), side=int(s), qty=int(q), sim_price=float(sp),
                       real_price=float(rp), sim_ts_ns=int(st), real_ts_ns=int(rt), symbol=sym)
            for c, s, q, sp, rp, st, rt, sym in self._conn.execute(
                "SELECT cl_ord_id, side, qty, sim_price, real_price, sim_ts_ns, real_ts_ns, symbol "
                "FROM ev_paired_fills WHERE run_id = ? ORDER BY seq", (run_id,)))
        controls = tuple(
            RiskControlCheck(name=n, exercised=bool(e), passed=bool(p), detail=det)
            for n, e, p, det in self._conn.execute(
                "SELECT name, exercised, passed, detail FROM ev_risk_controls WHERE run_id = ? "
                "ORDER BY seq", (run_id,)))
        return StageRun(
            stage=d["stage"], started_ns=int(d["started_ns"]), ended_ns=int(d["ended_ns"]),
            config_digest=d["config_digest"], result_digest=d["result_digest"],
            metrics=metrics_from_json(json.loads(d["metrics_json"])),
            system_errors=int(d["system_errors"]), critical_errors=int(d["critical_errors"]),
            kill_switch_trips=int(d["kill_switch_trips"]),
            period_start_ns=d["period_start_ns"], period_end_ns=d["period_end_ns"],
            n_fills=int(d["n_fills"]), mean_slippage_bps=d["mean_slippage_bps"],
            equity_ts_ns=series.get("equity_ts_ns"), equity=series.get("equity"),
            trade_pnls=series.get("trade_pnls"), paired_fills=paired, risk_controls=controls,
            forced=bool(d["forced"]), strategy=d["strategy"], notes=d["notes"],
            run_id=run_id, recorded_ns=int(d["recorded_ns"]))

    # -- ledger ---------------------------------------------------------------------

    def append_ledger(self, entry: LedgerEntry) -> int:
        """Append a ledger entry (its ``after_run_id`` is set to the current max run id when
        0); returns its entry id."""
        if entry.kind not in LEDGER_KINDS:
            raise DataError(f"ledger entry kind {entry.kind!r}: must be one of {', '.join(LEDGER_KINDS)}")
        for s in (entry.from_stage, entry.to_stage):
            if s is not None:
                check_stage(s)
        with self._tx():
            after = entry.after_run_id or self.max_run_id()
            cur = self._conn.execute(
                "INSERT INTO ev_ledger (ts_ns, kind, from_stage, to_stage, action, passed, reason, "
                "after_run_id, run_ids, payload_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (entry.ts_ns or time.time_ns(), entry.kind, entry.from_stage, entry.to_stage,
                 entry.action, int(bool(entry.passed)), entry.reason, int(after),
                 _json_dumps([int(i) for i in entry.run_ids]), _json_dumps(_jsonable(entry.payload))))
            return int(cur.lastrowid)

    def ledger(self) -> list[LedgerEntry]:
        """Every ledger entry, oldest first."""
        return [LedgerEntry(kind=k, from_stage=f, to_stage=t, action=a, passed=bool(p), reason=r,
                            after_run_id=int(ar), run_ids=tuple(json.loads(ri)),
                            payload=json.loads(pj), entry_id=int(eid), ts_ns=int(ts))
                for eid, ts, k, f, t, a, p, r, ar, ri, pj in self._conn.execute(
                    "SELECT entry_id, ts_ns, kind, from_stage, to_stage, action, passed, reason, "
                    "after_run_id, run_ids, payload_json FROM ev_ledger ORDER BY entry_id")]

    def evidence(self, *, with_series: bool = False) -> Evidence:
        """All runs and the whole ledger, as the promotion gate reads them."""
        return Evidence(runs=tuple(self.runs(with_series=with_series)), ledger=tuple(self.ledger()))


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT / ROLLBACK on a connection in autocommit mode (re-entrant)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._outer = False

    def __enter__(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
            self._outer = True

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self._outer:
            return
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")


def _jsonable(obj: Any) -> Any:
    """Payload to JSON: non-finite floats become {"nonfinite": "inf"|"-inf"|"nan"}."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"nonfinite": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"ledger payload: cannot store a value of type {type(obj).__name__}")


def unjsonable(obj: Any) -> Any:
    """Inverse of the payload encoding: {"nonfinite": "inf"} back to float('inf')."""
    if isinstance(obj, dict):
        if set(obj) == {"nonfinite"} and obj["nonfinite"] in ("inf", "-inf", "nan"):
            return float(obj["nonfinite"])
        return {k: unjsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unjsonable(v) for v in obj]
    return obj
