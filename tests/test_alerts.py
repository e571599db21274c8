"""Tests of engine/alerts.py: the rules file loads into the supported PromQL subset,
the evaluator's semantics (for:, resolve, vector matching, range functions), and
PagerDuty Events v2 delivery to a real HTTP receiver on 127.0.0.1."""
from __future__ import annotations

import logging
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from engine import alerts as a
from engine import logs
from engine.errors import ConfigError
from engine.metrics import EngineMetrics, MetricsCollector


def S(**series):
    """samples: name -> {labels dict as kwargs-string ... } helper: S(x=[({"symbol":"A"}, 1.0)])."""
    return {name: {tuple(sorted(lbl.items())): float(v) for lbl, v in items} for name, items in series.items()}


def rules_from(yaml_text: str, tmp_path):
    p = tmp_path / "rules.yml"
    p.write_text(yaml_text)
    return a.load_rules(p)


# ----------------------------------------------------------------- loading

def test_repository_rules_load_and_cover_every_default():
    rules = a.load_rules()
    names = {r.name for r in rules}
    assert {"EngineHighCpu", "EngineHighMemory", "EngineDiskAlmostFull", "EngineVenueLatencyHigh",
            "EngineOrderRejectionRateHigh", "EngineFillRateLow", "EngineSlippageHigh",
            "EngineReconciliationMismatch", "EngineDailyLossLimit", "EngineDrawdownLimit",
            "EnginePositionLimit", "EngineConcentrationLimit", "EngineMarketDataLatencyHigh", "EngineFeedGap",
            "EngineQuoteStale", "EngineKillSwitchTripped"} <= names
    for r in rules:
        assert r.severity in a.PAGERDUTY_SEVERITIES
        assert r.annotations.get("summary"), r.name


@pytest.mark.parametrize("expr,what", [
    ("x > 1 or y > 1", "'or' is not supported"),
    ("sum by (symbol) (x) > 1", "'by' is not supported"),
    ("sum(x) by (symbol) > 1", "sum(...) by is not supported"),
    ("x > bool 1", "'bool' is not supported"),
    ("x > on(symbol) y", "'on' is not supported"),
    ("histogram_quantile(0.99, x) > 1", "function histogram_quantile() is not supported"),
    ("x[5m] > 1", "only allowed inside increase() or rate()"),
    ("1 > 0", "comparison between two scalars"),
    ("x % 2 > 0", "'%' is not supported"),
    ("x > ", "unexpected end"),
    ("x{a=b} > 1", "quoted string"),
])
def test_unsupported_promql_is_refused_naming_the_rule(tmp_path, expr, what):
    text = f"groups:\n  - name: g\n    rules:\n      - alert: Bad\n        expr: '{expr}'\n"
    with pytest.raises(a.AlertRuleError, match="rule 'Bad'") as info:
        rules_from(text, tmp_path)
    assert what in str(info.value)
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize("text,what", [
    ("groups: 3\n", "'groups' list"),
    ("groups:\n  - name: g\n    rules:\n      - record: r\n        expr: x\n", "recording rules"),
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n        for: 5 minutes\n",
     "not a Prometheus duration"),
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n        labels: {severity: page}\n",
     "severity 'page'"),
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n"
     "        annotations: {summary: '{{ $value | humanize }}'}\n", "templates may use only"),
    ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n        keep_firing_for: 1m\n",
     "unsupported keys"),
    (":\n  - [", "not valid YAML"),
])
def test_malformed_rules_files(tmp_path, text, what):
    with pytest.raises(a.AlertRuleError, match="rules.yml") as info:
        rules_from(text, tmp_path)
    assert what in str(info.value)


def test_parse_duration():
    assert a.parse_duration("0s") == 0
    assert a.parse_duration("90s") == 90
    assert a.parse_duration("1h30m") == 5400
    assert a.parse_duration("250ms") == 0.25
    for bad in ("", "5", "m5", "5m x"):
        with pytest.raises(ValueError):
            a.parse_duration(bad)


