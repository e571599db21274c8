"""In-process alerting: the Prometheus rules of deploy/prometheus/alerts.yml evaluated
over the collector's current values, with ``for:`` durations, and delivered to a
webhook in the PagerDuty Events API v2 format.

For a deployment with Prometheus the same YAML is loaded by Prometheus itself and
this module is not needed; without Prometheus::

    rules = load_rules()                                   # deploy/prometheus/alerts.yml
    notifier = PagerDutyNotifier.from_env()                # ENGINE_PAGERDUTY_ROUTING_KEY
    alerting = Alerting(rules, notifier, metrics=collector.metrics)
    collector.add_listener(alerting)                       # evaluated after every collection

**The expression subset.** `load_rules` parses every ``expr`` into a small PromQL
subset and refuses (`AlertRuleError`, naming the rule) anything outside it, so one
file cannot mean different things in Prometheus and here:

* instant selectors with label matchers (``=``, ``!=``, ``=~``, ``!~``), numbers;
* ``+ - * /``, comparisons ``> < >= <= == !=`` (filtering, no ``bool``), ``and``;
  vector/vector operations match one-to-one on identical label sets (no ``on``/
  ``ignoring``/``group_*``), as Prometheus does by default;
* ``abs(v)``, ``sum(v)``/``min(v)``/``max(v)``/``count(v)`` (no ``by``/``without``),
  ``absent(selector)``, ``increase(sel[d])``/``rate(sel[d])`` with Prometheus's own
  extrapolation (``extrapolatedRate`` of Prometheus 2.x), over the values this
  evaluator has seen at each evaluation;
* annotations use only ``{{ $labels.NAME }}`` and ``{{ $value }}`` (``$value`` printed
  as Go prints a float64).

tests/test_promtool.py proves the agreement: it runs scenarios through this evaluator,
writes what it fired as the expectations of a ``promtool test rules`` file and has
promtool check them against Prometheus's engine.

**Semantics** (those of a Prometheus rule group evaluated every collection interval):
an element of the result vector makes an alert *pending*; it *fires* once it has been
pending for ``for:`` (at once for ``for: 0s``) and sends a ``trigger`` event; when it
leaves the result a firing alert sends a ``resolve`` event (a pending one is dropped
silently). Alert labels are the element's labels plus the rule's labels plus
``alertname``; the PagerDuty ``dedup_key`` is derived from them, so the trigger and
the resolve of one alert share it.

**Delivery.** `PagerDutyNotifier` posts from a background thread (never on the event
loop), retries connection errors, 429 and 5xx with exponential backoff, and counts
what it sent and what it gave up on. The routing key comes from the configuration or
``ENGINE_PAGERDUTY_ROUTING_KEY``; it is registered with `engine.logs` as a secret so it
is never logged.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import math
import os
import queue
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from engine.errors import ConfigError
from engine.metrics import EngineMetrics, go_float_string

log = logging.getLogger("engine.alerts")

#: The rules file shipped in the repository.
DEFAULT_RULES_PATH = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
#: PagerDuty Events API v2 endpoint (override with ENGINE_ALERT_WEBHOOK_URL).
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
ROUTING_KEY_ENV = "ENGINE_PAGERDUTY_ROUTING_KEY"
WEBHOOK_URL_ENV = "ENGINE_ALERT_WEBHOOK_URL"
PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")


class AlertRuleError(ConfigError):
    """A rules file is malformed or uses PromQL outside the supported subset; the
    message names the file, the rule and what was wrong."""


# ===================================================================== expressions

SeriesKey = tuple[tuple[str, str], ...]          # sorted (label, value) pairs, no __name__
Vector = dict[SeriesKey, float]
Samples = Mapping[str, Mapping[SeriesKey, float]]

_DURATION_RE = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str) -> float:
    """A Prometheus duration (``90s``, ``5m``, ``1h30m``, ``0s``) in seconds."""
    text = str(text).strip()
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a Prometheus duration: {text!r} (e.g. 30s, 5m, 1h30m)")
    return total


_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<dur>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![a-zA-Z_0-9]))
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![a-zA-Z_0-9.]))
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){}\[\],])
""", re.VERBOSE)

