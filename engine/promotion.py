"""The promotion gate: stage transitions decided from recorded evidence (DESIGN.md, "Promotion").

Stages run in the order backtest -> paper -> shadow -> small -> live. A stage may be run
only once it has been *reached by promotion* (``backtest`` always is); an operator can force
a run of an unreached stage, and the forced run is recorded in the ledger and its evidence
never counts for a promotion.

What each transition compares (defaults in :class:`PromotionCriteria`, all configurable;
"latest" means the latest run of that stage that was not forced):

backtest -> paper (latest backtest run B)
    ``sharpe`` > min_sharpe; ``max_drawdown`` < max_drawdown; ``profit_factor`` >
    min_profit_factor; ``reproducible``: an earlier backtest run with the same config digest
    and the same market-data period (within period_tolerance_s) has the same result digest.
paper -> shadow (latest paper run P; B = latest backtest run with P's config digest over
P's period, start and end each within period_tolerance_s)
    ``backtest_same_period``: such a B exists; ``total_return_vs_backtest``,
    ``fills_vs_backtest``, ``mean_slippage_vs_backtest``: relative difference
    ``|p - b| / max(|b|, floor)`` <= paper_tolerance (floors: paper_return_floor,
    paper_fills_floor, paper_slippage_floor_bps keep a near-zero backtest value from making
    any difference "infinite"); ``system_errors`` <= max_system_errors;
    ``min_duration`` (P's wall-clock duration) >= min_paper_duration_s.
shadow -> small (latest shadow run S)
    ``paired_fills`` >= min_paired_fills; ``slippage_model_error_bps`` (mean absolute
    simulated-vs-real fill price difference, bps; engine.analytics.slippage_stats) <=
    max_slippage_error_bps; ``critical_errors`` <= max_critical_errors; ``min_duration``.
small -> live (latest small run M; P = latest paper run with M's config digest)
    ``sharpe_vs_paper``: |Sharpe(M) - Sharpe(P)| <= sharpe_tolerance, both computed at the
    same sampling interval and annualisation factor (two-sided: a small stage that beats
    paper by far is as suspect as one that lags); ``risk_control:<name>`` for every name of
    required_risk_controls and every other recorded control: recorded, exercised, passed;
    ``min_duration``.
live (monitoring, :func:`check_live`; latest live run L)
    ``critical_errors`` <= max_critical_errors, ``kill_switch_trips`` == 0,
    ``max_drawdown`` < live_max_drawdown, every recorded risk control passed. Any breach is
    a demotion.
Demotion and rollback
    A kill-switch trip in small or live (or a failed live check) records a demotion: the
    stage reached drops to ``paper`` and a rollback is pending. The only way up is then a
    paper re-run (a paper run recorded after the demotion) that meets the paper -> shadow
    comparisons against the backtest, then a promotion ``paper -> small`` (the restart at
    small). While a rollback is pending, ``paper -> shadow`` is refused. Runs recorded before
    the latest demotion are no evidence for any later promotion or live check.

Each criterion result has a name, the requirement, the actual value, passed, and a margin:
how far the actual value is on the passing side of the threshold (negative: by how much it
failed; None when the actual value is undefined or the criterion is yes/no).
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from engine.errors import ConfigError, DataError, EngineError
from engine.evidence import (
    STAGES,
    Evidence,
    EvidenceStore,
    LedgerEntry,
    StageRun,
    check_stage,
    stage_index,
    unjsonable,
)

__all__ = [
    "DEFAULT_RISK_CONTROLS", "PromotionCriteria", "CriterionResult", "Decision", "StageState",
    "PromotionError", "StageRefusedError", "evaluate", "check_live", "derive_stage_state",
    "record_decision", "PromotionGate", "format_decision", "promote_main",
]

# Risk controls the small stage must show working (names of engine risk policy controls and
# of the core_ext risk kernel's reject reasons, lower case).
DEFAULT_RISK_CONTROLS = (
    "max_order_qty", "max_order_notional", "price_band", "max_position",
    "max_gross_exposure", "throttle", "daily_loss", "kill_switch",
)


class PromotionError(EngineError):
    """A decision cannot be recorded (e.g. it was evaluated from a stage that is no longer current)."""


class StageRefusedError(EngineError):
    """A run of a stage that was not reached by promotion, without force."""


@dataclass(frozen=True)
class PromotionCriteria:
    """Every threshold of the promotion gate (DESIGN.md defaults). Durations in seconds."""
    # backtest -> paper
    min_sharpe: float = 1.0                   # Sharpe > this
    max_drawdown: float = 0.15                # max drawdown (fraction) < this
    min_profit_factor: float = 1.3            # profit factor > this
    require_reproducible: bool = True         # a second run gives the same result digest
    period_tolerance_s: float = 1.0           # "same period": start and end each within this
    # paper -> shadow (and the paper re-run of a rollback)
    paper_tolerance: float = 0.10             # relative difference paper vs backtest <= this
    paper_return_floor: float = 0.01          # denominator floor, total return (fraction)
    paper_fills_floor: float = 1.0            # denominator floor, fill count
    paper_slippage_floor_bps: float = 1.0     # denominator floor, mean slippage (bps)
    max_system_errors: int = 0
    min_paper_duration_s: float = 86_400.0
    # shadow -> small
    max_slippage_error_bps: float = 5.0       # mean |real - sim| fill price, bps
    min_paired_fills: int = 20
    max_critical_errors: int = 0
    min_shadow_duration_s: float = 86_400.0
    # small -> live
    sharpe_tolerance: float = 0.5             # |Sharpe(small) - Sharpe(paper)| <= this
    required_risk_controls: tuple[str, ...] = DEFAULT_RISK_CONTROLS
    min_small_duration_s: float = 5 * 86_400.0
    # live monitoring
    live_max_drawdown: float = 0.15

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "required_risk_controls":
                if isinstance(v, str) or not isinstance(v, Sequence):
                    raise ConfigError(f"promotion.{f.name}: must be a list of control names, got {v!r}")
                names = tuple(v)
                if any(not isinstance(n, str) or not n.strip() for n in names):
                    raise ConfigError(f"promotion.{f.name}: names must be non-empty strings, got {v!r}")
                if len(set(names)) != len(names):
                    raise ConfigError(f"promotion.{f.name}: duplicate names in {v!r}")
                object.__setattr__(self, f.name, names)
            elif f.name == "require_reproducible":
                if not isinstance(v, bool):
                    raise ConfigError(f"promotion.{f.name}: must be true or false, got {v!r}")
            elif f.name in ("max_system_errors", "min_paired_fills", "max_critical_errors"):
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise ConfigError(f"promotion.{f.name}: must be an integer >= 0, got {v!r}")
            else:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ConfigError(f"promotion.{f.name}: must be a finite number, got {v!r}")
                object.__setattr__(self, f.name, float(v))
                if f.name in ("max_drawdown", "live_max_drawdown") and not 0.0 < v <= 1.0:
                    raise ConfigError(f"promotion.{f.name}: must be in (0, 1], got {v!r}")
                if f.name.endswith(("_floor", "_floor_bps")) and v <= 0.0:
                    raise ConfigError(f"promotion.{f.name}: must be > 0, got {v!r}")
                if f.name not in ("min_sharpe",) and v < 0.0:
                    raise ConfigError(f"promotion.{f.name}: must be >= 0, got {v!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PromotionCriteria:
        """From a config mapping (e.g. the ``[promotion]`` table); unknown keys are a ConfigError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"promotion: unknown key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["required_risk_controls"] = list(self.required_risk_controls)
        return d


