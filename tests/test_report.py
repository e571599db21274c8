"""engine.report: files written, HTML self-contained (no external reference), PNGs valid, the
terminal tables carry the recorded numbers."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest

from engine.errors import EngineError
from engine.evidence import EvidenceStore
from engine.promotion import PromotionGate
from engine.report import (
    PLOTS,
    format_comparison_table,
    format_stage_table,
    latest_runs,
    render_plots,
    report_main,
)
from tests.test_promotion import FAST, advance, good_run, paired

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def full_store(path):
    """Evidence of a whole pipeline: every stage run, a demotion, a forced run."""
    with EvidenceStore(path) as store:
        gate = PromotionGate(store, FAST)
        advance(gate, "live")
        gate.record_run(good_run("live", seed=9, paired_fills=paired(n=12, seed=9)))
        gate.check_live()
        gate.on_kill_switch_trip("live", "drawdown limit")
        gate.may_run("shadow", force=True, reason="slippage drill")
    return path


def assert_valid_png(data: bytes) -> tuple[int, int]:
    import matplotlib.image as mpimg
    assert data.startswith(PNG_MAGIC)
    img = mpimg.imread(io.BytesIO(data), format="png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(np.std(img[..., :3])) > 0.01            # not a blank image
    return img.shape[:2]


def test_report_main_writes_a_self_contained_report(tmp_path):
    store_path = full_store(tmp_path / "ev.sqlite")
    out_dir = tmp_path / "report"
    buf = io.StringIO()
    assert report_main(str(store_path), str(out_dir), criteria=FAST, out=buf) == 0
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(["report.html", "report.txt"] + [f"{s}.png" for s in PLOTS])
    pngs = {s: (out_dir / f"{s}.png").read_bytes() for s in PLOTS}
    for data in pngs.values():
        assert_valid_png(data)

    page = (out_dir / "report.html").read_text(encoding="utf-8")
    embedded = DATA_URI.findall(page)
    assert len(embedded) == len(PLOTS)
    assert {base64.b64decode(b) for b in embedded} == set(pngs.values())   # the same images as the files
    stripped = DATA_URI.sub("", page)
    for pattern in (r"https?:", r"//[a-z0-9.-]+\.[a-z]", r"<link\b", r"<script\b", r"@import", r"url\(",
                    r"<iframe\b", r"<object\b", r"<embed\b", r"href="):
        assert not re.search(pattern, stripped, re.I), pattern
    assert not re.search(r"src=\"(?!data:image/png;base64,)", page)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for stage in ("backtest", "paper", "shadow", "small", "live"):
        assert f"<td>{stage}</td>" in page
    assert "current stage: <b>paper</b>" in page and "rollback pending" in page

    text = buf.getvalue()
    assert text.startswith("current stage: paper (rollback pending)")
    assert (out_dir / "report.txt").read_text().strip() in text
    assert "forced_run" in text and "demotion" in text and "shadow: slippage model error bps" in text


def test_stage_table_carries_the_recorded_numbers(tmp_path):
    with EvidenceStore(full_store(tmp_path / "ev.sqlite")) as store:
        ev = store.evidence(with_series=True)
    runs = latest_runs(ev)
    assert [r.stage for r in runs] == ["backtest", "paper", "shadow", "small", "live"]
    table = format_stage_table(runs).splitlines()
    assert table[0].split()[:6] == ["stage", "run", "forced", "duration", "return", "sharpe"]
    for run, line in zip(runs, table[2:], strict=True):
        m = run.metrics
        cells = line.split()
        assert cells[0] == run.stage and cells[1] == str(run.run_id)
        assert cells[4] == f"{m['total_return'] * 100:.2f}%"
        assert cells[5] == f"{m['sharpe']:.3f}"
        assert cells[7] == f"{m['max_drawdown'] * 100:.2f}%"
        assert cells[-1] == run.result_digest[:12]
    cmp = format_comparison_table(ev, FAST)
    st = ev.latest("shadow").slippage()
    assert f"{st['mean_abs_bps']:.3f}" in cmp
    assert "backtest vs paper: total return" in cmp and "small vs paper: sharpe" in cmp


def test_partial_evidence_still_writes_every_plot(tmp_path):
    path = tmp_path / "ev.sqlite"
    with EvidenceStore(path) as store:
        store.record_run(good_run("backtest"))
    out_dir = tmp_path / "r"
    assert report_main(str(path), str(out_dir), out=io.StringIO()) == 0
    for stem in PLOTS:
        assert_valid_png((out_dir / f"{stem}.png").read_bytes())
    with EvidenceStore(path) as store:
        plots = render_plots(store.evidence(with_series=True))
    assert set(plots) == set(PLOTS)


def test_empty_or_missing_store(tmp_path):
    path = tmp_path / "ev.sqlite"
    EvidenceStore(path).close()
    buf = io.StringIO()
    assert report_main(str(path), str(tmp_path / "r"), out=buf) == 1
    assert "no stage runs recorded" in buf.getvalue()
    assert not (tmp_path / "r").exists()
    with pytest.raises(EngineError, match="no such file"):
        report_main(str(tmp_path / "missing.sqlite"), str(tmp_path / "r"))