_CMP_OPS = {">", "<", ">=", "<=", "==", "!="}
_ARITH_OPS = {"+", "-", "*", "/"}
_AGGREGATIONS = {"sum", "min", "max", "count"}
_RANGE_FUNCS = {"increase", "rate"}
_UNSUPPORTED_WORDS = {"or", "unless", "bool", "on", "ignoring", "group_left", "group_right",
                      "by", "without", "offset"}


def _tokenize(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise ValueError(f"unexpected character {text[pos]!r} at offset {pos}")
        kind = m.lastgroup
        if kind != "ws":
            out.append((kind, m.group()))
        pos = m.end()
    return out


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Sel:
    name: str
    matchers: tuple[tuple[str, str, str], ...]      # (label, op, value)


@dataclass(frozen=True)
class RangeCall:
    func: str                                        # increase | rate
    sel: Sel
    range_s: float


@dataclass(frozen=True)
class Call:
    func: str                                        # abs | sum | min | max | count | absent
    arg: Any


@dataclass(frozen=True)
class Bin:
    op: str
    lhs: Any
    rhs: Any


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ValueError("unexpected end of expression")
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        tok = self.take()
        if tok[1] != value:
            raise ValueError(f"expected {value!r}, got {tok[1]!r}")

    def parse(self) -> Any:
        node = self.expr(0)
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()[1]!r}")
        return node

    def _binop(self) -> tuple[str, int] | None:
        tok = self.peek()
        if tok is None:
            return None
        kind, v = tok
        if kind == "ident" and v in ("and",):
            return v, 1
        if kind == "ident" and v in _UNSUPPORTED_WORDS:
            raise ValueError(f"{v!r} is not supported by the in-process evaluator")
        if kind == "op":
            if v in _CMP_OPS:
                return v, 2
            if v in ("+", "-"):
                return v, 3
            if v in ("*", "/"):
                return v, 4
            if v in ("%", "^"):
                raise ValueError(f"operator {v!r} is not supported by the in-process evaluator")
        return None

    def expr(self, min_prec: int) -> Any:
        lhs = self.unary()
        while True:
            op = self._binop()
            if op is None or op[1] < min_prec:
                return lhs
            self.take()
            nxt = self.peek()
            if nxt is not None and nxt[0] == "ident" and nxt[1] in _UNSUPPORTED_WORDS:
                raise ValueError(f"{nxt[1]!r} is not supported by the in-process evaluator")
            rhs = self.expr(op[1] + 1)                    # left associative
            lhs = Bin(op[0], lhs, rhs)

    def unary(self) -> Any:
        tok = self.peek()
        if tok is not None and tok[1] in ("-", "+") and tok[0] == "op":
            self.take()
            inner = self.unary()
            if tok[1] == "+":
                return inner
            if isinstance(inner, Num):
                return Num(-inner.value)
            return Bin("*", Num(-1.0), inner)
        return self.primary()

    def primary(self) -> Any:
        kind, v = self.take()
        if kind == "num":
            return Num(float(v))
        if kind == "op" and v == "(":
            node = self.expr(0)
            self.expect(")")
            return node
        if kind == "ident":
            if v in _UNSUPPORTED_WORDS or v in ("and",):
                raise ValueError(f"unexpected {v!r}")
            nxt = self.peek()
            if nxt is not None and nxt[1] == "(":
                return self.call(v)
            sel = self.selector(v)
            nxt = self.peek()
            if nxt is not None and nxt[1] == "[":
                raise ValueError(f"a range selector {v}[...] is only allowed inside increase() or rate()")
            return sel
        raise ValueError(f"unexpected {v!r}")

    def selector(self, name: str) -> Sel:
        matchers: list[tuple[str, str, str]] = []
        nxt = self.peek()
        if nxt is not None and nxt[1] == "{":
            self.take()
            while True:
                tok = self.take()
                if tok[1] == "}":
                    break
                if tok[0] != "ident":
                    raise ValueError(f"expected a label name in {name}{{...}}, got {tok[1]!r}")
                op = self.take()[1]
                if op not in ("=", "!=", "=~", "!~"):
                    raise ValueError(f"bad label matcher operator {op!r}")
                sval = self.take()
                if sval[0] != "str":
                    raise ValueError(f"label value must be a quoted string, got {sval[1]!r}")
                raw = sval[1][1:-1]
                value = bytes(raw, "utf-8").decode("unicode_escape") if "\\" in raw else raw
                if op in ("=~", "!~"):
                    re.compile(value)
                matchers.append((tok[1], op, value))
                sep = self.take()[1]
                if sep == "}":
                    break
                if sep != ",":
                    raise ValueError(f"expected ',' or '}}' in {name}{{...}}, got {sep!r}")
        return Sel(name, tuple(matchers))

    def call(self, func: str) -> Any:
        self.expect("(")
        if func in _RANGE_FUNCS:
            kind, name = self.take()
            if kind != "ident":
                raise ValueError(f"{func}() takes a range selector, got {name!r}")
            sel = self.selector(name)
            self.expect("[")
            kind, d = self.take()
            if kind not in ("dur", "num"):
                raise ValueError(f"{func}(): bad range {d!r}")
            self.expect("]")
            self.expect(")")
            return RangeCall(func, sel, parse_duration(d))
        if func in _AGGREGATIONS or func in ("abs", "absent"):
            arg = self.expr(0)
            self.expect(")")
            nxt = self.peek()
            if nxt is not None and nxt[0] == "ident" and nxt[1] in ("by", "without"):
                raise ValueError(f"{func}(...) {nxt[1]} is not supported by the in-process evaluator")
            if func == "absent" and not isinstance(arg, Sel):
                raise ValueError("absent() takes a plain selector here")
            return Call(func, arg)
        raise ValueError(f"function {func}() is not supported by the in-process evaluator")


