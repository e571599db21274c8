"""Stage reports: a self-contained HTML page (plots embedded as base64 PNG), one PNG per
plot beside it, and the same numbers as plain-text tables for the terminal.

Plots: equity curve and drawdown of the latest run of every stage, the distribution of
trade P&L, the slippage of every paired order of the latest shadow run, and the paper
equity over the backtest of the same period. A plot without data (no shadow run yet, say)
is still written, saying so, so the set of files is always the same.

matplotlib draws with the Agg canvas directly (no pyplot, no global backend switch).
"""
from __future__ import annotations

import base64
import html
import io
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from engine.analytics import drawdown_series
from engine.errors import EngineError
from engine.evidence import STAGES, Evidence, EvidenceStore, LedgerEntry, StageRun
from engine.promotion import PromotionCriteria, derive_stage_state

__all__ = [
    "PLOTS", "ReportFiles", "latest_runs", "format_stage_table", "format_comparison_table",
    "format_ledger_table", "format_text_report", "render_plots", "render_html", "write_report",
    "report_main",
]

# file stem -> title
PLOTS = {
    "equity": "Equity curve (latest run of each stage, normalised to 1 at its start)",
    "drawdown": "Drawdown (fall from the running peak)",
    "pnl_distribution": "Trade P&L distribution",
    "shadow_slippage": "Shadow: real vs simulated fill price per order",
    "paper_vs_backtest": "Paper vs backtest over the same period",
}

_COLOURS = {"backtest": "#1f77b4", "paper": "#ff7f0e", "shadow": "#2ca02c", "small": "#d62728",
            "live": "#9467bd"}


@dataclass(frozen=True, slots=True)
class ReportFiles:
    html: Path
    text: Path
    pngs: dict[str, Path]


# --------------------------------------------------------------------------- selection

def latest_runs(evidence: Evidence) -> list[StageRun]:
    """The latest run of each stage, in stage order: the latest not forced, else the latest forced."""
    out = []
    for stage in STAGES:
        run = evidence.latest(stage) or evidence.latest(stage, include_forced=True)
        if run is not None:
            out.append(run)
    return out


def _matching_backtest(evidence: Evidence, paper: StageRun, tol_s: float) -> StageRun | None:
    p0, p1 = paper.period
    if p0 is None or p1 is None:
        return None
    tol = tol_s * 1e9
    for b in reversed(evidence.runs_of("backtest")):
        b0, b1 = b.period
        if (b.config_digest == paper.config_digest and b0 is not None and b1 is not None
                and abs(b0 - p0) <= tol and abs(b1 - p1) <= tol):
            return b
    return None


# --------------------------------------------------------------------------- text tables

def _f(x: Any, spec: str = ".4g", pct: bool = False) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v * 100:.2f}%" if pct else format(v, spec)


