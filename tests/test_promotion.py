"""engine.promotion and engine.evidence: the gate refuses on each criterion (name and margin),
passes on good evidence, records forced runs, demotes and enforces the rollback sequence;
the evidence store round-trips everything it is given."""
from __future__ import annotations

import dataclasses
import io
import math
import sqlite3

import numpy as np
import pytest

from engine.analytics import compute_metrics, digest
from engine.errors import ConfigError, DataError, EngineError
from engine.evidence import (
    Evidence,
    EvidenceStore,
    EvidenceStoreError,
    PairedFill,
    RiskControlCheck,
    StageRun,
)
from engine.promotion import (
    DEFAULT_RISK_CONTROLS,
    Decision,
    PromotionCriteria,
    PromotionError,
    PromotionGate,
    StageRefusedError,
    check_live,
    evaluate,
    format_decision,
    promote_main,
)

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
STEP_S = 60
N_POINTS = 600                      # 10 hours at 1 minute

# the DESIGN.md thresholds, with durations a test can meet
FAST = PromotionCriteria(min_paper_duration_s=600.0, min_shadow_duration_s=600.0,
                         min_small_duration_s=600.0, min_paired_fills=10)


def curve(seed: int = 1, drift: float = 2e-4, vol: float = 1e-3, capital: float = 1e6):
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(N_POINTS, dtype=np.int64) * STEP_S * NS
    eq = capital * np.cumprod(1.0 + rng.normal(drift, vol, N_POINTS))
    return ts, eq


def trades(seed: int = 1, n: int = 120, mean: float = 40.0, sd: float = 100.0) -> np.ndarray:
    return np.random.default_rng(seed + 1000).normal(mean, sd, n)


def paired(n: int = 30, bias: float = 1e-4, sd: float = 5e-5, seed: int = 3) -> tuple[PairedFill, ...]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        side = i % 2
        sim = 100.0 + rng.uniform(-1, 1)
        real = sim * (1.0 + (1 if side == 0 else -1) * rng.normal(bias, sd))
        out.append(PairedFill(cl_ord_id=10 + i, side=side, qty=1, sim_price=sim, real_price=real,
                              sim_ts_ns=T0 + i, real_ts_ns=T0 + i + 50_000, symbol="AAPL"))
    return tuple(out)


ALL_CONTROLS = tuple(RiskControlCheck(name, True, True, f"{name} rejected the drill order")
                     for name in DEFAULT_RISK_CONTROLS)


def make_run(stage: str, *, seed: int = 1, config: str = "cfg-A", duration_s: float = 3600.0,
             metrics: dict | None = None, result_digest: str | None = None, n_fills: int = 240,
             mean_slippage_bps: float | None = 1.5, period_shift_s: float = 0.0, **kw) -> StageRun:
    ts, eq = curve(seed)
    ts = ts + int(period_shift_s * NS)
    pnls = trades(seed)
    m = compute_metrics(ts, eq, pnls, 5e7, 60.0)
    m.update(metrics or {})
    started = T0 + 10**6 * NS
    return StageRun(stage=stage, started_ns=started, ended_ns=started + int(duration_s * NS),
                    config_digest=config,
                    result_digest=result_digest or digest([(i, float(p)) for i, p in enumerate(pnls)], (ts, eq)),
                    metrics=m, n_fills=n_fills, mean_slippage_bps=mean_slippage_bps,
                    equity_ts_ns=ts, equity=eq, trade_pnls=pnls, **kw)


@pytest.fixture
def store(tmp_path):
    with EvidenceStore(tmp_path / "evidence.sqlite") as s:
        yield s


@pytest.fixture
def gate(store):
    return PromotionGate(store, FAST)


def good_run(stage: str, **kw) -> StageRun:
    if stage == "shadow":
        kw.setdefault("paired_fills", paired())
    if stage == "small":
        kw.setdefault("risk_controls", ALL_CONTROLS)
    return make_run(stage, **kw)


def advance(gate: PromotionGate, to_stage: str) -> list[Decision]:
    """Record good evidence and promote stage by stage up to to_stage."""
    order = ["backtest", "paper", "shadow", "small", "live"]
    decisions = []
    for nxt in order[order.index(gate.current_stage()) + 1: order.index(to_stage) + 1]:
        cur = gate.current_stage()
        if cur == "backtest":
            gate.record_run(good_run("backtest"))
            gate.record_run(good_run("backtest"))
        else:
            gate.record_run(good_run(cur))
        d = gate.promote(nxt)
        assert d.promoted, format_decision(d)
        decisions.append(d)
    return decisions


