"""Instrumentation for bench.loopback_burst, loaded into `engine run` only when that
probe puts this directory first on its PYTHONPATH and sets ENGINE_PROBE_WRITES.

It wraps ``gateway.fix_session.FixSession._write`` to note, for every NewOrderSingle
written, its ClOrdID and ``time.perf_counter_ns()`` right after the write returned --
CLOCK_MONOTONIC, the same clock as the measuring process's -- and saves them (.npz:
``t`` int64, ``cl_ord_id`` bytes) to the path in ENGINE_PROBE_WRITES when the process
exits. The wrapper costs one Python call and a regex per write (~1 us, after the
bytes left); nothing else in the engine changes. Not for production use.
"""
import atexit
import os

_PATH = os.environ.get("ENGINE_PROBE_WRITES")

if _PATH:
    import builtins
    import re
    import sys
    import time

    _stamps: list[int] = []
    _ids: list[bytes] = []
    _import = builtins.__import__
    _NEW_ORDER_ID = re.compile(rb"\x0135=D\x01.*?\x0111=([^\x01]*)\x01", re.DOTALL)

    def _install(fix_session) -> None:
        write = fix_session.FixSession._write
        clock = time.perf_counter_ns

        def probed_write(self, data: bytes) -> None:
            write(self, data)
            if b"\x0135=D\x01" in data:
                t = clock()
                for cl in _NEW_ORDER_ID.findall(data):
                    _stamps.append(t)
                    _ids.append(cl)
        fix_session.FixSession._write = probed_write

    def _probe_import(name, *args, **kwargs):
        module = _import(name, *args, **kwargs)
        fix_session = sys.modules.get("gateway.fix_session")
        # (once the class exists: the module may still be importing its own imports)
        if getattr(fix_session, "FixSession", None) is not None and builtins.__import__ is _probe_import:
            builtins.__import__ = _import          # once, whichever import brought it in
            _install(fix_session)
        return module

    builtins.__import__ = _probe_import

    def _save() -> None:
        import numpy as np
        np.savez(_PATH, t=np.array(_stamps, dtype=np.int64), cl_ord_id=np.array(_ids, dtype="S40"))
    atexit.register(_save)