def _duration(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = float(seconds)
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


_STAGE_HEADER = ("stage", "run", "forced", "duration", "return", "sharpe", "sortino", "max dd",
                 "dd dur", "profit f", "win rate", "trades", "fills", "sys err", "crit err", "digest")


def _stage_rows(runs: Sequence[StageRun]) -> list[list[str]]:
    rows = []
    for r in runs:
        m = r.metrics
        rows.append([
            r.stage, _f(r.run_id), _f(r.forced), _duration(r.duration_s),
            _f(m.get("total_return"), pct=True), _f(m.get("sharpe"), ".3f"), _f(m.get("sortino"), ".3f"),
            _f(m.get("max_drawdown"), pct=True), _duration(m.get("max_drawdown_duration_s", math.nan)),
            _f(m.get("profit_factor"), ".3f"), _f(m.get("win_rate"), pct=True), _f(m.get("n_trades")),
            _f(r.n_fills), _f(r.system_errors), _f(r.critical_errors), r.result_digest[:12],
        ])
    return rows


def format_stage_table(runs: Sequence[StageRun]) -> str:
    """One row per run: stage, run id, forced, duration, total return, Sharpe, Sortino, max
    drawdown and its duration, profit factor, win rate, trades, fills, error counts, digest."""
    if not runs:
        return "(no stage runs recorded)"
    return _table(_STAGE_HEADER, _stage_rows(runs))


def _comparison_rows(evidence: Evidence, criteria: PromotionCriteria) -> list[list[str]]:
    rows: list[list[str]] = []
    paper = evidence.latest("paper")
    if paper is not None:
        b = _matching_backtest(evidence, paper, criteria.period_tolerance_s)
        if b is None:
            rows.append(["backtest vs paper", "backtest over the same period", "-", "-", "missing",
                         f"paper run {paper.run_id}"])
        else:
            for name, pv, bv, floor in (
                    ("total return", paper.metrics.get("total_return"), b.metrics.get("total_return"),
                     criteria.paper_return_floor),
                    ("fills", paper.n_fills, b.n_fills, criteria.paper_fills_floor),
                    ("mean slippage bps", paper.mean_slippage_bps, b.mean_slippage_bps,
                     criteria.paper_slippage_floor_bps)):
                if pv is None or bv is None:
                    rel, ok = None, False
                else:
                    rel = abs(float(pv) - float(bv)) / max(abs(float(bv)), floor)
                    ok = rel <= criteria.paper_tolerance
                rows.append([f"backtest vs paper: {name}", _f(bv), _f(pv), _f(rel, ".3f"),
                             "ok" if ok else "OUT", f"runs {b.run_id}/{paper.run_id}; tol {criteria.paper_tolerance:g}"])
    shadow = evidence.latest("shadow") or evidence.latest("shadow", include_forced=True)
    if shadow is not None:
        st = shadow.slippage()
        ok = st["n"] > 0 and st["mean_abs_bps"] <= criteria.max_slippage_error_bps
        rows.append(["shadow: slippage model error bps", "-", _f(st["mean_abs_bps"], ".3f"), "-",
                     "ok" if ok else "OUT",
                     f"n {st['n']}, bias {_f(st['mean_bps'], '.3f')}, std {_f(st['std_bps'], '.3f')}, "
                     f"p50 {_f(st['p50_bps'], '.3f')}, p95 {_f(st['p95_bps'], '.3f')}, "
                     f"p99 {_f(st['p99_bps'], '.3f')}; tol {criteria.max_slippage_error_bps:g}"])
    small = evidence.latest("small") or evidence.latest("small", include_forced=True)
    if small is not None:
        papers = [p for p in evidence.runs_of("paper") if p.config_digest == small.config_digest]
        if papers:
            p = papers[-1]
            a, b_ = small.metrics.get("sharpe"), p.metrics.get("sharpe")
            diff = abs(a - b_) if a is not None and b_ is not None else None
            ok = diff is not None and math.isfinite(diff) and diff <= criteria.sharpe_tolerance
            rows.append(["small vs paper: sharpe", _f(b_, ".3f"), _f(a, ".3f"), _f(diff, ".3f"),
                         "ok" if ok else "OUT", f"runs {p.run_id}/{small.run_id}; tol {criteria.sharpe_tolerance:g}"])
        controls = small.risk_controls
        n_ok = sum(1 for c in controls if c.exercised and c.passed)
        rows.append(["small: risk controls", "-", f"{n_ok}/{len(controls)} exercised+passed", "-",
                     "ok" if controls and n_ok == len(controls) else "OUT",
                     ", ".join(f"{c.name}{'' if c.exercised and c.passed else '!'}" for c in controls)])
    return rows


_CMP_HEADER = ("comparison", "reference", "actual", "rel/abs diff", "status", "detail")


def format_comparison_table(evidence: Evidence, criteria: PromotionCriteria | None = None) -> str:
    """Backtest vs paper (relative differences), shadow slippage statistics, small vs paper."""
    rows = _comparison_rows(evidence, criteria or PromotionCriteria())
    return _table(_CMP_HEADER, rows) if rows else "(nothing to compare yet)"


def _ledger_rows(ledger: Sequence[LedgerEntry]) -> list[list[str]]:
    rows = []
    for e in ledger:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((e.ts_ns or 0) / 1e9))
        rows.append([str(e.entry_id), when, e.kind, f"{e.from_stage or '-'} -> {e.to_stage or '-'}",
                     e.action, e.reason[:100]])
    return rows


