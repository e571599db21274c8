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
    proc = run_demo("--events", "30000", "--symbols", "AAPL,MSFT")
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
    first = run_demo("--events", "20000", "--seed", "3", "--symbols", "XYZ")
    second = run_demo("--events", "20000", "--seed", "3", "--symbols", "XYZ")
    strip = lambda s: re.sub(r"in [\d,]+ ms \([\d.]+ M events/s", "", s)  # noqa: E731 - timing varies
    assert first.returncode == 0 and strip(first.stdout) == strip(second.stdout)


def test_demo_rejects_bad_arguments_clearly():
    proc = run_demo("--events", "many")
    assert proc.returncode == 2
    assert "--events" in proc.stderr and "Traceback" not in proc.stderr
