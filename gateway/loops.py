"""Event-loop selection: uvloop in production, plain asyncio as the baseline and in tests."""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

LOOPS = ("uvloop", "asyncio")


def run(main: Coroutine[Any, Any, Any], loop: str = "uvloop") -> Any:
    """Run `main` to completion on the named event loop."""
    if loop == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    if loop == "asyncio":
        with asyncio.Runner() as runner:
            return runner.run(main)
    raise ValueError(f"unknown event loop {loop!r}; choose one of {', '.join(LOOPS)}")