def _type_of(node: Any) -> str:
    """Static type check: 'scalar' or 'vector'; raises on a scalar comparison or a
    scalar `and` (which Prometheus rejects too)."""
    if isinstance(node, Num):
        return "scalar"
    if isinstance(node, (Sel, RangeCall)):
        return "vector"
    if isinstance(node, Call):
        if _type_of(node.arg) != "vector":
            raise ValueError(f"{node.func}() needs an instant vector argument")
        return "vector"
    if isinstance(node, Bin):
        lt, rt = _type_of(node.lhs), _type_of(node.rhs)
        if node.op == "and":
            if lt != "vector" or rt != "vector":
                raise ValueError("'and' needs vectors on both sides")
            return "vector"
        if node.op in _CMP_OPS and lt == rt == "scalar":
            raise ValueError("comparison between two scalars needs 'bool' (not supported)")
        return "scalar" if lt == rt == "scalar" else "vector"
    raise TypeError(node)


def parse_expr(text: str) -> Any:
    """Parse an expression of the supported subset; `ValueError` names what is wrong."""
    node = _Parser(text).parse()
    _type_of(node)
    return node


def _range_selectors(node: Any) -> Iterable[RangeCall]:
    if isinstance(node, RangeCall):
        yield node
    elif isinstance(node, Call):
        yield from _range_selectors(node.arg)
    elif isinstance(node, Bin):
        yield from _range_selectors(node.lhs)
        yield from _range_selectors(node.rhs)