@dataclass(frozen=True, slots=True)
class CriterionResult:
    """One criterion of a decision."""
    name: str
    required: str                   # e.g. "> 1", "<= 0.1", "== digest of run 3"
    actual: Any                     # the measured value (float, int, str) or None when undefined
    passed: bool
    margin: float | None            # >= 0 passed by, < 0 failed by; None: undefined or yes/no
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "required": self.required, "actual": self.actual,
                "passed": self.passed, "margin": self.margin, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CriterionResult:
        d = unjsonable(dict(d))
        return cls(d["name"], d["required"], d["actual"], bool(d["passed"]), d["margin"], d.get("detail", ""))


@dataclass(frozen=True)
class Decision:
    """The outcome of evaluating a transition (or a live check), with the numbers used."""
    from_stage: str
    to_stage: str
    action: str                              # "promote" | "refuse" | "stay" | "demote"
    results: tuple[CriterionResult, ...]
    criteria: PromotionCriteria
    run_ids: tuple[int, ...] = ()            # evidence runs the criteria read
    rollback: bool = False                   # the paper -> small restart after a demotion
    ts_ns: int = field(default_factory=time.time_ns)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def promoted(self) -> bool:
        return self.action == "promote"

    def failed(self) -> list[CriterionResult]:
        return [r for r in self.results if not r.passed]

    def result(self, name: str) -> CriterionResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def payload(self) -> dict[str, Any]:
        return {"criteria": self.criteria.to_dict(), "results": [r.to_dict() for r in self.results],
                "rollback": self.rollback}

    @classmethod
    def from_ledger(cls, entry: LedgerEntry) -> Decision:
        """A recorded decision back from the ledger."""
        if entry.kind != "decision":
            raise DataError(f"ledger entry {entry.entry_id} is a {entry.kind}, not a decision")
        p = entry.payload
        return cls(from_stage=entry.from_stage or "", to_stage=entry.to_stage or "", action=entry.action,
                   results=tuple(CriterionResult.from_dict(r) for r in p.get("results", ())),
                   criteria=PromotionCriteria.from_mapping(p["criteria"]),
                   run_ids=tuple(entry.run_ids), rollback=bool(p.get("rollback", False)),
                   ts_ns=entry.ts_ns or 0)


