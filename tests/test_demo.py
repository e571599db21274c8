"""`engine demo` end to end, as the README runs it (smaller event count)."""
from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO_ROOT


def run_demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "demo", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_demo_runs_and_reports_what_happened():
    proc = run_demo("--core", "--events", "30000", "--symbols", "AAPL,MSFT")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for symbol in ("AAPL", "MSFT"):
        m = re.search(rf"^{symbol}: 30,000 events in .* ([\d,]+) trades", out, re.M)
        assert m and int(m.group(1).replace(",", "")) > 0, out
    # the deliberately bad orders are each rejected with their own reason
    assert out.count("RISK_REJECT_PRICE_BAND") >= 2
    assert out.count("RISK_REJECT_MAX_ORDER_QTY") >= 2
    assert out.count("RISK_REJECT_DUPLICATE_ID") >= 2
    assert "orders sent" in out


def test_demo_is_reproducible_for_a_seed():
    first = run_demo("--core", "--events", "20000", "--seed", "3", "--symbols", "XYZ")
    second = run_demo("--core", "--events", "20000", "--seed", "3", "--symbols", "XYZ")
    strip = lambda s: re.sub(r"in [\d,]+ ms \([\d.]+ M events/s", "", s)  # noqa: E731 - timing varies
    assert first.returncode == 0 and strip(first.stdout) == strip(second.stdout)


def test_demo_rejects_bad_arguments_clearly():
    proc = run_demo("--core", "--events", "many")
    assert proc.returncode == 2
    assert "--events" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_pipeline_end_to_end(tmp_path):
    """The README's main job: venue on loopback, backtest -> paper -> shadow -> small with the
    gate between stages, the kill-switch drill, the report."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--stage-seconds", "4", "--out", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    for heading in ("== backtest ==", "== paper ==", "== shadow ==", "== small", "== stage report =="):
        assert heading in text
    assert text.count("promotion backtest -> paper") == 1
    assert "pre-flight: all checks passed" in text
    assert "the venue holds 0 open order(s) of ours afterwards" in text
    assert "control kill_switch: exercised, passed" in text
    digests = re.findall(r"run [12]: .* digest ([0-9a-f]{16})", text)
    assert len(digests) == 2 and digests[0] == digests[1], "the backtest is not reproducible"
    assert (out / "report" / "report.html").is_file()
    assert (out / "venue-statement.csv").read_text().startswith("record,account,symbol")
