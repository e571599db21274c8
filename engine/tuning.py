"""Process tuning for a co-located engine: CPU pinning, the GC policy of the hot path,
locked memory, and a one-line description of the host's latency settings for the logs.

The host side (isolcpus, nohz_full, IRQ affinity, busy polling, governors, clock
sync) is in deploy/TUNING.md; this module is what the process does to itself:

* ``pin_cpu(n)`` -- the calling thread (the event loop's) and every thread it starts
  afterwards run on CPU n only (``os.sched_setaffinity``); an invalid CPU is a
  `TuningError` naming the CPUs the process may use. ``move_other_threads()`` puts
  the other threads (journal writer, metrics collector) back on the remaining CPUs.
* ``apply_gc_policy(policy)`` -- what the cyclic garbage collector may do on the
  event loop's thread (reference counting frees everything acyclic at once and is
  not affected):

  ``default``   CPython's defaults: enabled, thresholds (700, 10, 10), nothing frozen.
  ``freeze``    after start-up: ``gc.collect()`` then ``gc.freeze()`` -- every object
                alive now (config, books, kernel, strategy, modules) leaves the GC's
                generations, so no later collection scans it -- and the generation-0
                threshold raised (default 50 000 allocations), so young collections
                are rare and short. The recommended policy for ``engine run``.
  ``disabled``  ``gc.collect(); gc.freeze(); gc.disable()``: no automatic collection at
                all. Reference cycles created while running are then only reclaimed
                by an explicit collection: use `PeriodicCollector` from a timer (the
                runtime's timer runs between events, never inside one), and watch its
                ``max_pause_ns``. Without it, memory grows by every cycle made.

  It returns what it did (a dict, for the logs).
* ``lock_memory()`` -- ``mlockall(MCL_CURRENT | MCL_FUTURE)``: every page the process
  has, and every page it maps later, is resident and never swapped, so no event pays
  a page fault (the first touch of a fresh page costs 1-5 us; the ITCH order table
  is a 5 MB calloc whose pages are otherwise first touched during trading). Needs
  ``LimitMEMLOCK=infinity`` (systemd) or CAP_IPC_LOCK. ``prefault_memory()`` faults
  in what is mapped now and unlocks again (what the benchmarks do).
* ``describe()`` -- one line for the start-up log: affinity, isolated / nohz_full CPUs,
  the pinned CPU's frequency governor, transparent huge pages, busy polling, GC state,
  locked memory, scheduling policy and nice value. ``snapshot()`` is the same as a dict.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.errors import EngineError

__all__ = [
    "TuningError", "GC_POLICIES", "DEFAULT_GC_THRESHOLDS", "FREEZE_GEN0_THRESHOLD",
    "allowed_cpus", "pin_cpu", "move_other_threads", "apply_gc_policy", "PeriodicCollector",
    "lock_memory", "prefault_memory", "describe", "snapshot", "format_cpus",
]

GC_POLICIES = ("default", "freeze", "disabled")
DEFAULT_GC_THRESHOLDS = (700, 10, 10)     # CPython's
FREEZE_GEN0_THRESHOLD = 50_000

_MCL_CURRENT = 1
_MCL_FUTURE = 2

# The CPUs this process could use before pin_cpu() narrowed them (for move_other_threads).
_allowed_before_pin: frozenset[int] | None = None


class TuningError(EngineError, ValueError):
    """A tuning request that cannot be honoured; the message says what was wrong and
    what is allowed."""


# ----------------------------------------------------------------------------- CPUs

def format_cpus(cpus: Iterable[int]) -> str:
    """A CPU set as the kernel writes it: "0-3,6"."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(set(cpus)):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out) or "none"


def allowed_cpus() -> list[int]:
    """The CPUs the calling thread may run on (its affinity mask), ascending."""
    return sorted(os.sched_getaffinity(0))


def pin_cpu(cpu: int) -> dict[str, Any]:
    """Pin the calling thread -- and every thread it starts from now on -- to `cpu`.

    Call it at start-up from the event loop's thread, before the runtime starts its
    threads. Raises TuningError if `cpu` is not an integer or not among the CPUs this
    process may use (systemd's CPUAffinity, taskset, cgroup cpusets narrow that set).
    Returns {"cpu", "allowed_before", "affinity"}."""
    global _allowed_before_pin
    if isinstance(cpu, bool) or not isinstance(cpu, int):
        raise TuningError(f"--cpu {cpu!r}: give a CPU number (an integer)")
    allowed = os.sched_getaffinity(0)
    if cpu not in allowed:
        raise TuningError(f"--cpu {cpu}: not one of the CPUs this process may use "
                          f"({format_cpus(allowed)}; {os.cpu_count()} CPUs on the host)")
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        raise TuningError(f"--cpu {cpu}: sched_setaffinity failed: {exc.strerror}") from None
    if _allowed_before_pin is None:
        _allowed_before_pin = frozenset(allowed)
    return {"cpu": cpu, "allowed_before": sorted(allowed), "affinity": allowed_cpus()}


