"""engine.tuning (CPU pinning, GC policies, locked memory, describe) and the deployment
files in deploy/ (systemd unit, the co-located config example)."""
from __future__ import annotations

import configparser
import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine import tuning
from engine.config import load_config
from engine.errors import ConfigError, EngineError

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _in_thread(fn):
    """Run fn in a fresh thread (sched_setaffinity(0) acts on the calling thread only,
    so pinning there leaves the test runner's own thread alone)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc
    th = threading.Thread(target=target)
    th.start()
    th.join(10)
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def gc_state():
    """Restore the interpreter's GC state after a test that changes it."""
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    if enabled:
        gc.enable()
    else:
        gc.disable()


@pytest.fixture
def fresh_pin(monkeypatch):
    monkeypatch.setattr(tuning, "_allowed_before_pin", None)


# ----------------------------------------------------------------------------- CPUs

def test_pin_to_an_allowed_cpu(fresh_pin):
    allowed = os.sched_getaffinity(0)
    cpu = max(allowed)

    def pin():
        report = tuning.pin_cpu(cpu)
        return report, os.sched_getaffinity(0)
    report, affinity = _in_thread(pin)
    assert affinity == {cpu}
    assert report == {"cpu": cpu, "allowed_before": sorted(allowed), "affinity": [cpu]}
    assert os.sched_getaffinity(0) == allowed          # this thread was not touched


@pytest.mark.parametrize("bad", [-1, 10_000, "2", 1.0, True, None])
def test_refuse_a_cpu_outside_the_allowed_set(bad, fresh_pin):
    allowed = os.sched_getaffinity(0)
    with pytest.raises(tuning.TuningError) as info:
        _in_thread(lambda: tuning.pin_cpu(bad))
    msg = str(info.value)
    assert repr(bad) in msg or str(bad) in msg
    if isinstance(bad, int) and not isinstance(bad, bool):
        assert tuning.format_cpus(allowed) in msg       # names the CPUs that are allowed
    assert isinstance(info.value, EngineError) and isinstance(info.value, ValueError)
    assert os.sched_getaffinity(0) == allowed


def test_format_cpus():
    assert tuning.format_cpus([0, 1, 2, 3, 6, 8, 9]) == "0-3,6,8-9"
    assert tuning.format_cpus([5]) == "5"
    assert tuning.format_cpus([]) == "none"


def test_move_other_threads_off_the_pinned_cpu():
    """In a child process: pin the main thread to one CPU, then move the other threads
    to the rest (needs 2 allowed CPUs; with one there is nowhere to move them)."""
    code = r"""
import os, threading
from engine import tuning
allowed = sorted(os.sched_getaffinity(0))
ev = threading.Event(); th = threading.Thread(target=ev.wait); th.start()
tuning.pin_cpu(allowed[-1])
r = tuning.move_other_threads()
print(sorted(os.sched_getaffinity(th.native_id)), sorted(os.sched_getaffinity(0)), r["moved"] == [th.native_id])
ev.set()
"""
    out = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    allowed = sorted(os.sched_getaffinity(0))
    line = out.stdout.strip()
    if len(allowed) >= 2:
        assert line == f"{allowed[:-1]} {[allowed[-1]]} True"
    else:
        assert line == f"{allowed} {allowed} False"


# ----------------------------------------------------------------------------- GC

def test_gc_freeze(gc_state):
    gc.unfreeze()
    r = tuning.apply_gc_policy("freeze")
    assert gc.get_freeze_count() > 0 and r["frozen"] == gc.get_freeze_count()
    assert gc.get_threshold()[0] == tuning.FREEZE_GEN0_THRESHOLD == r["thresholds"][0]
    assert gc.isenabled() and r["enabled"] is True and r["policy"] == "freeze"
    assert r["pause_ns"] > 0


def test_gc_freeze_custom_threshold(gc_state):
    r = tuning.apply_gc_policy("freeze", gen0_threshold=12_345)
    assert gc.get_threshold()[0] == 12_345 and r["thresholds"][0] == 12_345