@dataclass(frozen=True, slots=True)
class StageState:
    """The stage reached by promotion, derived from the ledger."""
    current: str                             # highest stage that may be run without force
    rollback: LedgerEntry | None = None      # the demotion whose rollback is pending
    forced_runs: int = 0                     # forced_run ledger entries so far
    last_demotion: LedgerEntry | None = None  # the latest demotion (pending or rolled back)

    @property
    def since_run_id(self) -> int | None:
        """Runs up to this id predate the latest demotion and are no evidence for promotion."""
        return None if self.last_demotion is None else self.last_demotion.after_run_id


# --------------------------------------------------------------------------- criteria helpers

def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return f"{x:.6g}"
    return str(x)


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _cmp(name: str, actual: Any, op: str, threshold: float, detail: str = "",
         what: str = "") -> CriterionResult:
    """actual <op> threshold, op in > >= < <=; margin = signed distance to the threshold.
    ``what`` names the compared quantity in the requirement ("rel diff <= 0.1")."""
    v = _num(actual)
    required = f"{what} {op} {_fmt(threshold)}".strip()
    if v is None:
        return CriterionResult(name, required, actual if actual is None else _fmt(actual),
                               False, None, detail or "undefined")
    margin = v - threshold if op in (">", ">=") else threshold - v
    passed = {">": v > threshold, ">=": v >= threshold, "<": v < threshold, "<=": v <= threshold}[op]
    if math.isnan(margin):    # inf - inf
        margin = 0.0
    shown = actual if isinstance(actual, int) and not isinstance(actual, bool) else v
    return CriterionResult(name, required, shown, bool(passed), margin, detail)


def _missing(name: str, required: str, detail: str) -> CriterionResult:
    return CriterionResult(name, required, None, False, None, detail)


def _rel_diff(a: Any, b: Any, floor: float) -> float | None:
    va, vb = _num(a), _num(b)
    if va is None or vb is None or math.isinf(va) or math.isinf(vb):
        return None
    return abs(va - vb) / max(abs(vb), floor)


def _same_period(a: StageRun, b: StageRun, tol_s: float) -> bool:
    (a0, a1), (b0, b1) = a.period, b.period
    if None in (a0, a1, b0, b1):
        return False
    tol = tol_s * 1e9
    return abs(a0 - b0) <= tol and abs(a1 - b1) <= tol


def _min_duration(run: StageRun, minimum: float) -> CriterionResult:
    return _cmp("min_duration", run.duration_s, ">=", minimum, f"run {run.run_id}, seconds")


def _none_since(stage: str, since: int | None) -> str:
    if since is None:
        return f"no {stage} run recorded"
    return f"no {stage} run recorded since the demotion (after run {since})"


def _ids(*runs: StageRun | None) -> tuple[int, ...]:
    return tuple(r.run_id for r in runs if r is not None and r.run_id is not None)