def move_other_threads(cpus: Iterable[int] | None = None) -> dict[str, Any]:
    """Put every thread of the process except the calling one on `cpus` (default: the
    CPUs allowed before pin_cpu() minus the pinned one), so the journal writer and the
    metrics thread do not share the event loop's CPU. No-op (reported) when that set
    is empty. Returns {"cpus", "moved": [native thread ids], "failed": {tid: error}}."""
    me = threading.get_native_id()
    if cpus is None:
        base = _allowed_before_pin if _allowed_before_pin is not None else frozenset(os.sched_getaffinity(0))
        target = set(base) - set(os.sched_getaffinity(0))
    else:
        target = {int(c) for c in cpus}
        bad = target - os.sched_getaffinity(0) - (set(_allowed_before_pin or ()))
        if bad:
            raise TuningError(f"move_other_threads: CPU(s) {format_cpus(bad)} not available to this "
                              f"process ({format_cpus(_allowed_before_pin or os.sched_getaffinity(0))})")
    moved: list[int] = []
    failed: dict[int, str] = {}
    if not target:
        return {"cpus": [], "moved": moved, "failed": failed}
    for entry in Path("/proc/self/task").iterdir():
        tid = int(entry.name)
        if tid == me:
            continue
        try:
            os.sched_setaffinity(tid, target)
            moved.append(tid)
        except OSError as exc:
            failed[tid] = exc.strerror or str(exc)
    return {"cpus": sorted(target), "moved": sorted(moved), "failed": failed}


# ----------------------------------------------------------------------------- GC

def apply_gc_policy(policy: str, *, gen0_threshold: int = FREEZE_GEN0_THRESHOLD) -> dict[str, Any]:
    """Apply a GC policy (see the module docstring) and return what was done:
    {"policy", "collected", "frozen", "thresholds_before", "thresholds", "enabled",
     "pause_ns"} (pause_ns: the start-up collection's duration)."""
    if policy not in GC_POLICIES:
        raise TuningError(f"gc policy {policy!r}: choose one of {', '.join(GC_POLICIES)}")
    if isinstance(gen0_threshold, bool) or not isinstance(gen0_threshold, int) \
            or not 100 <= gen0_threshold <= 10_000_000:
        raise TuningError(f"gen0_threshold {gen0_threshold!r}: an integer in 100..10000000")
    before = gc.get_threshold()
    collected = 0
    pause = 0
    if policy == "default":
        gc.unfreeze()
        gc.set_threshold(*DEFAULT_GC_THRESHOLDS)
        gc.enable()
    else:
        t0 = time.perf_counter_ns()
        collected = gc.collect()
        gc.freeze()
        pause = time.perf_counter_ns() - t0
        if policy == "freeze":
            gc.set_threshold(gen0_threshold, before[1], before[2])
            gc.enable()
        else:
            gc.disable()
    return {"policy": policy, "collected": collected, "frozen": gc.get_freeze_count(),
            "thresholds_before": tuple(before), "thresholds": tuple(gc.get_threshold()),
            "enabled": gc.isenabled(), "pause_ns": pause}


class PeriodicCollector:
    """The collection hook of the ``disabled`` policy: ``gc.collect(generation)`` at most
    every `interval_s`, called from a timer that runs between events.

    Either call ``maybe_collect()`` from a timer you already have (the runtime's
    ``_timers`` loop), or ``start(loop)`` to schedule it with ``loop.call_later``.
    Counts collections and objects reclaimed and records the longest pause, so the
    pause the hot path avoids is visible (``stats()``)."""

    def __init__(self, interval_s: float = 1.0, generation: int = 1) -> None:
        if not 0.01 <= interval_s <= 3600:
            raise TuningError(f"interval_s {interval_s!r}: allowed 0.01..3600 s")
        if generation not in (0, 1, 2):
            raise TuningError(f"generation {generation!r}: 0, 1 or 2")
        self.interval_ns = int(interval_s * 1e9)
        self.generation = generation
        self.collections = 0
        self.reclaimed = 0
        self.max_pause_ns = 0
        self.last_pause_ns = 0
        self._last = time.monotonic_ns()
        self._handle = None

    def collect(self) -> int:
        t0 = time.perf_counter_ns()
        n = gc.collect(self.generation)
        self.last_pause_ns = time.perf_counter_ns() - t0
        self.max_pause_ns = max(self.max_pause_ns, self.last_pause_ns)
        self.collections += 1
        self.reclaimed += n
        self._last = time.monotonic_ns()
        return n

    def maybe_collect(self, now_mono_ns: int | None = None) -> int | None:
        """Collect if `interval_s` has passed since the last collection; the number of
        objects reclaimed, or None when it was not time yet."""
        now = time.monotonic_ns() if now_mono_ns is None else now_mono_ns
        if now - self._last < self.interval_ns:
            return None
        return self.collect()

    def start(self, loop) -> None:
        """Collect every interval on `loop` (an asyncio loop) until stop()."""
        def tick() -> None:
            self.collect()
            self._handle = loop.call_later(self.interval_ns / 1e9, tick)
        self.stop()
        self._handle = loop.call_later(self.interval_ns / 1e9, tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def stats(self) -> dict[str, int]:
        return {"collections": self.collections, "reclaimed": self.reclaimed,
                "max_pause_ns": self.max_pause_ns, "last_pause_ns": self.last_pause_ns}


# ----------------------------------------------------------------------------- memory

def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _memlock_limit() -> str:
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024} kB"