def test_gc_disabled_and_the_periodic_collection(gc_state):
    r = tuning.apply_gc_policy("disabled")
    assert not gc.isenabled() and r["enabled"] is False and gc.get_freeze_count() > 0
    collector = tuning.PeriodicCollector(interval_s=0.5, generation=2)

    class Node:
        pass
    for _ in range(100):                     # cycles: only a collection reclaims them
        a, b = Node(), Node()
        a.other, b.other = b, a
    del a, b
    assert collector.maybe_collect() is None          # not time yet
    assert collector.maybe_collect(collector._last + collector.interval_ns) >= 200
    st = collector.stats()
    assert st["collections"] == 1 and st["reclaimed"] >= 200 and st["max_pause_ns"] > 0
    assert not gc.isenabled()                        # the hook collects, it does not re-enable


def test_gc_default_restores_cpython_defaults(gc_state):
    tuning.apply_gc_policy("disabled")
    r = tuning.apply_gc_policy("default")
    assert gc.isenabled() and gc.get_threshold() == tuning.DEFAULT_GC_THRESHOLDS
    assert gc.get_freeze_count() == 0 and r["frozen"] == 0


def test_gc_policy_errors(gc_state):
    with pytest.raises(tuning.TuningError, match="choose one of default, freeze, disabled"):
        tuning.apply_gc_policy("off")
    with pytest.raises(tuning.TuningError, match="gen0_threshold"):
        tuning.apply_gc_policy("freeze", gen0_threshold=10)
    with pytest.raises(tuning.TuningError, match="interval_s"):
        tuning.PeriodicCollector(interval_s=0)


async def _collector_on_loop():
    import asyncio
    c = tuning.PeriodicCollector(interval_s=0.01, generation=0)
    c.start(asyncio.get_running_loop())
    await asyncio.sleep(0.1)
    c.stop()
    n = c.collections
    await asyncio.sleep(0.05)
    return n, c.collections


def test_periodic_collector_on_an_event_loop():
    import asyncio
    n, later = asyncio.run(_collector_on_loop())
    assert n >= 3 and later == n                     # ran on the loop, stopped by stop()


# ----------------------------------------------------------------------------- memory, describe

def test_lock_memory_in_a_child_process():
    code = ("from engine import tuning\n"
            "try:\n    r = tuning.lock_memory(); print('locked', r['vm_locked_kb'] > 0)\n"
            "except tuning.TuningError as e:\n    print('refused', 'RLIMIT_MEMLOCK' in str(e))\n")
    out = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("locked True", "refused True")


def test_mlockall_failure_names_the_limit(monkeypatch):
    class FakeLibc:
        def mlockall(self, flags):
            import ctypes
            ctypes.set_errno(12)
            return -1

        def munlockall(self):
            return 0
    monkeypatch.setattr(tuning, "_libc", lambda: FakeLibc())
    with pytest.raises(tuning.TuningError, match="RLIMIT_MEMLOCK .*LimitMEMLOCK=infinity"):
        tuning.lock_memory()
    with pytest.raises(tuning.TuningError, match="prefault_memory: mlockall failed"):
        tuning.prefault_memory()


def test_describe_and_snapshot(gc_state):
    tuning.apply_gc_policy("freeze")
    s = tuning.snapshot()
    assert s["affinity"] == sorted(os.sched_getaffinity(0)) and s["gc_enabled"] is True
    assert s["gc_frozen"] > 0 and s["pid"] == os.getpid()
    line = tuning.describe()
    assert "\n" not in line
    assert line.startswith(f"cpu {tuning.format_cpus(os.sched_getaffinity(0))}")
    assert f"thresholds {tuning.FREEZE_GEN0_THRESHOLD}/" in line and "memlock" in line
    tuning.apply_gc_policy("disabled")
    assert "gc DISABLED" in tuning.describe()


# ----------------------------------------------------------------------------- deploy/

COLO = REPO / "deploy" / "colo-example.toml"
UNIT = REPO / "deploy" / "systemd" / "engine.service"