# --------------------------------------------------------------------------- the transitions

def _backtest_to_paper(ev: Evidence, c: PromotionCriteria) -> tuple[list[CriterionResult], tuple[int, ...]]:
    b = ev.latest("backtest")
    if b is None:
        return [_missing("backtest_run", "a recorded backtest run", "no backtest run recorded")], ()
    m = b.metrics
    res = [
        _cmp("sharpe", m.get("sharpe"), ">", c.min_sharpe, f"run {b.run_id}"),
        _cmp("max_drawdown", m.get("max_drawdown"), "<", c.max_drawdown, f"run {b.run_id}"),
        _cmp("profit_factor", m.get("profit_factor"), ">", c.min_profit_factor, f"run {b.run_id}"),
    ]
    other = None
    if c.require_reproducible:
        earlier = [r for r in ev.runs_of("backtest")
                   if (r.run_id or 0) < (b.run_id or 0) and r.config_digest == b.config_digest
                   and _same_period(r, b, c.period_tolerance_s)]
        if not earlier:
            res.append(_missing("reproducible", "a second run with the same result digest",
                                f"no earlier backtest run with config {b.config_digest[:12]} over the same "
                                f"period as run {b.run_id}"))
        else:
            other = earlier[-1]
            same = other.result_digest == b.result_digest
            res.append(CriterionResult(
                "reproducible", f"digest == run {other.run_id}'s",
                "same digest" if same else "digests differ", same, None,
                f"run {b.run_id} {b.result_digest[:16]} vs run {other.run_id} {other.result_digest[:16]}"))
    return res, _ids(b, other)


def _paper_vs_backtest(p: StageRun, ev: Evidence, c: PromotionCriteria) -> tuple[list[CriterionResult], StageRun | None]:
    matches = [b for b in ev.runs_of("backtest")
               if b.config_digest == p.config_digest and _same_period(b, p, c.period_tolerance_s)]
    b = matches[-1] if matches else None
    res: list[CriterionResult] = []
    if b is None:
        why = f"no backtest run with config {p.config_digest[:12]} over paper run {p.run_id}'s period"
        res.append(_missing("backtest_same_period", "a backtest run over the same period", why))
        for name in ("total_return_vs_backtest", "fills_vs_backtest", "mean_slippage_vs_backtest"):
            res.append(_missing(name, f"rel diff <= {_fmt(c.paper_tolerance)}", why))
        return res, None
    res.append(CriterionResult("backtest_same_period", "a backtest run over the same period",
                               f"run {b.run_id}", True, None, ""))
    pairs = (
        ("total_return_vs_backtest", p.metrics.get("total_return"), b.metrics.get("total_return"),
         c.paper_return_floor),
        ("fills_vs_backtest", p.n_fills, b.n_fills, c.paper_fills_floor),
        ("mean_slippage_vs_backtest", p.mean_slippage_bps, b.mean_slippage_bps, c.paper_slippage_floor_bps),
    )
    for name, pv, bv, floor in pairs:
        rel = _rel_diff(pv, bv, floor)
        detail = f"paper {_fmt(pv)} vs backtest {_fmt(bv)} (run {p.run_id} vs {b.run_id}; floor {_fmt(floor)})"
        if rel is None:
            res.append(_missing(name, f"rel diff <= {_fmt(c.paper_tolerance)}", "undefined: " + detail))
        else:
            res.append(_cmp(name, rel, "<=", c.paper_tolerance, detail, "rel diff"))
    return res, b


def _paper_to_shadow(ev: Evidence, c: PromotionCriteria, since: int | None = None,
                     rollback: bool = False) -> tuple[list[CriterionResult], tuple[int, ...]]:
    p = ev.latest("paper", after_run_id=since)
    if p is None:
        if rollback:
            return [_missing("paper_rerun_after_demotion", "a paper run after the demotion",
                             f"no paper run recorded after run {since}")], ()
        return [_missing("paper_run", "a recorded paper run", _none_since("paper", since))], ()
    res: list[CriterionResult] = []
    if rollback:
        res.append(CriterionResult("paper_rerun_after_demotion", "a paper run after the demotion",
                                   f"run {p.run_id}", True, None, ""))
    cmp_res, b = _paper_vs_backtest(p, ev, c)
    res += cmp_res
    res.append(_cmp("system_errors", p.system_errors, "<=", c.max_system_errors, f"run {p.run_id}"))
    res.append(_min_duration(p, c.min_paper_duration_s))
    return res, _ids(p, b)