def _div(a: float, b: float) -> float:
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _arith(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return _div(a, b)


def _compare(op: str, a: float, b: float) -> bool:
    if op == ">":
        return a > b
    if op == "<":
        return a < b
    if op == ">=":
        return a >= b
    if op == "<=":
        return a <= b
    if op == "==":
        return a == b
    return a != b


def _match(series: SeriesKey, matchers: tuple[tuple[str, str, str], ...]) -> bool:
    labels = dict(series)
    for label, op, value in matchers:
        have = labels.get(label, "")
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
        if op == "=~" and re.fullmatch(value, have) is None:
            return False
        if op == "!~" and re.fullmatch(value, have) is not None:
            return False
    return True


def extrapolated_rate(points: list[tuple[float, float]], range_start: float, range_end: float,
                      range_s: float, is_rate: bool) -> float | None:
    """Prometheus 2.x ``extrapolatedRate`` for a counter: ``points`` are (t seconds,
    value) inside [range_start, range_end]; None with fewer than two points."""
    if len(points) < 2:
        return None
    first_t, first_v = points[0]
    last_t, last_v = points[-1]
    result = last_v - first_v
    prev = 0.0
    for _, v in points:                       # counter resets
        if v < prev:
            result += prev
        prev = v
    to_start = first_t - range_start
    to_end = range_end - last_t
    sampled = last_t - first_t
    avg = sampled / (len(points) - 1)
    if result > 0 and first_v >= 0:
        to_zero = sampled * (first_v / result)
        if to_zero < to_start:
            to_start = to_zero
    threshold = avg * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else avg / 2
    interval += to_end if to_end < threshold else avg / 2
    result = result * (interval / sampled)
    if is_rate:
        result /= range_s
    return result


class _History:
    """Per-series (t, value) history of the metrics that range functions read."""

    def __init__(self, ranges: Mapping[str, float]) -> None:
        self.keep_s = dict(ranges)                       # metric name -> longest range
        self.series: dict[str, dict[SeriesKey, collections.deque[tuple[float, float]]]] = {}

    def observe(self, samples: Samples, now: float) -> None:
        for name, keep in self.keep_s.items():
            per = self.series.setdefault(name, {})
            for key, v in samples.get(name, {}).items():
                dq = per.setdefault(key, collections.deque())
                if dq and dq[-1][0] >= now:               # same instant evaluated twice
                    dq[-1] = (now, float(v))
                else:
                    dq.append((now, float(v)))
            for key in list(per):
                dq = per[key]
                while dq and dq[0][0] < now - keep:
                    dq.popleft()
                if not dq:
                    del per[key]

    def window(self, name: str, start: float, end: float) -> dict[SeriesKey, list[tuple[float, float]]]:
        out = {}
        for key, dq in self.series.get(name, {}).items():
            pts = [(t, v) for t, v in dq if start <= t <= end]
            if pts:
                out[key] = pts
        return out


def _eval(node: Any, samples: Samples, history: _History, now: float) -> float | Vector:
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Sel):
        return {k: float(v) for k, v in samples.get(node.name, {}).items() if _match(k, node.matchers)}
    if isinstance(node, RangeCall):
        out: Vector = {}
        start = now - node.range_s
        for key, pts in history.window(node.sel.name, start, now).items():
            if not _match(key, node.sel.matchers):
                continue
            r = extrapolated_rate(pts, start, now, node.range_s, node.func == "rate")
            if r is not None:
                out[key] = r
        return out
    if isinstance(node, Call):
        if node.func == "absent":
            vec = _eval(node.arg, samples, history, now)
            if vec:
                return {}
            labels = tuple(sorted((lbl, val) for lbl, op, val in node.arg.matchers if op == "="))
            return {labels: 1.0}
        vec = _eval(node.arg, samples, history, now)
        assert isinstance(vec, dict)
        if node.func == "abs":
            return {k: abs(v) for k, v in vec.items()}
        if not vec:
            return {}
        vals = list(vec.values())
        if node.func == "sum":
            return {(): math.fsum(vals)}
        if node.func == "count":
            return {(): float(len(vals))}
        if node.func == "min":
            return {(): min(vals)}
        return {(): max(vals)}
    assert isinstance(node, Bin)
    lhs = _eval(node.lhs, samples, history, now)
    rhs = _eval(node.rhs, samples, history, now)
    if node.op == "and":
        return {k: v for k, v in lhs.items() if k in rhs}
    if node.op in _CMP_OPS:
        if isinstance(lhs, dict) and isinstance(rhs, dict):
            return {k: v for k, v in lhs.items() if k in rhs and _compare(node.op, v, rhs[k])}
        if isinstance(lhs, dict):
            return {k: v for k, v in lhs.items() if _compare(node.op, v, rhs)}
        return {k: v for k, v in rhs.items() if _compare(node.op, lhs, v)}
    if isinstance(lhs, dict) and isinstance(rhs, dict):
        return {k: _arith(node.op, v, rhs[k]) for k, v in lhs.items() if k in rhs}
    if isinstance(lhs, dict):
        return {k: _arith(node.op, v, rhs) for k, v in lhs.items()}
    if isinstance(rhs, dict):
        return {k: _arith(node.op, lhs, v) for k, v in rhs.items()}
    return _arith(node.op, lhs, rhs)


# ===================================================================== rules

_TEMPLATE_RE = re.compile(r"\{\{\s*(?:\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)|(\$value))\s*\}\}")


def _check_template(text: str) -> None:
    rest = _TEMPLATE_RE.sub("", text)
    if "{{" in rest or "}}" in rest:
        raise ValueError("templates may use only {{ $labels.NAME }} and {{ $value }}")


