"""promtool checks of deploy/prometheus and deploy/grafana, and the proof that the
in-process evaluator (engine/alerts.py) agrees with Prometheus on the same rules.

promtool comes from Debian's `prometheus` package (CI installs it); a missing promtool
fails these tests, it does not skip them.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from engine import alerts as a
from engine.metrics import FAMILIES, go_float_string

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "engine-dashboard.json"
METRIC_RE = re.compile(r"\b(engine_[a-z0-9_]+)")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: apt-get install -y --no-install-recommends prometheus")
    return path


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules():
    res = run_promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_test_rules():
    res = run_promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_test_rules_catches_a_wrong_expectation(tmp_path):
    """The unit tests are not vacuous: one wrong expected value makes promtool fail."""
    shutil.copy(RULES, tmp_path / "alerts.yml")
    text = RULES_TEST.read_text().replace("(now 0.9)", "(now 0.8)")
    (tmp_path / "t.yml").write_text(text)
    res = run_promtool("test", "rules", "t.yml", cwd=tmp_path)
    assert res.returncode != 0 and "EngineHighCpu" in res.stdout + res.stderr


def test_alert_metrics_are_declared_families():
    for rule in a.load_rules():
        for name in METRIC_RE.findall(rule.expr):
            assert name in FAMILIES, f"{rule.name}: {name} is not declared in engine.metrics.FAMILIES"


# ----------------------------------------------------------------- dashboard

def _dashboard_targets() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"]))
            walk(p.get("panels", []))
    walk(dash["panels"])
    return out


def test_dashboard_is_valid_json_and_shows_every_alert_metric():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    shown = set()
    for _title, expr in _dashboard_targets():
        for name in METRIC_RE.findall(expr):
            shown.add(re.sub(r"_(bucket|count|sum)$", "", name))
    for rule in a.load_rules():
        for name in METRIC_RE.findall(rule.expr):
            assert name in shown, f"alert {rule.name} uses {name}, which no dashboard panel shows"
    for name in shown:
        assert name in FAMILIES, f"dashboard uses undeclared metric {name}"


def test_dashboard_queries_are_valid_promql(tmp_path):
    """Every panel query parses in Prometheus (as a recording rule, variables filled in)."""
    rules = []
    for i, (_title, expr) in enumerate(_dashboard_targets()):
        e = expr.replace("$job", "engine").replace("$instance", ".*")
        rules.append({"record": f"dashboard:query_{i}", "expr": e})
    p = tmp_path / "dash_rules.yml"
    p.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = run_promtool("check", "rules", str(p))
    assert res.returncode == 0, res.stdout + res.stderr


# ----------------------------------------------------------------- agreement

LBL = {"job": "engine", "instance": "engine:9464"}
MINUTES = 16


def _counter(rng, n, lo, hi, reset_at=None):
    inc = rng.integers(lo, hi + 1, n)
    inc[0] = 0
    vals = np.cumsum(inc).astype(float)
    if reset_at is not None:                     # a process restart: the counter starts again
        vals[reset_at:] = np.cumsum(inc[reset_at:])
    return vals


def _scenario(seed: int, with_limits: bool = True) -> dict[tuple[str, tuple], list[float]]:
    rng = np.random.default_rng(seed)
    n = MINUTES

    def u(lo, hi, nd):
        return [round(float(x), nd) for x in rng.uniform(lo, hi, n)]

    s: dict[tuple[str, tuple], list[float]] = {}

    def put(name, values, **labels):
        s[(name, tuple(sorted({**LBL, **labels}.items())))] = [float(v) for v in values]

    def step(threshold, width, nd):
        """Below the threshold, then above it from a random minute on (long enough for for: 5m)."""
        at = int(rng.integers(1, 8))
        return [round(float(x), nd) for x in np.concatenate(
            [rng.uniform(threshold - width, threshold, at), rng.uniform(threshold + 0.01, threshold + width, n - at)])]

    put("engine_cpu_usage_ratio", step(0.8, 0.1, 2))
    put("engine_memory_usage_ratio", step(0.85, 0.1, 2))
    put("engine_disk_usage_ratio", step(0.9, 0.05, 2))
    put("engine_event_loop_lag_p99_seconds", u(0.0, 0.08, 3))
    put("engine_metrics_source_errors_total", _counter(rng, n, 0, 1) * (rng.random() < 0.5), source="risk")
    put("engine_venue_round_trip_p99_seconds", u(0.002, 0.015, 4))
    sent_a = _counter(rng, n, 50, 150, reset_at=int(rng.integers(4, n)) if seed % 2 else None)
    sent_m = _counter(rng, n, 50, 150)
    put("engine_orders_sent_total", sent_a, symbol="AAPL")
    put("engine_orders_sent_total", sent_m, symbol="MSFT")
    put("engine_orders_filled_total", np.floor(np.maximum.accumulate(sent_m) * rng.uniform(0.7, 0.9)))
    put("engine_order_rejects_total", _counter(rng, n, 0, 3))
    for sym in ("AAPL", "MSFT"):
        put("engine_slippage_bps", u(0, 6, 1), symbol=sym)
        put("engine_expected_slippage_bps", u(1, 3, 1), symbol=sym)
        put("engine_position_lots", [int(x) for x in rng.integers(-150, 151, n)], symbol=sym)
        put("engine_position_limit_lots", [100] * n, symbol=sym)
        put("engine_concentration_ratio", u(0.3, 0.7, 2), symbol=sym)
        put("engine_concentration_limit_ratio", [0.5] * n, symbol=sym)
        put("engine_quote_staleness_seconds", u(0, 1.6, 1), symbol=sym)
    put("engine_reconciliation_mismatches", [int(x) for x in (rng.random(n) < 0.2) * rng.integers(1, 3, n)])
    put("engine_daily_pnl", [int(x) for x in rng.integers(-1500, 500, n)])
    put("engine_drawdown_ratio", u(0.05, 0.25, 2))
    if with_limits:
        put("engine_daily_pnl_limit", [-1000] * n)
        put("engine_drawdown_limit_ratio", [0.15] * n)
    put("engine_kill_switch_tripped", [int(x) for x in (rng.random(n) < 0.3)])
    put("engine_market_data_latency_p99_seconds", u(0.05, 0.15, 3))
    put("engine_feed_gaps_total", _counter(rng, n, 0, 1) * (rng.random(n) < 0.3).cumsum().clip(0, 1))
    return s


def _promql_series(name: str, labels: tuple) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{name}{{{inner}}}"


def _agreement_test(scenarios: list[dict]) -> tuple[dict, int]:
    """Run every scenario through the in-process evaluator minute by minute; return a
    promtool test document whose expectations are what this evaluator fired."""
    rules = a.load_rules(RULES)
    tests = []
    fired_total = 0
    for series in scenarios:
        ev = a.AlertEvaluator(rules)
        checks = []
        for minute in range(MINUTES):
            samples: dict[str, dict] = {}
            for (name, labels), values in series.items():
                samples.setdefault(name, {})[labels] = values[minute]
            ev.evaluate(samples, minute * 60.0)
            firing = ev.alerts("firing")
            for rule in rules:
                exp = []
                for al in firing:
                    if al.rule is rule:
                        exp.append({"exp_labels": dict(al.labels) | {}, "exp_annotations": dict(al.annotations)})
                        exp[-1]["exp_labels"].pop("alertname")
                fired_total += len(exp)
                checks.append({"eval_time": f"{minute}m", "alertname": rule.name, "exp_alerts": exp})
        tests.append({
            "interval": "1m",
            "input_series": [{"series": _promql_series(name, labels),
                              "values": " ".join(go_float_string(v) for v in values)}
                             for (name, labels), values in series.items()],
            "alert_rule_test": checks,
        })
    return {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}, fired_total


@pytest.mark.slow
def test_in_process_evaluator_agrees_with_prometheus(tmp_path):
    """Seeded scenarios crossing every threshold (counter resets included): whatever the
    in-process evaluator fires, with its labels and rendered annotations, at every
    minute, is exactly what promtool's Prometheus engine fires."""
    scenarios = [_scenario(seed) for seed in range(6)] + [_scenario(99, with_limits=False)]
    doc, fired = _agreement_test(scenarios)
    assert fired > 100                                   # the scenarios do fire alerts
    fired_names = {c["alertname"] for t in doc["tests"] for c in t["alert_rule_test"] if c["exp_alerts"]}
    expected_to_fire = {r.name for r in a.load_rules(RULES)} - {"EngineDown"}
    assert fired_names == expected_to_fire, expected_to_fire - fired_names
    shutil.copy(RULES, tmp_path / "alerts.yml")
    (tmp_path / "agreement.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    res = run_promtool("test", "rules", "agreement.yml", cwd=tmp_path)
    assert res.returncode == 0, (res.stdout + res.stderr)[:5000]