def _shadow_to_small(ev: Evidence, c: PromotionCriteria, since: int | None = None,
                     ) -> tuple[list[CriterionResult], tuple[int, ...]]:
    s = ev.latest("shadow", after_run_id=since)
    if s is None:
        return [_missing("shadow_run", "a recorded shadow run", _none_since("shadow", since))], ()
    st = s.slippage()
    return [
        _cmp("paired_fills", st["n"], ">=", c.min_paired_fills, f"run {s.run_id}"),
        _cmp("slippage_model_error_bps", st["mean_abs_bps"], "<=", c.max_slippage_error_bps,
             f"run {s.run_id}: mean |real - sim| over {st['n']} paired fills; "
             f"bias {_fmt(st['mean_bps'])} bps, p95 {_fmt(st['p95_bps'])} bps"),
        _cmp("critical_errors", s.critical_errors, "<=", c.max_critical_errors, f"run {s.run_id}"),
        _min_duration(s, c.min_shadow_duration_s),
    ], _ids(s)


def _risk_control_results(run: StageRun, required: Sequence[str]) -> list[CriterionResult]:
    recorded: dict[str, list[Any]] = {}
    for ctl in run.risk_controls:
        recorded.setdefault(ctl.name, []).append(ctl)
    names = list(required) + [n for n in recorded if n not in required]
    if not names:
        return [_missing("risk_controls", "every risk control exercised and passing",
                         f"run {run.run_id} recorded no risk control")]
    out = []
    for name in names:
        checks = recorded.get(name)
        if not checks:
            out.append(_missing(f"risk_control:{name}", "exercised and passed",
                                f"run {run.run_id}: not recorded"))
            continue
        exercised = any(ch.exercised for ch in checks)
        passed = all(ch.passed for ch in checks) and exercised
        actual = "passed" if passed else ("not exercised" if not exercised else "failed")
        detail = "; ".join(ch.detail for ch in checks if ch.detail)
        out.append(CriterionResult(f"risk_control:{name}", "exercised and passed", actual, passed, None, detail))
    return out


def _small_to_live(ev: Evidence, c: PromotionCriteria, since: int | None = None,
                   ) -> tuple[list[CriterionResult], tuple[int, ...]]:
    m = ev.latest("small", after_run_id=since)
    if m is None:
        return [_missing("small_run", "a recorded small run", _none_since("small", since))], ()
    papers = [p for p in ev.runs_of("paper") if p.config_digest == m.config_digest]
    p = papers[-1] if papers else None
    res: list[CriterionResult] = []
    req = f"|diff| <= {_fmt(c.sharpe_tolerance)}"
    if p is None:
        res.append(_missing("sharpe_vs_paper", req, f"no paper run with config {m.config_digest[:12]}"))
    else:
        ms, ps = m.metrics, p.metrics
        keys = ("sampling_interval_s", "annualisation_factor")
        if any(ms.get(k) != ps.get(k) for k in keys):
            res.append(_missing("sharpe_vs_paper", req,
                                f"not comparable: small run {m.run_id} sampled "
                                f"{_fmt(ms.get(keys[0]))} s x {_fmt(ms.get(keys[1]))}/yr, paper run "
                                f"{p.run_id} {_fmt(ps.get(keys[0]))} s x {_fmt(ps.get(keys[1]))}/yr"))
        else:
            a, b = _num(ms.get("sharpe")), _num(ps.get("sharpe"))
            detail = f"small {_fmt(ms.get('sharpe'))} vs paper {_fmt(ps.get('sharpe'))} (run {m.run_id} vs {p.run_id})"
            if a is None or b is None or math.isinf(a) or math.isinf(b):
                res.append(_missing("sharpe_vs_paper", req, "undefined: " + detail))
            else:
                res.append(_cmp("sharpe_vs_paper", abs(a - b), "<=", c.sharpe_tolerance, detail, "|diff|"))
    res += _risk_control_results(m, c.required_risk_controls)
    res.append(_min_duration(m, c.min_small_duration_s))
    return res, _ids(m, p)