def render_template(text: str, labels: Mapping[str, str], value: float) -> str:
    """Expand ``{{ $labels.NAME }}`` and ``{{ $value }}`` as Prometheus does."""
    def sub(m: re.Match[str]) -> str:
        if m.group(2):
            return go_float_string(value)
        return labels.get(m.group(1), "<no value>")
    return _TEMPLATE_RE.sub(sub, text)


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule of a rules file."""
    name: str
    expr: str
    for_s: float
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    group: str
    node: Any = field(repr=False, compare=False)

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "warning")


def load_rules(path: str | os.PathLike[str] | None = None) -> list[AlertRule]:
    """Load the alerting rules of a Prometheus rules file (default: the repository's
    deploy/prometheus/alerts.yml). Raises `AlertRuleError` naming the file and rule."""
    import yaml

    p = Path(path) if path is not None else DEFAULT_RULES_PATH
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise AlertRuleError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise AlertRuleError(f"{p}: not valid YAML: {exc}") from exc
    return rules_from_dict(doc, source=str(p))


def rules_from_dict(doc: Any, source: str = "<rules>") -> list[AlertRule]:
    """The rules of an already parsed rules document (see `load_rules`)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise AlertRuleError(f"{source}: expected a mapping with a 'groups' list")
    rules: list[AlertRule] = []
    names: set[tuple[str, str]] = set()
    for gi, group in enumerate(doc["groups"]):
        if not isinstance(group, dict) or not isinstance(group.get("name"), str):
            raise AlertRuleError(f"{source}: group #{gi + 1} needs a 'name'")
        gname = group["name"]
        for ri, rule in enumerate(group.get("rules") or []):
            where = f"{source}: group {gname!r} rule #{ri + 1}"
            if not isinstance(rule, dict):
                raise AlertRuleError(f"{where}: expected a mapping")
            if "record" in rule:
                raise AlertRuleError(f"{where}: recording rules are not supported in process "
                                     f"(alerts must not depend on them)")
            name = rule.get("alert")
            if not isinstance(name, str) or not name:
                raise AlertRuleError(f"{where}: missing 'alert' name")
            where = f"{source}: rule {name!r}"
            unknown = set(rule) - {"alert", "expr", "for", "labels", "annotations"}
            if unknown:
                raise AlertRuleError(f"{where}: unsupported keys {sorted(unknown)}")
            expr = str(rule.get("expr", "")).strip()
            if not expr:
                raise AlertRuleError(f"{where}: missing 'expr'")
            try:
                node = parse_expr(expr)
                if _type_of(node) != "vector":
                    raise ValueError("an alert expression must give a vector")
                for_s = parse_duration(rule.get("for", "0s"))
                labels = {str(k): str(v) for k, v in (rule.get("labels") or {}).items()}
                annotations = {str(k): str(v) for k, v in (rule.get("annotations") or {}).items()}
                for text in [*labels.values(), *annotations.values()]:
                    _check_template(text)
                if any("{{" in v for v in labels.values()):
                    raise ValueError("templated labels are not supported")
            except ValueError as exc:
                raise AlertRuleError(f"{where}: {exc} (expr: {expr})") from None
            sev = labels.get("severity", "warning")
            if sev not in PAGERDUTY_SEVERITIES:
                raise AlertRuleError(f"{where}: severity {sev!r} must be one of {', '.join(PAGERDUTY_SEVERITIES)}")
            if (gname, name) in names:
                raise AlertRuleError(f"{where}: defined twice in group {gname!r}")
            names.add((gname, name))
            rules.append(AlertRule(name, expr, for_s, labels, annotations, gname, node))
    return rules


# ===================================================================== evaluation

@dataclass
class ActiveAlert:
    """An alert the evaluator holds: pending, then firing."""
    rule: AlertRule
    labels: dict[str, str]
    state: str                       # "pending" | "firing"
    active_at: float
    value: float
    annotations: dict[str, str]
    fired_at: float | None = None


@dataclass(frozen=True)
class AlertEvent:
    """A state change to notify: ``action`` is ``trigger`` or ``resolve``."""
    action: str
    alertname: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    value: float
    severity: str
    group: str
    dedup_key: str
    at: float                        # epoch seconds


def dedup_key(labels: Mapping[str, str], prefix: str = "engine") -> str:
    """A stable key for one alert (its label set); trigger and resolve share it."""
    canon = orjson.dumps(dict(sorted(labels.items())))
    return f"{prefix}/{labels.get('alertname', '?')}/{hashlib.sha256(canon).hexdigest()[:24]}"