def _mlockall(flags: int, what: str) -> None:
    libc = _libc()
    if libc.mlockall(flags) != 0:
        err = ctypes.get_errno()
        raise TuningError(f"{what}: mlockall failed: {os.strerror(err)} (RLIMIT_MEMLOCK {_memlock_limit()}; "
                          f"set LimitMEMLOCK=infinity in the systemd unit or grant CAP_IPC_LOCK)")


def lock_memory(future: bool = True) -> dict[str, Any]:
    """mlockall(MCL_CURRENT | MCL_FUTURE): resident now, and every later mapping
    faulted in when it is made (no page fault on the hot path, no swap). TuningError
    naming RLIMIT_MEMLOCK when the kernel refuses."""
    _mlockall(_MCL_CURRENT | (_MCL_FUTURE if future else 0), "lock_memory")
    return {"locked": True, "future": future, "vm_locked_kb": _status_kb("VmLck")}


def prefault_memory() -> dict[str, Any]:
    """Fault in every page mapped now (mlockall(MCL_CURRENT), then munlockall()):
    memory allocated so far pays no first-touch page fault later. Memory mapped after
    the call is not covered (use lock_memory for that)."""
    t0 = time.perf_counter_ns()
    _mlockall(_MCL_CURRENT, "prefault_memory")
    _libc().munlockall()
    return {"prefaulted_kb": _status_kb("VmRSS"), "took_ns": time.perf_counter_ns() - t0}


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


# ----------------------------------------------------------------------------- description

def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _bracketed(text: str | None) -> str | None:
    """The selected value of a sysfs choice list: "always [madvise] never" -> "madvise"."""
    if text is None:
        return None
    if "[" in text and "]" in text:
        return text[text.index("[") + 1:text.index("]")]
    return text


def snapshot() -> dict[str, Any]:
    """The process's and the host's latency-relevant settings (missing files: None)."""
    affinity = allowed_cpus()
    cpu = affinity[0] if len(affinity) == 1 else None
    try:
        policy = os.sched_getscheduler(0)
        names = {getattr(os, n): n for n in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH",
                                              "SCHED_IDLE") if hasattr(os, n)}
        sched = names.get(policy, str(policy))
    except OSError:
        sched = None
    return {
        "pid": os.getpid(),
        "affinity": affinity,
        "allowed_before_pin": sorted(_allowed_before_pin) if _allowed_before_pin is not None else None,
        "cpus_online": _read("/sys/devices/system/cpu/online"),
        "isolated": _read("/sys/devices/system/cpu/isolated") or "",
        "nohz_full": _read("/sys/devices/system/cpu/nohz_full") or "",
        "governor": _read(f"/sys/devices/system/cpu/cpu{cpu if cpu is not None else 0}/cpufreq/scaling_governor"),
        "thp": _bracketed(_read("/sys/kernel/mm/transparent_hugepage/enabled")),
        "busy_poll_us": _read("/proc/sys/net/core/busy_poll"),
        "busy_read_us": _read("/proc/sys/net/core/busy_read"),
        "gc_enabled": gc.isenabled(),
        "gc_thresholds": tuple(gc.get_threshold()),
        "gc_frozen": gc.get_freeze_count(),
        "memlock_limit": _memlock_limit(),
        "vm_locked_kb": _status_kb("VmLck"),
        "sched": sched,
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
    }


def describe() -> str:
    """One line for the start-up log, e.g. ``cpu 2 (allowed 1-3) isolated 2-3 nohz_full
    2-3 governor performance thp madvise busy_poll 50us gc freeze(frozen 81234,
    thresholds 50000/10/10) memlock 183412 kB (limit unlimited) SCHED_OTHER nice -5``."""
    s = snapshot()
    aff = format_cpus(s["affinity"])
    allowed = s["allowed_before_pin"]
    cpu = f"cpu {aff}" + (f" (allowed {format_cpus(allowed)})" if allowed else "")
    gc_txt = ("gc " + ("enabled" if s["gc_enabled"] else "DISABLED")
              + f"(frozen {s['gc_frozen']}, thresholds {'/'.join(map(str, s['gc_thresholds']))})")
    mem = f"memlock {s['vm_locked_kb'] or 0} kB (limit {s['memlock_limit']})"
    bp = s["busy_poll_us"]
    return " ".join([
        cpu,
        f"isolated {s['isolated'] or 'none'}",
        f"nohz_full {s['nohz_full'] or 'none'}",
        f"governor {s['governor'] or '?'}",
        f"thp {s['thp'] or '?'}",
        f"busy_poll {bp + 'us' if bp not in (None, '0') else 'off'}",
        gc_txt,
        mem,
        f"{s['sched'] or '?'} nice {s['nice']}",
    ])
