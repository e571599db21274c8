"""Instrumentation for bench.loopback_burst, loaded into `engine run` only when that
probe puts this directory first on its PYTHONPATH and sets ENGINE_PROBE_WRITES.

It wraps ``gateway.fix_session.FixSession._write`` to note, for every NewOrderSingle
written, ``time.perf_counter_ns()`` right after the write returned -- CLOCK_MONOTONIC,
the same clock as the measuring process's -- and saves them (int64, .npy) to the path
in ENGINE_PROBE_WRITES when the process exits. The wrapper costs one Python call per
write (~0.3 us); nothing else in the engine changes. Not for production use.
"""
import atexit
import os

_PATH = os.environ.get("ENGINE_PROBE_WRITES")

if _PATH:
    import builtins
    import time

    _stamps: list[int] = []
    _import = builtins.__import__

    def _install() -> None:
        from gateway import fix_session
        write = fix_session.FixSession._write
        clock = time.perf_counter_ns

        def probed_write(self, data: bytes) -> None:
            write(self, data)
            n = data.count(b"\x0135=D\x01")
            if n:
                t = clock()
                _stamps.extend([t] * n)
        fix_session.FixSession._write = probed_write

    def _probe_import(name, *args, **kwargs):
        module = _import(name, *args, **kwargs)
        if name == "engine.runtime" and builtins.__import__ is _probe_import:
            builtins.__import__ = _import          # once: the session class is loaded by now
            _install()
        return module

    builtins.__import__ = _probe_import

    def _save() -> None:
        import numpy as np
        np.save(_PATH, np.array(_stamps, dtype=np.int64))
    atexit.register(_save)