def test_good_evidence_promotes_through_every_stage(gate):
    assert gate.current_stage() == "backtest"
    ds = advance(gate, "live")
    assert [(d.from_stage, d.to_stage) for d in ds] == [
        ("backtest", "paper"), ("paper", "shadow"), ("shadow", "small"), ("small", "live")]
    assert gate.current_stage() == "live"
    names = {r.name for r in ds[0].results}
    assert names == {"sharpe", "max_drawdown", "profit_factor", "reproducible"}
    assert {r.name for r in ds[1].results} == {
        "backtest_same_period", "total_return_vs_backtest", "fills_vs_backtest",
        "mean_slippage_vs_backtest", "system_errors", "min_duration"}
    assert {r.name for r in ds[2].results} == {
        "paired_fills", "slippage_model_error_bps", "critical_errors", "min_duration"}
    assert {r.name for r in ds[3].results} == {"sharpe_vs_paper", "min_duration"} | {
        f"risk_control:{n}" for n in DEFAULT_RISK_CONTROLS}
    for d in ds:
        for r in d.results:
            assert r.passed and (r.margin is None or r.margin >= 0), r


# --------------------------------------------------------------------------- each criterion refuses

def refused(gate: PromotionGate, to_stage: str, name: str) -> Decision:
    d = gate.evaluate(to_stage)
    assert not d.promoted and d.action == "refuse"
    failed = [r.name for r in d.failed()]
    assert failed == [name], format_decision(d)
    return d


def test_backtest_refused_on_sharpe(gate):
    gate.record_run(good_run("backtest", metrics={"sharpe": 0.8}))
    gate.record_run(good_run("backtest", metrics={"sharpe": 0.8}))
    r = refused(gate, "paper", "sharpe").result("sharpe")
    assert r.actual == 0.8 and r.required == "> 1" and r.margin == pytest.approx(-0.2)


def test_backtest_refused_on_sharpe_exactly_at_threshold(gate):
    for _ in range(2):
        gate.record_run(good_run("backtest", metrics={"sharpe": 1.0}))
    assert refused(gate, "paper", "sharpe").result("sharpe").margin == 0.0


def test_backtest_refused_on_max_drawdown(gate):
    for _ in range(2):
        gate.record_run(good_run("backtest", metrics={"max_drawdown": 0.2}))
    r = refused(gate, "paper", "max_drawdown").result("max_drawdown")
    assert r.actual == 0.2 and r.margin == pytest.approx(-0.05)


def test_backtest_refused_on_profit_factor(gate):
    for _ in range(2):
        gate.record_run(good_run("backtest", metrics={"profit_factor": 1.1}))
    r = refused(gate, "paper", "profit_factor").result("profit_factor")
    assert r.margin == pytest.approx(-0.2)


def test_backtest_profit_factor_undefined_or_infinite(gate):
    for _ in range(2):
        gate.record_run(good_run("backtest", metrics={"profit_factor": math.nan}))
    r = refused(gate, "paper", "profit_factor").result("profit_factor")
    assert r.margin is None and not r.passed
    gate.record_run(good_run("backtest", metrics={"profit_factor": math.inf}))
    d = gate.evaluate("paper")
    assert d.result("profit_factor").passed and d.result("profit_factor").margin == math.inf


def test_backtest_refused_when_not_reproducible(gate):
    gate.record_run(good_run("backtest", result_digest="a" * 64))
    gate.record_run(good_run("backtest", result_digest="b" * 64))
    r = refused(gate, "paper", "reproducible").result("reproducible")
    assert r.actual == "digests differ" and "aaaa" in r.detail and "bbbb" in r.detail


def test_backtest_refused_without_a_second_run(gate):
    gate.record_run(good_run("backtest"))
    gate.record_run(good_run("backtest", config="cfg-B"))           # another config does not count
    gate.record_run(good_run("backtest", config="cfg-B", period_shift_s=3600))  # nor another period
    r = refused(gate, "paper", "reproducible").result("reproducible")
    assert r.actual is None and "no earlier backtest run" in r.detail
    # ... and reproducibility can be switched off
    d = evaluate("backtest", "paper", gate.store.evidence(),
                 dataclasses.replace(FAST, require_reproducible=False))
    assert d.promoted