def test_colo_example_passes_config_check():
    out = subprocess.run([PY, "-m", "engine.cli", "config", "--check", str(COLO)], cwd=REPO,
                         capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items()
                              if k not in ("VENUE_PASSWORD", "ENGINE_ADMIN_TOKEN")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK ") and "fix 10." in out.stdout


def test_colo_example_loads_as_live_with_its_secrets():
    env = {"VENUE_PASSWORD": "x", "ENGINE_ADMIN_TOKEN": "y"}
    cfg = load_config(COLO, stage="live", environ=env)
    assert str(cfg.stage) == "live" and cfg.venue is not None
    assert cfg.venue.password.env == "VENUE_PASSWORD" and cfg.monitoring.token.env == "ENGINE_ADMIN_TOKEN"
    assert cfg.monitoring.admin_host == "127.0.0.1"
    assert str(cfg.storage.directory).startswith("/var/lib/engine")
    with pytest.raises(ConfigError, match="VENUE_PASSWORD"):
        load_config(COLO, stage="live", environ={"ENGINE_ADMIN_TOKEN": "y"})


def test_systemd_unit():
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read_string(UNIT.read_text())
    svc = cp["Service"]
    assert "engine run --config /etc/engine/engine.toml --stage live --cpu 2" in svc["ExecStart"]
    assert svc["Restart"] == "on-failure"
    prevent = svc["RestartPreventExitStatus"].split()
    assert "2" in prevent and "3" in prevent        # refused to start / stopped by the kill switch
    assert svc["LimitMEMLOCK"] == "infinity"
    assert "2" in svc["CPUAffinity"].split()
    assert svc["EnvironmentFile"].startswith("/etc/engine/")
    assert "Nice" in svc and "IOSchedulingClass" in svc
    assert int(cp["Unit"]["StartLimitBurst"]) >= 1


def test_engine_run_applies_cpu_pinning_and_gc_policy_end_to_end(tmp_path):
    """`engine run --cpu 0 --gc freeze --busy-poll` against the venue simulator: the
    engine logs the affinity and GC state it applied after start-up, and busy polling."""
    import re
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT
    from tests.test_runtime import write_config

    venue = subprocess.Popen([sys.executable, "-m", "engine.cli", "venue", "--fix-port", "0",
                              "--itch-request-port", "0"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        banner = [venue.stdout.readline() for _ in range(3)]
        fix_port = int(re.search(r"listening on [\d.]+:(\d+)", banner[0]).group(1))
        feed_port = int(re.search(r"udp [\d.]+:(\d+)", banner[2]).group(1))
        config = write_config(tmp_path, fix_port, feed_port, "paper")
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "-v", "run", "--config", str(config),
                               "--admin-port", "0", "--duration", "2", "--force", "--cpu", "0", "--gc", "freeze",
                               "--busy-poll"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=90)
    finally:
        venue.terminate()
        venue.wait(10)
    assert proc.returncode == 0, proc.stderr[-2000:]
    gc_line = [ln for ln in proc.stderr.splitlines() if "engine.runtime: gc " in ln]
    assert gc_line, proc.stderr[-2000:]
    assert "freeze" in gc_line[0] and re.search(r"cpus?\W+\[?0\]?", gc_line[0]), gc_line[0]
    assert "busy polling" in proc.stderr, proc.stderr[-2000:]


# ----------------------------------------------------------------------------- busy polling



def test_busy_poll_keeps_the_loop_thread_on_the_cpu_and_events_flowing(loop_runner):
    """gateway.loops.busy_poll: while it runs, an idle loop burns its thread's CPU
    (it never sleeps in epoll) and still runs what is scheduled; cancelled, it sleeps."""
    import asyncio

    from gateway.loops import busy_poll

    async def main():
        loop = asyncio.get_running_loop()

        async def idle_cpu(seconds: float) -> float:
            t0 = time.thread_time()
            await asyncio.sleep(seconds)
            return time.thread_time() - t0
        quiet = await idle_cpu(0.3)
        poller = loop.create_task(busy_poll())
        fired = loop.create_future()
        loop.call_later(0.1, fired.set_result, True)
        busy = await idle_cpu(0.3)
        assert fired.done()
        poller.cancel()
        after = await idle_cpu(0.3)
        return quiet, busy, after
    quiet, busy, after = loop_runner(main)
    assert quiet < 0.05 and after < 0.05
    assert busy > 0.15