# --------------------------------------------------------------------------- state and evaluation

def derive_stage_state(ledger: Sequence[LedgerEntry]) -> StageState:
    """Replay the ledger: promotions move up, a demotion drops to paper with a rollback pending,
    the rollback promotion (paper -> small) clears it."""
    current = "backtest"
    rollback: LedgerEntry | None = None
    last: LedgerEntry | None = None
    forced = 0
    for e in ledger:
        if e.kind == "decision" and e.action == "promote" and e.passed and e.to_stage:
            current = e.to_stage
            if e.from_stage == "paper" and e.to_stage == "small":
                rollback = None
        elif e.kind == "demotion":
            current = "paper"
            rollback = last = e
        elif e.kind == "forced_run":
            forced += 1
    return StageState(current=current, rollback=rollback, forced_runs=forced, last_demotion=last)


def criteria_from_config(promotion) -> PromotionCriteria:
    """The gate's criteria from a config's ``[promotion]`` tables (engine.config.PromotionConfig):
    the thresholds an operator configured are the ones the gate applies."""
    b, p, sh, sm = (promotion.backtest_to_paper, promotion.paper_to_shadow, promotion.shadow_to_small,
                    promotion.small_to_live)
    return PromotionCriteria(
        min_sharpe=b.min_sharpe, max_drawdown=b.max_drawdown_pct / 100.0, min_profit_factor=b.min_profit_factor,
        require_reproducible=b.require_reproducible,
        paper_tolerance=p.max_deviation_pct / 100.0, max_system_errors=p.max_system_errors,
        min_paper_duration_s=float(p.min_duration_s),
        max_slippage_error_bps=sh.max_slippage_error_bps, max_critical_errors=sh.max_critical_errors,
        min_shadow_duration_s=float(sh.min_duration_s),
        min_small_duration_s=float(sm.min_duration_s),
        required_risk_controls=DEFAULT_RISK_CONTROLS if sm.require_all_controls_exercised else (),
    )


def evaluate(from_stage: str, to_stage: str, evidence: Evidence,
             criteria: PromotionCriteria | None = None) -> Decision:
    """Evaluate the transition from_stage -> to_stage on the evidence (pure: records nothing).

    A transition other than to the next stage, or from a stage that is not the current one
    (per the evidence's ledger), is refused with a failed ``stage_sequence`` criterion; so is
    ``paper -> shadow`` while a rollback is pending. ``paper -> small`` is the rollback
    restart, allowed only while a rollback is pending.
    """
    c = criteria or PromotionCriteria()
    check_stage(from_stage, "from stage")
    check_stage(to_stage, "to stage")
    state = derive_stage_state(evidence.ledger)
    rollback = state.rollback is not None and from_stage == "paper" and to_stage == "small"
    expected = STAGES[stage_index(from_stage) + 1] if from_stage != "live" else None

    def refuse(detail: str, actual: str) -> Decision:
        return Decision(from_stage, to_stage, "refuse",
                        (CriterionResult("stage_sequence", "the next stage from the current one",
                                         actual, False, None, detail),), c)

    if from_stage != state.current:
        return refuse(f"the current stage is {state.current}, not {from_stage}",
                      f"{from_stage} -> {to_stage}")
    if state.rollback is not None and not rollback:
        return refuse(f"rollback pending after the demotion from {state.rollback.from_stage} "
                      f"({state.rollback.reason}): re-run paper, then promote paper -> small",
                      f"{from_stage} -> {to_stage}")
    if not rollback and to_stage != expected:
        return refuse("live is the last stage (use check_live)" if expected is None
                      else f"the next stage after {from_stage} is {expected}", f"{from_stage} -> {to_stage}")

    since = state.since_run_id
    if rollback:
        results, ids = _paper_to_shadow(evidence, c, since, rollback=True)
    elif to_stage == "paper":
        results, ids = _backtest_to_paper(evidence, c)
    else:
        results, ids = {"shadow": _paper_to_shadow, "small": _shadow_to_small,
                        "live": _small_to_live}[to_stage](evidence, c, since)
    ok = bool(results) and all(r.passed for r in results)
    return Decision(from_stage, to_stage, "promote" if ok else "refuse", tuple(results), c, ids, rollback)