def test_no_backtest_at_all(gate):
    assert refused(gate, "paper", "backtest_run").result("backtest_run").actual is None


def at_paper(gate: PromotionGate) -> None:
    advance(gate, "paper")
    assert gate.current_stage() == "paper"


def test_paper_refused_on_total_return(gate):
    at_paper(gate)
    base = good_run("paper").metrics["total_return"]
    gate.record_run(good_run("paper", metrics={"total_return": base * 1.25}))
    r = refused(gate, "shadow", "total_return_vs_backtest").result("total_return_vs_backtest")
    denom = max(abs(base), FAST.paper_return_floor)
    assert r.actual == pytest.approx(abs(base * 0.25) / denom)
    assert r.margin == pytest.approx(0.10 - abs(base * 0.25) / denom)


def test_paper_refused_on_fill_count(gate):
    at_paper(gate)
    gate.record_run(good_run("paper", n_fills=300))                  # backtest had 240
    r = refused(gate, "shadow", "fills_vs_backtest").result("fills_vs_backtest")
    assert r.actual == pytest.approx(0.25) and r.margin == pytest.approx(-0.15)


def test_paper_refused_on_mean_slippage(gate):
    at_paper(gate)
    gate.record_run(good_run("paper", mean_slippage_bps=2.0))        # backtest 1.5 bps
    r = refused(gate, "shadow", "mean_slippage_vs_backtest").result("mean_slippage_vs_backtest")
    assert r.actual == pytest.approx(0.5 / 1.5) and r.margin == pytest.approx(0.1 - 0.5 / 1.5)


def test_paper_refused_on_system_errors(gate):
    at_paper(gate)
    gate.record_run(good_run("paper", system_errors=2))
    r = refused(gate, "shadow", "system_errors").result("system_errors")
    assert r.actual == 2 and r.margin == -2.0


def test_paper_refused_on_duration(gate):
    at_paper(gate)
    gate.record_run(good_run("paper", duration_s=500.0))
    r = refused(gate, "shadow", "min_duration").result("min_duration")
    assert r.actual == 500.0 and r.margin == -100.0


def test_paper_refused_without_backtest_over_the_same_period(gate):
    at_paper(gate)
    gate.record_run(good_run("paper", period_shift_s=86_400))
    d = gate.evaluate("shadow")
    failed = {r.name for r in d.failed()}
    assert failed == {"backtest_same_period", "total_return_vs_backtest", "fills_vs_backtest",
                      "mean_slippage_vs_backtest"}
    assert all(r.margin is None for r in d.failed())


def at_shadow(gate: PromotionGate) -> None:
    advance(gate, "shadow")
    assert gate.current_stage() == "shadow"


def test_shadow_refused_on_slippage_model_error(gate):
    at_shadow(gate)
    pf = paired(bias=8e-4, sd=1e-5)                                  # ~8 bps worse than simulated
    gate.record_run(good_run("shadow", paired_fills=pf))
    r = refused(gate, "small", "slippage_model_error_bps").result("slippage_model_error_bps")
    assert r.actual == pytest.approx(8.0, abs=0.1) and r.margin == pytest.approx(5.0 - r.actual)


def test_shadow_refused_on_too_few_paired_fills(gate):
    at_shadow(gate)
    gate.record_run(good_run("shadow", paired_fills=paired(n=4)))
    r = refused(gate, "small", "paired_fills").result("paired_fills")
    assert r.actual == 4 and r.margin == -6.0


def test_shadow_refused_on_critical_errors(gate):
    at_shadow(gate)
    gate.record_run(good_run("shadow", critical_errors=1))
    assert refused(gate, "small", "critical_errors").result("critical_errors").margin == -1.0


def test_shadow_refused_on_duration(gate):
    at_shadow(gate)
    gate.record_run(good_run("shadow", duration_s=60.0))
    assert refused(gate, "small", "min_duration").result("min_duration").margin == -540.0


def at_small(gate: PromotionGate) -> None:
    advance(gate, "small")
    assert gate.current_stage() == "small"


def test_small_refused_on_sharpe_vs_paper(gate):
    at_small(gate)
    paper_sharpe = good_run("paper").metrics["sharpe"]
    gate.record_run(good_run("small", metrics={"sharpe": paper_sharpe - 0.8}))
    r = refused(gate, "live", "sharpe_vs_paper").result("sharpe_vs_paper")
    assert r.actual == pytest.approx(0.8) and r.margin == pytest.approx(-0.3)