# ----------------------------------------------------------------- evaluation

RULES = """
groups:
  - name: g
    rules:
      - alert: Hot
        expr: temp > 10
        for: 2m
        labels: {severity: critical}
        annotations: {summary: "{{ $labels.symbol }} at {{ $value }} ({{ $labels.missing }})"}
      - alert: OverLimit
        expr: abs(pos) > 2 * limit
      - alert: Ratio
        expr: sum(increase(bad_total[5m])) / sum(increase(all_total[5m])) > 0.1
      - alert: Missing
        expr: absent(heartbeat{job="engine"})
"""


def test_for_duration_pending_then_firing_then_resolve(tmp_path):
    ev = a.AlertEvaluator(rules_from(RULES, tmp_path))
    hb = S(heartbeat=[({"job": "engine"}, 1)])
    hot = {**hb, **S(temp=[({"symbol": "AAPL"}, 11), ({"symbol": "MSFT"}, 3)])}
    assert ev.evaluate(hot, 0.0) == []
    assert [x.state for x in ev.alerts()] == ["pending"]
    assert ev.evaluate(hot, 60.0) == []
    (fire,) = ev.evaluate(hot, 120.0)                     # 2m pending -> fires
    assert fire.action == "trigger" and fire.alertname == "Hot" and fire.severity == "critical"
    assert fire.labels == {"symbol": "AAPL", "severity": "critical", "alertname": "Hot"}
    assert fire.annotations["summary"] == "AAPL at 11 (<no value>)"
    assert ev.evaluate(hot, 180.0) == []                   # still firing: nothing new
    (res,) = ev.evaluate({**hb, **S(temp=[({"symbol": "AAPL"}, 9)])}, 240.0)
    assert res.action == "resolve" and res.dedup_key == fire.dedup_key
    assert ev.alerts() == []


def test_pending_alert_that_clears_is_dropped_silently(tmp_path):
    ev = a.AlertEvaluator(rules_from(RULES, tmp_path))
    hb = S(heartbeat=[({"job": "engine"}, 1)])
    ev.evaluate({**hb, **S(temp=[({}, 50)])}, 0.0)
    assert ev.evaluate({**hb, **S(temp=[({}, 1)])}, 60.0) == []
    assert ev.alerts() == []


def test_vector_matching_abs_and_scalar_multiplication(tmp_path):
    ev = a.AlertEvaluator(rules_from(RULES, tmp_path))
    samples = {**S(heartbeat=[({"job": "engine"}, 1)]),
               **S(pos=[({"symbol": "A"}, -21), ({"symbol": "B"}, 19), ({"symbol": "C"}, 100)],
                   limit=[({"symbol": "A"}, 10), ({"symbol": "B"}, 10)])}      # C has no limit: no match
    events = ev.evaluate(samples, 0.0)
    assert [(e.alertname, e.labels.get("symbol"), e.value) for e in events] == [("OverLimit", "A", 21.0)]


def test_absent_fires_without_the_series_and_carries_equality_labels(tmp_path):
    ev = a.AlertEvaluator(rules_from(RULES, tmp_path))
    (e,) = ev.evaluate({}, 0.0)
    assert e.alertname == "Missing" and e.labels == {"job": "engine", "alertname": "Missing"}
    (r,) = ev.evaluate(S(heartbeat=[({"job": "engine"}, 1)]), 1.0)
    assert r.action == "resolve"


def test_increase_ratio_with_counter_reset_and_division_by_zero(tmp_path):
    ev = a.AlertEvaluator(rules_from(RULES, tmp_path))
    hb = S(heartbeat=[({"job": "engine"}, 1)])

    def at(t, bad, all_):
        return ev.evaluate({**hb, **S(bad_total=[({}, bad)], all_total=[({}, all_)])}, t)

    assert at(0, 0, 0) == []                          # one sample: no increase yet
    assert at(60, 0, 0) == []                         # 0/0 = NaN: no alert
    assert at(120, 5, 100) == []                      # 5/100 = 5 %
    (e,) = at(180, 30, 200)                           # 30/200 = 15 % > 10 %
    assert e.alertname == "Ratio" and e.value == pytest.approx(0.15)
    # a counter reset (process restart) is an increase, not a drop
    assert at(240, 2, 10) == []                       # bad 30->2 counts +2; all 200->10 counts +10: 32/210
    held = ev.alerts("firing")
    assert held and held[0].value == pytest.approx(32 / 210)