_LEDGER_HEADER = ("#", "time (UTC)", "kind", "transition", "action", "reason")


def format_ledger_table(ledger: Sequence[LedgerEntry]) -> str:
    """Decisions, demotions and forced runs, oldest first."""
    return _table(_LEDGER_HEADER, _ledger_rows(ledger)) if ledger else "(no decisions recorded)"


# --------------------------------------------------------------------------- plots

def _figure(title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _curve(run: StageRun) -> tuple[np.ndarray, np.ndarray] | None:
    if run.equity is None or run.equity_ts_ns is None or len(run.equity) == 0:
        return None
    return np.asarray(run.equity_ts_ns, np.int64), np.asarray(run.equity, np.float64)


def _hours_label(spans: list[float]) -> tuple[float, str]:
    span = max(spans, default=0.0)
    if span < 2 * 3600:
        return 60.0, "minutes since run start"
    if span < 4 * 86400:
        return 3600.0, "hours since run start"
    return 86400.0, "days since run start"


def render_plots(evidence: Evidence, criteria: PromotionCriteria | None = None) -> dict[str, bytes]:
    """PNG bytes of every plot in PLOTS (keyed by its stem)."""
    c = criteria or PromotionCriteria()
    runs = latest_runs(evidence)
    curves = {r.stage: (r, cv) for r in runs if (cv := _curve(r)) is not None}
    out: dict[str, bytes] = {}
    unit, xlabel = _hours_label([(cv[0][-1] - cv[0][0]) / 1e9 for _, cv in curves.values()])

    fig, ax = _figure(PLOTS["equity"])
    if curves:
        for stage, (r, (ts, eq)) in curves.items():
            ax.plot((ts - ts[0]) / 1e9 / unit, eq / eq[0], lw=1.2, color=_COLOURS[stage],
                    label=f"{stage} (run {r.run_id}{', forced' if r.forced else ''})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("equity / initial")
        ax.legend(fontsize=8, loc="best")
    else:
        _no_data(ax, "no equity curve recorded")
    out["equity"] = _png(fig)

    fig, ax = _figure(PLOTS["drawdown"])
    if curves:
        for stage, (r, (ts, eq)) in curves.items():
            x = (ts - ts[0]) / 1e9 / unit
            dd = -drawdown_series(eq) * 100.0
            ax.fill_between(x, dd, 0.0, color=_COLOURS[stage], alpha=0.25, step="post")
            ax.plot(x, dd, lw=1.0, color=_COLOURS[stage], drawstyle="steps-post",
                    label=f"{stage}: max {r.metrics.get('max_drawdown', float('nan')) * 100:.2f}%")
        deepest = max(float(np.max(drawdown_series(eq))) for _, (_, eq) in curves.values())
        if deepest >= 0.5 * c.max_drawdown:      # else the limit line would flatten the curves
            ax.axhline(-c.max_drawdown * 100.0, color="k", ls="--", lw=0.8, label=f"limit {c.max_drawdown:.0%}")
        else:
            ax.set_title(f"{PLOTS['drawdown']}; promotion limit {c.max_drawdown:.0%} is off the scale",
                         fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("drawdown, %")
        ax.legend(fontsize=8, loc="lower left")
    else:
        _no_data(ax, "no equity curve recorded")
    out["drawdown"] = _png(fig)

    fig, ax = _figure(PLOTS["pnl_distribution"])
    pnls = {r.stage: (r, np.asarray(r.trade_pnls, np.float64)) for r in runs
            if r.trade_pnls is not None and len(r.trade_pnls) > 0}
    if pnls:
        allv = np.concatenate([p for _, p in pnls.values()])
        lo, hi = float(allv.min()), float(allv.max())
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 41)
        for stage, (_, p) in pnls.items():
            ax.hist(p, bins=bins, histtype="step", lw=1.4, color=_COLOURS[stage],
                    label=f"{stage}: {len(p)} trades, mean {p.mean():.4g}")
        ax.axvline(0.0, color="k", lw=0.8)
        ax.set_xlabel("P&L per trade")
        ax.set_ylabel("trades")
        ax.legend(fontsize=8, loc="best")
    else:
        _no_data(ax, "no trade P&L recorded")
    out["pnl_distribution"] = _png(fig)

    fig, ax = _figure(PLOTS["shadow_slippage"])
    shadow = evidence.latest("shadow") or evidence.latest("shadow", include_forced=True)
    if shadow is not None and shadow.paired_fills:
        from engine.analytics import slippage_bps
        pf = shadow.paired_fills
        d = slippage_bps([p.sim_price for p in pf], [p.real_price for p in pf], [p.side for p in pf])
        x = np.arange(1, len(d) + 1)
        ax.bar(x, d, width=0.8, color=np.where(d > 0, "#d62728", "#2ca02c"), alpha=0.8)
        mae = float(np.mean(np.abs(d)))
        ax.axhline(float(np.mean(d)), color="k", lw=1.0, label=f"mean {np.mean(d):.3f} bps")
        ax.axhline(c.max_slippage_error_bps, color="#555", ls="--", lw=0.8,
                   label=f"tolerance (mean |diff|) {c.max_slippage_error_bps:g} bps; actual {mae:.3f}")
        ax.axhline(-c.max_slippage_error_bps, color="#555", ls="--", lw=0.8)
        ax.set_xlabel(f"paired order # (shadow run {shadow.run_id}); positive = real fill worse")
        ax.set_ylabel("real - simulated, bps")
        ax.legend(fontsize=8, loc="best")
    else:
        _no_data(ax, "no shadow run with paired fills recorded")
    out["shadow_slippage"] = _png(fig)

    fig, ax = _figure(PLOTS["paper_vs_backtest"])
    paper = evidence.latest("paper") or evidence.latest("paper", include_forced=True)
    b = _matching_backtest(evidence, paper, c.period_tolerance_s) if paper is not None else None
    pc = _curve(paper) if paper is not None else None
    bc = _curve(b) if b is not None else None
    if pc is not None and bc is not None:
        t0 = min(int(pc[0][0]), int(bc[0][0]))
        u, lab = _hours_label([(max(int(pc[0][-1]), int(bc[0][-1])) - t0) / 1e9])
        ax.plot((bc[0] - t0) / 1e9 / u, bc[1] / bc[1][0], color=_COLOURS["backtest"], lw=1.4,
                label=f"backtest (run {b.run_id})")
        ax.plot((pc[0] - t0) / 1e9 / u, pc[1] / pc[1][0], color=_COLOURS["paper"], lw=1.2, ls="--",
                label=f"paper (run {paper.run_id})")
        ax.set_xlabel(lab.replace("run start", "period start"))
        ax.set_ylabel("equity / initial")
        ax.legend(fontsize=8, loc="best")
    else:
        _no_data(ax, "needs a paper run and a backtest run over the same period")
    out["paper_vs_backtest"] = _png(fig)
    return out


# --------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin-bottom: 4px; } h2 { font-size: 16px; margin-top: 28px; }
.sub { color: #666; font-size: 12px; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
td.l, th.l { text-align: left; white-space: normal; } .bad { color: #b00; font-weight: bold; } .ok { color: #070; }
figure { margin: 12px 0 20px 0; } figcaption { font-size: 12px; color: #444; }
img { max-width: 100%; border: 1px solid #eee; }
"""


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], left_cols: Sequence[int] = ()) -> str:
    head = "".join(("<th class=\"l\">" if i in left_cols else "<th>") + f"{html.escape(h)}</th>"
                   for i, h in enumerate(header))
    body = []
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            cls = []
            if i in left_cols:
                cls.append("l")
            if v in ("OUT", "FAIL", "missing", "refuse", "demote"):
                cls.append("bad")
            elif v in ("ok", "promote", "stay"):
                cls.append("ok")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(evidence: Evidence, pngs: dict[str, bytes], criteria: PromotionCriteria | None = None,
                title: str = "Stage report") -> str:
    """The self-contained HTML page (inline CSS, images as data: URIs, no external reference)."""
    c = criteria or PromotionCriteria()
    state = derive_stage_state(evidence.ledger)
    runs = latest_runs(evidence)
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="sub">generated {generated}; current stage: <b>{html.escape(state.current)}</b>'
        + (f"; rollback pending after demotion from {html.escape(state.rollback.from_stage or '')}"
           if state.rollback is not None else "")
        + f"; {len(evidence.runs)} runs recorded, {state.forced_runs} forced</div>",
        "<h2>Latest run of each stage</h2>",
        _html_table(_STAGE_HEADER, _stage_rows(runs)) if runs else "<p>No stage runs recorded.</p>",
        "<h2>Stage comparisons</h2>",
    ]
    cmp_rows = _comparison_rows(evidence, c)
    parts.append(_html_table(_CMP_HEADER, cmp_rows, left_cols=(5,)) if cmp_rows
                 else "<p>Nothing to compare yet.</p>")
    parts.append("<h2>Decisions, demotions, forced runs</h2>")
    parts.append(_html_table(_LEDGER_HEADER, _ledger_rows(evidence.ledger), left_cols=(5,))
                 if evidence.ledger else "<p>No decisions recorded.</p>")
    parts.append("<h2>Plots</h2>")
    for stem, caption in PLOTS.items():
        if stem in pngs:
            b64 = base64.b64encode(pngs[stem]).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(stem)}" src="data:image/png;base64,{b64}">'
                         f"<figcaption>{html.escape(caption)} ({html.escape(stem)}.png)</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(evidence: Evidence, out_dir: str | Path, criteria: PromotionCriteria | None = None,
                 title: str = "Stage report") -> ReportFiles:
    """Write report.html, report.txt and <plot>.png for every plot into out_dir (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pngs = render_plots(evidence, criteria)
    paths = {}
    for stem, data in pngs.items():
        p = out / f"{stem}.png"
        p.write_bytes(data)
        paths[stem] = p
    html_path = out / "report.html"
    html_path.write_text(render_html(evidence, pngs, criteria, title), encoding="utf-8")
    text_path = out / "report.txt"
    text_path.write_text(format_text_report(evidence, criteria) + "\n", encoding="utf-8")
    return ReportFiles(html=html_path, text=text_path, pngs=paths)


def format_text_report(evidence: Evidence, criteria: PromotionCriteria | None = None) -> str:
    """The terminal version: stage table, comparisons, ledger."""
    state = derive_stage_state(evidence.ledger)
    return "\n\n".join([
        f"current stage: {state.current}" + (" (rollback pending)" if state.rollback is not None else ""),
        "latest run of each stage\n" + format_stage_table(latest_runs(evidence)),
        "stage comparisons\n" + format_comparison_table(evidence, criteria),
        "decisions, demotions, forced runs\n" + format_ledger_table(evidence.ledger),
    ])


def report_main(store_path: str, out_dir: str, *, criteria: PromotionCriteria | None = None,
                out: TextIO | None = None) -> int:
    """``engine report``: print the text tables and write the HTML/PNG report of the evidence in
    ``store_path`` into ``out_dir``. Returns 0, or 1 when no run is recorded (nothing written).
    A missing store is an EngineError."""
    out = out or sys.stdout
    with EvidenceStore(store_path, create=False) as store:
        evidence = store.evidence(with_series=True)
    if not evidence.runs:
        print(f"engine report: no stage runs recorded in {store_path}", file=out)
        return 1
    try:
        files = write_report(evidence, out_dir, criteria)
    except OSError as exc:
        raise EngineError(f"report: cannot write to {out_dir}: {exc}") from None
    print(format_text_report(evidence, criteria), file=out)
    print(f"\nreport: {files.html}  (plots: {', '.join(p.name for p in files.pngs.values())})", file=out)
    return 0