class AlertEvaluator:
    """Evaluates rules over metric samples (``EngineMetrics.samples()`` shape) at
    successive times, with ``for:`` durations; returns the trigger/resolve events."""

    def __init__(self, rules: Iterable[AlertRule], *, dedup_prefix: str = "engine") -> None:
        self.rules = list(rules)
        self.dedup_prefix = dedup_prefix
        ranges: dict[str, float] = {}
        for r in self.rules:
            for rc in _range_selectors(r.node):
                ranges[rc.sel.name] = max(ranges.get(rc.sel.name, 0.0), rc.range_s)
        self._history = _History(ranges)
        self._active: dict[tuple[str, str, SeriesKey], ActiveAlert] = {}

    def evaluate(self, samples: Samples, now: float) -> list[AlertEvent]:
        """One evaluation at ``now`` (epoch seconds) over the current samples."""
        self._history.observe(samples, now)
        events: list[AlertEvent] = []
        for rule in self.rules:
            result = _eval(rule.node, samples, self._history, now)
            assert isinstance(result, dict)
            seen: set[tuple[str, str, SeriesKey]] = set()
            for series, value in result.items():
                labels = dict(series)
                labels.update(rule.labels)
                labels["alertname"] = rule.name
                key = (rule.group, rule.name, tuple(sorted(labels.items())))
                seen.add(key)
                annotations = {k: render_template(v, labels, value) for k, v in rule.annotations.items()}
                alert = self._active.get(key)
                if alert is None:
                    alert = ActiveAlert(rule, labels, "pending", now, value, annotations)
                    self._active[key] = alert
                alert.value = value
                alert.annotations = annotations
                if alert.state == "pending" and now - alert.active_at >= rule.for_s:
                    alert.state = "firing"
                    alert.fired_at = now
                    events.append(self._event("trigger", alert, now))
            for key in [k for k in self._active if k[0] == rule.group and k[1] == rule.name and k not in seen]:
                alert = self._active.pop(key)
                if alert.state == "firing":
                    events.append(self._event("resolve", alert, now))
        return events

    def _event(self, action: str, alert: ActiveAlert, now: float) -> AlertEvent:
        return AlertEvent(action, alert.rule.name, dict(alert.labels), dict(alert.annotations), alert.value,
                          alert.rule.severity, alert.rule.group, dedup_key(alert.labels, self.dedup_prefix), now)

    def alerts(self, state: str | None = None) -> list[ActiveAlert]:
        """The held alerts (``state``: "pending", "firing" or None for both)."""
        return [a for a in self._active.values() if state is None or a.state == state]


# ===================================================================== delivery

def pagerduty_body(event: AlertEvent, routing_key: str, *, source: str, component: str = "engine") -> dict:
    """The PagerDuty Events API v2 request body of an event."""
    if event.action == "resolve":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": event.dedup_key}
    summary = event.annotations.get("summary") or f"{event.alertname} firing"
    details = {"labels": dict(event.labels), "annotations": dict(event.annotations),
               "value": go_float_string(event.value)}
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": event.dedup_key,
        "payload": {
            "summary": summary[:1024],
            "source": source,
            "severity": event.severity if event.severity in PAGERDUTY_SEVERITIES else "warning",
            "timestamp": datetime.fromtimestamp(event.at, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "component": component,
            "group": event.group,
            "class": event.alertname,
            "custom_details": details,
        },
    }