def test_extrapolated_rate_matches_prometheus_algorithm():
    # samples every 60 s from t=60 to 240 in a 300 s window ending at 240: start is 60 s away
    # (< 1.1 x 60 s), so it extrapolates to the window start; the counter's zero point
    # (first value 10, increase 30 over 180 s -> 60 s before the first sample) limits it too.
    pts = [(60.0, 10.0), (120.0, 20.0), (180.0, 30.0), (240.0, 40.0)]
    r = a.extrapolated_rate(pts, -60.0, 240.0, 300.0, is_rate=False)
    assert r == pytest.approx(30.0 * (180 + 60) / 180)
    assert a.extrapolated_rate(pts, -60.0, 240.0, 300.0, is_rate=True) == pytest.approx(r / 300)
    assert a.extrapolated_rate(pts[:1], 0, 240, 300, False) is None
    # far from the window start: extrapolate by half an interval only
    pts2 = [(200.0, 0.0), (260.0, 6.0), (320.0, 12.0)]
    assert a.extrapolated_rate(pts2, 20.0, 320.0, 300.0, False) == pytest.approx(12.0 * (120 + 0) / 120)


def test_division_semantics():
    assert math.isnan(a._div(0.0, 0.0))
    assert a._div(1.0, 0.0) == math.inf
    assert a._div(-1.0, 0.0) == -math.inf


def test_render_template():
    assert a.render_template("{{ $labels.symbol }} {{$value}}", {"symbol": "X"}, 1e6) == "X 1e+06"


# ----------------------------------------------------------------- delivery

class Receiver:
    """A PagerDuty-like HTTP endpoint on 127.0.0.1 port 0; answers from a script."""

    def __init__(self, script=()):
        self.bodies: list[dict] = []
        self.script = list(script)          # statuses to answer first; then 202
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.bodies.append({"path": self.path, "ctype": self.headers["Content-Type"],
                                     "json": orjson.loads(body)})
                status = outer.script.pop(0) if outer.script else 202
                reply = b'{"status":"success","message":"Event processed"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v2/enqueue"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    rcv = Receiver()
    yield rcv
    rcv.close()


def _event(action="trigger"):
    labels = {"alertname": "EngineKillSwitchTripped", "severity": "critical"}
    return a.AlertEvent(action, "EngineKillSwitchTripped", labels, {"summary": "kill switch tripped"}, 1.0,
                        "critical", "engine-risk", a.dedup_key(labels), 1714571112.5)


def test_trigger_and_resolve_in_pagerduty_v2_format(receiver):
    n = a.PagerDutyNotifier("R0UTINGKEY123", receiver.url, source="host/engine", backoff_s=0.01)
    n.send(_event("trigger"))
    n.send(_event("resolve"))
    assert n.flush(10)
    n.close()
    trig, res = (b["json"] for b in receiver.bodies)
    assert receiver.bodies[0]["ctype"] == "application/json"
    assert trig["routing_key"] == "R0UTINGKEY123" and trig["event_action"] == "trigger"
    assert trig["dedup_key"] == res["dedup_key"] and trig["dedup_key"].startswith("engine/EngineKillSwitchTripped/")
    p = trig["payload"]
    assert p["summary"] == "kill switch tripped" and p["severity"] == "critical" and p["source"] == "host/engine"
    assert p["timestamp"] == "2024-05-01T13:45:12.500Z"
    assert p["class"] == "EngineKillSwitchTripped" and p["group"] == "engine-risk"
    assert p["custom_details"]["labels"]["alertname"] == "EngineKillSwitchTripped"
    assert res == {"routing_key": "R0UTINGKEY123", "event_action": "resolve", "dedup_key": trig["dedup_key"]}
    assert n.stats["sent"] == 2 and n.stats["failed"] == 0