def test_small_refused_when_sharpe_not_comparable(gate):
    at_small(gate)
    gate.record_run(good_run("small", metrics={"sampling_interval_s": 300.0}))
    r = refused(gate, "live", "sharpe_vs_paper").result("sharpe_vs_paper")
    assert "not comparable" in r.detail


@pytest.mark.parametrize("control,exercised,passed,actual", [
    ("price_band", False, True, "not exercised"),
    ("kill_switch", True, False, "failed"),
])
def test_small_refused_on_a_risk_control(gate, control, exercised, passed, actual):
    at_small(gate)
    controls = tuple(c if c.name != control else RiskControlCheck(control, exercised, passed, "drill")
                     for c in ALL_CONTROLS)
    gate.record_run(good_run("small", risk_controls=controls))
    r = refused(gate, "live", f"risk_control:{control}").result(f"risk_control:{control}")
    assert r.actual == actual and r.margin is None


def test_small_refused_on_a_missing_or_extra_control(gate):
    at_small(gate)
    controls = tuple(c for c in ALL_CONTROLS if c.name != "throttle") + (
        RiskControlCheck("stale_book", True, False, "order went out on a stale book"),)
    gate.record_run(good_run("small", risk_controls=controls))
    d = gate.evaluate("live")
    assert {r.name for r in d.failed()} == {"risk_control:throttle", "risk_control:stale_book"}
    assert d.result("risk_control:throttle").detail.endswith("not recorded")


def test_small_refused_on_duration(gate):
    at_small(gate)
    gate.record_run(good_run("small", duration_s=599.0))
    assert refused(gate, "live", "min_duration").result("min_duration").margin == pytest.approx(-1.0)


@pytest.mark.parametrize("to_stage", ["shadow", "small", "live", "backtest"])
def test_stage_sequence_is_enforced(gate, to_stage):
    for _ in range(2):
        gate.record_run(good_run("backtest"))
    d = gate.evaluate(to_stage)
    assert not d.promoted and [r.name for r in d.failed()] == ["stage_sequence"]
    # from a stage that is not the current one
    d2 = evaluate("paper", "shadow", gate.store.evidence(), FAST)
    assert d2.failed()[0].name == "stage_sequence" and "current stage is backtest" in d2.failed()[0].detail


# --------------------------------------------------------------------------- forced runs

def test_may_run_refuses_unreached_stages_and_records_forced_runs(gate, store):
    assert gate.may_run("backtest")
    assert not gate.may_run("paper")
    with pytest.raises(StageRefusedError, match="stage shadow has not been reached"):
        gate.require_run("shadow")
    assert store.ledger() == []
    assert gate.may_run("small", force=True, reason="operator drill")
    (entry,) = store.ledger()
    assert (entry.kind, entry.from_stage, entry.to_stage, entry.reason) == \
        ("forced_run", "backtest", "small", "operator drill")
    assert gate.state().forced_runs == 1
    assert gate.current_stage() == "backtest"               # forcing promotes nothing
    with pytest.raises(StageRefusedError, match="not marked forced"):
        gate.record_run(good_run("small"))
    rid = gate.record_run(good_run("small", forced=True))
    assert store.run(rid).forced
    # a forced run is no evidence
    assert gate.store.evidence().latest("small") is None
    assert gate.store.evidence().latest("small", include_forced=True).run_id == rid


def test_forced_paper_run_does_not_count_for_promotion(gate):
    assert gate.may_run("paper", force=True, reason="try it early")
    forced_id = gate.record_run(good_run("paper", forced=True))
    advance(gate, "paper")
    d = gate.evaluate("shadow")
    assert [r.name for r in d.failed()] == ["paper_run"]   # the only paper run was forced
    gate.record_run(good_run("paper"))
    d = gate.evaluate("shadow")
    assert d.promoted and forced_id not in d.run_ids


# --------------------------------------------------------------------------- demotion and rollback