def check_live(evidence: Evidence, criteria: PromotionCriteria | None = None) -> Decision:
    """Monitoring check of the latest live run (since the latest demotion): action "stay", or
    "demote" on any breach."""
    c = criteria or PromotionCriteria()
    since = derive_stage_state(evidence.ledger).since_run_id
    run = evidence.latest("live", after_run_id=since)
    if run is None:
        raise DataError(f"check_live: {_none_since('live', since)}")
    results = [
        _cmp("critical_errors", run.critical_errors, "<=", c.max_critical_errors, f"run {run.run_id}"),
        _cmp("kill_switch_trips", run.kill_switch_trips, "<=", 0, f"run {run.run_id}"),
        _cmp("max_drawdown", run.metrics.get("max_drawdown"), "<", c.live_max_drawdown, f"run {run.run_id}"),
    ]
    for ctl in run.risk_controls:
        results.append(CriterionResult(f"risk_control:{ctl.name}", "no breach",
                                       "passed" if ctl.passed else "breached", bool(ctl.passed), None, ctl.detail))
    ok = all(r.passed for r in results)
    return Decision("live", "live" if ok else "small", "stay" if ok else "demote", tuple(results), c, _ids(run))


def record_decision(store: EvidenceStore, decision: Decision) -> int:
    """Store a decision with the criteria and every criterion result; returns the ledger entry id.

    A promotion is recorded only if its from_stage is still the current stage (PromotionError).
    """
    if decision.action == "promote":
        state = derive_stage_state(store.ledger())
        if decision.from_stage != state.current:
            raise PromotionError(f"cannot record promotion {decision.from_stage} -> {decision.to_stage}: "
                                 f"the current stage is now {state.current}")
        if decision.rollback != (state.rollback is not None and decision.to_stage == "small"
                                 and decision.from_stage == "paper"):
            raise PromotionError("cannot record promotion: the rollback state changed since evaluation")
    return store.append_ledger(LedgerEntry(
        kind="decision", from_stage=decision.from_stage, to_stage=decision.to_stage,
        action=decision.action, passed=decision.passed,
        reason="; ".join(f"{r.name}: {r.detail or _fmt(r.actual)}" for r in decision.failed()),
        run_ids=decision.run_ids, payload=decision.payload(), ts_ns=decision.ts_ns))