def test_retries_5xx_and_429_but_not_400():
    rcv = Receiver(script=[500, 429, 202, 400])
    try:
        n = a.PagerDutyNotifier("R0UTINGKEY123", rcv.url, backoff_s=0.001, max_attempts=5)
        n.send(_event("trigger"))               # 500, 429, then 202
        assert n.flush(10)
        n.send(_event("trigger"))               # 400: a bad request is not retried
        assert n.flush(10)
        n.close()
    finally:
        rcv.close()
    assert len(rcv.bodies) == 4
    assert n.stats == {"sent": 1, "failed": 1, "retried": 2, "dropped": 0}


def test_unreachable_webhook_gives_up_after_max_attempts(receiver):
    url = receiver.url
    receiver.close()                            # nothing listens there any more
    n = a.PagerDutyNotifier("R0UTINGKEY123", url, backoff_s=0.001, max_attempts=3, timeout_s=1)
    n.send(_event())
    assert n.flush(20)
    n.close()
    assert n.stats["failed"] == 1 and n.stats["retried"] == 2


def test_routing_key_from_env_is_required_and_never_logged(monkeypatch, receiver, caplog):
    monkeypatch.delenv(a.ROUTING_KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=a.ROUTING_KEY_ENV):
        a.PagerDutyNotifier.from_env(url=receiver.url)
    monkeypatch.setenv(a.ROUTING_KEY_ENV, "env-routing-key-42")
    monkeypatch.setenv(a.WEBHOOK_URL_ENV, receiver.url)
    n = a.PagerDutyNotifier.from_env()
    assert n.url == receiver.url
    n.close()
    assert logs.redact_text("key is env-routing-key-42") == f"key is {logs.REDACTED}"
    with pytest.raises(ConfigError, match="http"):
        a.PagerDutyNotifier("k" * 10, "ftp://x")


def test_alerting_end_to_end_from_collector_to_webhook(receiver, tmp_path):
    """A source reports a tripped kill switch; after the collector's pass the in-process
    evaluator fires the repository rule and the receiver gets the PagerDuty trigger;
    when it clears, the resolve."""
    em = EngineMetrics(process_collector=False)
    col = MetricsCollector(em, system=False)
    state = {"tripped": 1, "pnl": 0.0}
    col.add_source("risk", lambda: {"engine_kill_switch_tripped": state["tripped"],
                                    "engine_daily_pnl": state["pnl"], "engine_daily_pnl_limit": -1000.0})
    notifier = a.PagerDutyNotifier("R0UTINGKEY123", receiver.url, backoff_s=0.01)
    alerting = a.Alerting(a.load_rules(), notifier, metrics=em)
    col.add_listener(alerting)
    import asyncio
    asyncio.run(col.run_once(now=1000.0))
    state["tripped"] = 0
    asyncio.run(col.run_once(now=1001.0))
    assert notifier.flush(10)
    asyncio.run(col.run_once(now=1002.0))            # the pass after delivery counts it
    notifier.close()
    actions = [(b["json"]["event_action"], b["json"].get("payload", {}).get("class")) for b in receiver.bodies]
    assert actions == [("trigger", "EngineKillSwitchTripped"), ("resolve", None)]
    firing = em.samples()["engine_alerts_firing"]
    assert firing[(("alertname", "EngineKillSwitchTripped"), ("severity", "critical"))] == 0.0
    assert em.value("engine_alert_notifications_total", "sent") == 2
    assert em.value("engine_alert_notifications_total", "failed") == 0


def test_alerting_without_notifier_logs(tmp_path, caplog):
    alerting = a.Alerting(rules_from(RULES, tmp_path))
    with caplog.at_level(logging.WARNING, logger="engine.alerts"):
        alerting({}, 0.0)
    assert any("Missing" in r.getMessage() for r in caplog.records)
    assert alerting.events[-1].alertname == "Missing"