def test_kill_switch_in_small_demotes_and_rollback_sequence_is_enforced(gate, store):
    advance(gate, "small")
    gate.record_run(good_run("small"))
    assert gate.on_kill_switch_trip("paper", "not a demotion stage") is None
    assert gate.current_stage() == "small"
    gate.on_kill_switch_trip("small", "daily loss limit")
    st = gate.state()
    assert st.current == "paper" and st.rollback is not None
    assert "daily loss limit" in st.rollback.reason
    assert not gate.may_run("small") and gate.may_run("paper")
    # shadow is not the way back, and small needs a paper re-run first
    d = gate.promote("shadow")
    assert d.failed()[0].name == "stage_sequence" and "rollback pending" in d.failed()[0].detail
    d = gate.promote("small")
    assert d.rollback and not d.promoted
    assert [r.name for r in d.failed()] == ["paper_rerun_after_demotion"]
    assert gate.current_stage() == "paper"
    # a bad re-run is refused on the paper criteria
    gate.record_run(good_run("paper", system_errors=1))
    d = gate.promote("small")
    assert [r.name for r in d.failed()] == ["system_errors"]
    # a good re-run restarts at small and clears the rollback
    gate.record_run(good_run("paper"))
    d = gate.promote("small")
    assert d.promoted and d.rollback, format_decision(d)
    assert gate.current_stage() == "small" and gate.state().rollback is None
    kinds = [(e.kind, e.action) for e in store.ledger()]
    assert ("demotion", "demote") in kinds
    # the small run from before the demotion is no evidence for small -> live
    d = gate.evaluate("live")
    assert [r.name for r in d.failed()] == ["small_run"] and "since the demotion" in d.failed()[0].detail
    gate.record_run(good_run("small"))
    assert gate.promote("live").promoted


def test_live_breach_demotes(gate):
    advance(gate, "live")
    gate.record_run(good_run("live"))
    d = gate.check_live()
    assert d.action == "stay" and gate.current_stage() == "live"
    gate.record_run(good_run("live", kill_switch_trips=1, metrics={"max_drawdown": 0.3}))
    d = gate.check_live()
    assert d.action == "demote" and d.to_stage == "small"
    assert {r.name for r in d.failed()} == {"kill_switch_trips", "max_drawdown"}
    assert d.result("max_drawdown").margin == pytest.approx(-0.15)
    assert gate.current_stage() == "paper" and gate.state().rollback.from_stage == "live"
    with pytest.raises(PromotionError, match="current stage is paper, not live"):
        gate.check_live()
    with pytest.raises(DataError, match="no live run recorded since the demotion"):
        check_live(gate.store.evidence(), FAST)
    with pytest.raises(DataError, match="only small and live demote"):
        gate.record_demotion("shadow", "x")


def test_check_live_needs_a_live_run():
    with pytest.raises(DataError, match="no live run"):
        check_live(Evidence(), FAST)


# --------------------------------------------------------------------------- recording

def test_recorded_decision_keeps_the_numbers(gate, store):
    for _ in range(2):
        gate.record_run(good_run("backtest", metrics={"sharpe": 0.5, "profit_factor": math.inf}))
    d = gate.promote("paper")
    (entry,) = store.ledger()
    assert entry.kind == "decision" and entry.action == "refuse" and not entry.passed
    assert "sharpe" in entry.reason
    back = Decision.from_ledger(entry)
    assert back.results == d.results
    assert back.criteria == FAST
    assert back.result("profit_factor").margin == math.inf
    assert back.run_ids == d.run_ids and len(d.run_ids) == 2


def test_stale_promotion_cannot_be_recorded(gate):
    for _ in range(2):
        gate.record_run(good_run("backtest"))
    d = gate.evaluate("paper")
    gate.record_decision(d)
    with pytest.raises(PromotionError, match="current stage is now paper"):
        gate.record_decision(d)


def test_store_round_trip(store):
    run = good_run("shadow", system_errors=1, critical_errors=2, kill_switch_trips=3, notes="n",
                   strategy="mm", risk_controls=ALL_CONTROLS[:2], period_start_ns=5, period_end_ns=9)
    rid = store.record_run(run)
    back = store.run(rid)
    for f in dataclasses.fields(StageRun):
        if f.name in ("run_id", "recorded_ns", "metrics", "equity_ts_ns", "equity", "trade_pnls"):
            continue
        assert getattr(back, f.name) == getattr(run, f.name), f.name
    assert back.run_id == rid and back.recorded_ns > 0
    np.testing.assert_array_equal(back.equity_ts_ns, run.equity_ts_ns)
    np.testing.assert_array_equal(back.equity, run.equity)
    np.testing.assert_array_equal(back.trade_pnls, run.trade_pnls)
    assert back.metrics.keys() == run.metrics.keys()
    for k, v in run.metrics.items():
        assert back.metrics[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(back.metrics[k]))
    lite = store.runs("shadow")[0]
    assert lite.equity is None and lite.paired_fills == run.paired_fills
    with pytest.raises(DataError, match="already recorded"):
        store.record_run(back)