class PagerDutyNotifier:
    """Posts alert events to a PagerDuty Events API v2 endpoint (or any webhook that
    speaks it) from a background thread.

    ``send(event)`` only enqueues. Delivery retries connection errors, HTTP 429 and
    5xx up to ``max_attempts`` times with exponential backoff from ``backoff_s``; other
    4xx answers are not retried (the request is wrong). ``stats`` counts ``sent``,
    ``failed`` and ``retried``. ``close()`` delivers what is queued (up to
    ``timeout``) and stops the thread.
    """

    def __init__(self, routing_key: str, url: str = PAGERDUTY_EVENTS_URL, *, source: str | None = None,
                 timeout_s: float = 5.0, max_attempts: int = 5, backoff_s: float = 0.5,
                 max_queue: int = 10_000) -> None:
        if not routing_key:
            raise ConfigError("alerting: the PagerDuty routing key is empty "
                              f"(set it in the configuration or {ROUTING_KEY_ENV})")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"alerting: webhook url must be http(s)://..., got {url!r}")
        if max_attempts < 1:
            raise ConfigError(f"alerting: max_attempts must be >= 1, got {max_attempts}")
        from engine.logs import register_secret
        register_secret(routing_key)
        self._routing_key = routing_key
        self.url = url
        self.source = source or f"{socket.gethostname()}/engine"
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.stats = {"sent": 0, "failed": 0, "retried": 0, "dropped": 0}
        self._queue: queue.Queue[AlertEvent | None] = queue.Queue(maxsize=max_queue)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-notifier", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, routing_key: str | None = None, url: str | None = None, **kw: Any) -> PagerDutyNotifier:
        """Routing key and URL from arguments, else ``ENGINE_PAGERDUTY_ROUTING_KEY`` and
        ``ENGINE_ALERT_WEBHOOK_URL`` (default: PagerDuty's endpoint)."""
        key = routing_key or os.environ.get(ROUTING_KEY_ENV, "")
        return cls(key, url or os.environ.get(WEBHOOK_URL_ENV) or PAGERDUTY_EVENTS_URL, **kw)

    def send(self, event: AlertEvent) -> None:
        """Queue one event for delivery (never blocks; a full queue drops and counts)."""
        if self._closed.is_set():
            raise RuntimeError("PagerDutyNotifier is closed")
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.stats["dropped"] += 1
            log.error("alert queue full: dropped %s %s", event.action, event.alertname)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event has been delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 10.0) -> None:
        if self._closed.is_set():
            return
        self.flush(timeout)
        self._closed.set()
        self._queue.put(None)
        self._thread.join(timeout)

    def _post(self, body: bytes) -> int:
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "trading-engine-alerts/1"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:   # noqa: S310 (http(s) only)
                resp.read()
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def _deliver(self, event: AlertEvent) -> None:
        body = orjson.dumps(pagerduty_body(event, self._routing_key, source=self.source))
        delay = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                status = self._post(body)
                err = None
            except (OSError, urllib.error.URLError) as exc:
                status, err = 0, exc
            if 200 <= status < 300:
                self.stats["sent"] += 1
                return
            retryable = status == 0 or status == 429 or status >= 500
            if not retryable or attempt == self.max_attempts:
                self.stats["failed"] += 1
                log.error("alert %s %s not delivered to %s: %s", event.action, event.alertname, self.url,
                          f"HTTP {status}" if status else f"{type(err).__name__}: {err}")
                return
            self.stats["retried"] += 1
            if self._closed.wait(delay):
                delay = 0.0                         # closing: no more sleeping, keep trying
            delay = min(delay * 2, 30.0)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                self._deliver(event)
            except Exception:
                log.exception("alert notifier failed")
            finally:
                self._queue.task_done()


class Alerting:
    """Ties the evaluator to the metrics collector and a notifier. Register an instance
    with ``MetricsCollector.add_listener``; after every collection it evaluates the
    rules, sends the events, and writes ``engine_alerts_firing{alertname,severity}``
    and ``engine_alert_notifications_total{result}`` into ``metrics``."""

    def __init__(self, rules: Iterable[AlertRule], notifier: Any = None, *,
                 metrics: EngineMetrics | None = None, dedup_prefix: str = "engine") -> None:
        self.evaluator = AlertEvaluator(rules, dedup_prefix=dedup_prefix)
        self.notifier = notifier
        self.metrics = metrics
        self.events: collections.deque[AlertEvent] = collections.deque(maxlen=1000)

    def __call__(self, samples: Samples, now: float) -> list[AlertEvent]:
        events = self.evaluator.evaluate(samples, now)
        for ev in events:
            self.events.append(ev)
            (log.warning if ev.action == "trigger" else log.info)(
                "alert %s %s %s", ev.action, ev.alertname, ev.annotations.get("summary", ""))
            if self.notifier is not None:
                self.notifier.send(ev)
        if self.metrics is not None:
            firing: dict[tuple[str, str], float] = {}
            for r in self.evaluator.rules:                       # zeros too: a series per rule
                firing.setdefault((r.name, r.severity), 0.0)
            for a in self.evaluator.alerts("firing"):
                firing[(a.rule.name, a.rule.severity)] += 1.0
            values: dict[str, Any] = {"engine_alerts_firing": firing}
            stats = getattr(self.notifier, "stats", None)
            if stats is not None:
                values["engine_alert_notifications_total"] = {"sent": stats["sent"], "failed": stats["failed"]}
            self.metrics.update(values)
        return events