class PromotionGate:
    """The gate over an :class:`EvidenceStore`: stage state, run permission, promotion,
    demotion. Every outcome is written to the store's ledger."""

    def __init__(self, store: EvidenceStore, criteria: PromotionCriteria | None = None) -> None:
        self._store = store
        self._criteria = criteria or PromotionCriteria()

    @property
    def store(self) -> EvidenceStore:
        return self._store

    @property
    def criteria(self) -> PromotionCriteria:
        return self._criteria

    def state(self) -> StageState:
        return derive_stage_state(self._store.ledger())

    def current_stage(self) -> str:
        """The highest stage reached by promotion (backtest when nothing was promoted)."""
        return self.state().current

    def reached(self, stage: str) -> bool:
        return stage_index(stage) <= stage_index(self.current_stage())

    def may_run(self, stage: str, force: bool = False, reason: str = "") -> bool:
        """True if the stage was reached by promotion. Otherwise False, unless ``force``: then a
        forced_run entry is recorded (with ``reason``) and the answer is True."""
        if self.reached(stage):
            return True
        if not force:
            return False
        state = self.state()
        self._store.append_ledger(LedgerEntry(
            kind="forced_run", from_stage=state.current, to_stage=stage, action="force", passed=False,
            reason=reason or f"operator forced a {stage} run while the current stage is {state.current}"))
        return True

    def require_run(self, stage: str, force: bool = False, reason: str = "") -> None:
        """:meth:`may_run`, raising StageRefusedError when refused."""
        if not self.may_run(stage, force, reason):
            raise StageRefusedError(f"stage {stage} has not been reached by promotion (current stage: "
                                    f"{self.current_stage()}); promote first or force the run")

    def record_run(self, run: StageRun) -> int:
        """Record a run; a run of an unreached stage must be marked forced (StageRefusedError)."""
        if not run.forced and not self.reached(run.stage):
            raise StageRefusedError(f"run of stage {run.stage} not reached by promotion (current stage: "
                                    f"{self.current_stage()}) and not marked forced")
        return self._store.record_run(run)

    def evaluate(self, to_stage: str) -> Decision:
        """Evaluate current stage -> to_stage on the stored evidence (records nothing)."""
        return evaluate(self.current_stage(), to_stage, self._store.evidence(), self._criteria)

    def promote(self, to_stage: str) -> Decision:
        """Evaluate and record the decision (refusals are recorded too)."""
        d = self.evaluate(to_stage)
        self.record_decision(d)
        return d

    def record_decision(self, decision: Decision) -> int:
        return record_decision(self._store, decision)

    def record_demotion(self, stage: str, reason: str, run_id: int | None = None) -> int:
        """Demote after a breach in small or live (kill switch trip, failed live check): the stage
        reached drops to paper and the rollback (paper re-run, then paper -> small) is pending."""
        check_stage(stage)
        if stage not in ("small", "live"):
            raise DataError(f"record_demotion: stage {stage!r}: only small and live demote")
        return self._store.append_ledger(LedgerEntry(
            kind="demotion", from_stage=stage, to_stage="small", action="demote", passed=False,
            reason=reason, run_ids=() if run_id is None else (int(run_id),)))

    def on_kill_switch_trip(self, stage: str, reason: str, run_id: int | None = None) -> int | None:
        """Hook for the kill switch: in small or live records a demotion (returns its entry id);
        in other stages nothing changes (None)."""
        if check_stage(stage) in ("small", "live"):
            return self.record_demotion(stage, f"kill switch: {reason}", run_id)
        return None

    def check_live(self) -> Decision:
        """Live monitoring check; records the decision, and a demotion on any breach.
        PromotionError when the current stage is not live."""
        current = self.current_stage()
        if current != "live":
            raise PromotionError(f"live check: the current stage is {current}, not live")
        d = check_live(self._store.evidence(), self._criteria)
        self.record_decision(d)
        if d.action == "demote":
            self.record_demotion("live", "live check: " + "; ".join(r.name for r in d.failed()),
                                 d.run_ids[0] if d.run_ids else None)
        return d


# --------------------------------------------------------------------------- output and CLI entry

def format_decision(decision: Decision) -> str:
    """The decision as a plain-text table: criterion, required, actual, margin, result, detail."""
    verb = {"promote": "PROMOTED", "refuse": "REFUSED", "stay": "OK", "demote": "DEMOTE"}[decision.action]
    n_fail = len(decision.failed())
    kind = "rollback restart" if decision.rollback else ("live check" if decision.from_stage == "live"
                                                         else "promotion")
    head = f"{kind} {decision.from_stage} -> {decision.to_stage}: {verb}"
    if n_fail:
        head += f" ({n_fail} of {len(decision.results)} criteria failed)"
    if decision.run_ids:
        head += f"  [evidence runs: {', '.join(map(str, decision.run_ids))}]"
    rows = [("criterion", "required", "actual", "margin", "result", "detail")]
    for r in decision.results:
        rows.append((r.name, r.required, _fmt(r.actual), _fmt(r.margin), "pass" if r.passed else "FAIL", r.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [head]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row[:5])) + "  " + row[5])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    return "\n".join(line.rstrip() for line in lines)


def promote_main(store_path: str, to_stage: str, *, criteria: PromotionCriteria | None = None,
                 dry_run: bool = False, out: TextIO | None = None) -> int:
    """``engine promote --to S``: evaluate current -> S on the evidence in ``store_path``,
    print the decision table, record the decision (unless ``dry_run``). Returns 0 when
    promoted, 1 when refused. A missing store or an unknown stage is an EngineError."""
    out = out or sys.stdout
    check_stage(to_stage, "--to")
    with EvidenceStore(store_path, create=False) as store:
        gate = PromotionGate(store, criteria)
        decision = gate.evaluate(to_stage)
        if not dry_run:
            gate.record_decision(decision)
        print(format_decision(decision), file=out)
        print(f"current stage: {gate.current_stage()}" + ("  (dry run: nothing recorded)" if dry_run else ""),
              file=out)
    return 0 if decision.promoted else 1