def test_store_errors(tmp_path):
    with pytest.raises(EvidenceStoreError, match="no such file"):
        EvidenceStore(tmp_path / "missing.sqlite", create=False)
    bad = tmp_path / "junk.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(EvidenceStoreError, match="junk.sqlite"):
        EvidenceStore(bad)
    p = tmp_path / "old.sqlite"
    EvidenceStore(p).close()
    con = sqlite3.connect(p)
    con.execute("UPDATE ev_meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(EvidenceStoreError, match="schema version 99"):
        EvidenceStore(p)
    with pytest.raises(DataError, match="stage 'prod'"):
        make_run("prod")
    with pytest.raises(DataError, match="ended_ns"):
        dataclasses.replace(make_run("paper"), ended_ns=0)


def test_criteria_validation():
    assert PromotionCriteria().min_sharpe == 1.0 and PromotionCriteria().max_drawdown == 0.15
    assert PromotionCriteria().min_profit_factor == 1.3 and PromotionCriteria().paper_tolerance == 0.10
    c = PromotionCriteria.from_mapping({"min_sharpe": 2, "required_risk_controls": ["a", "b"]})
    assert c.min_sharpe == 2.0 and c.required_risk_controls == ("a", "b")
    for bad, match in (({"max_drawdown": 1.5}, "max_drawdown: must be in"),
                       ({"paper_tolerance": -0.1}, "paper_tolerance: must be >= 0"),
                       ({"min_paired_fills": 2.5}, "min_paired_fills: must be an integer"),
                       ({"min_sharpe": math.nan}, "min_sharpe: must be a finite"),
                       ({"required_risk_controls": "kill_switch"}, "list of control names"),
                       ({"paper_return_floor": 0}, "paper_return_floor: must be > 0"),
                       ({"sharp": 1}, "unknown key")):
        with pytest.raises(ConfigError, match=match):
            PromotionCriteria.from_mapping(bad)


def test_promote_main(tmp_path):
    path = tmp_path / "ev.sqlite"
    with EvidenceStore(path) as s:
        s.record_run(good_run("backtest"))
        s.record_run(good_run("backtest", metrics={"max_drawdown": 0.4}))
    out = io.StringIO()
    assert promote_main(str(path), "paper", criteria=FAST, out=out) == 1
    text = out.getvalue()
    assert "promotion backtest -> paper: REFUSED (1 of 4 criteria failed)" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("max_drawdown"))
    assert "< 0.15" in line and "0.4" in line and "-0.25" in line and "FAIL" in line
    with EvidenceStore(path) as s:
        s.record_run(good_run("backtest"))
        assert len(s.ledger()) == 1
    out = io.StringIO()
    assert promote_main(str(path), "paper", criteria=FAST, dry_run=True, out=out) == 0
    assert "PROMOTED" in out.getvalue() and "dry run" in out.getvalue()
    assert promote_main(str(path), "paper", criteria=FAST, out=io.StringIO()) == 0
    with EvidenceStore(path) as s:
        assert PromotionGate(s).current_stage() == "paper"
    with pytest.raises(EngineError, match="no such file"):
        promote_main(str(tmp_path / "nope.sqlite"), "paper")
    with pytest.raises(EngineError, match="--to 'prod'"):
        promote_main(str(path), "prod")


def test_criteria_from_config_uses_the_configured_thresholds(tmp_path):
    from importlib import resources

    from engine.config import load_config
    from engine.promotion import criteria_from_config
    text = (resources.files("engine") / "sample_config.toml").read_text()
    text = text.replace("min_sharpe = 1.0", "min_sharpe = 2.5").replace(
        "max_slippage_error_bps = 5", "max_slippage_error_bps = 3")
    path = tmp_path / "c.toml"
    path.write_text(text)
    c = criteria_from_config(load_config(path).promotion)
    assert c.min_sharpe == 2.5 and c.max_slippage_error_bps == 3.0
    assert c.max_drawdown == 0.15 and c.min_paper_duration_s == 30.0
