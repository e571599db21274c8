"""Event-loop fixtures for socket tests: the same test on asyncio and on uvloop.

tests/conftest.py loads them as a pytest plugin, so every test module can ask for
`loop`, `event_loop_kind` or `loop_runner` without importing them.

`loop_runner(coro_fn, timeout=...)` runs `coro_fn()` on a fresh loop of the kind the
test is parametrized with and fails the test on any error that reached the loop's
exception handler (a callback that raised, a task whose exception nobody retrieved),
even when the coroutine itself finished fine (STYLE.md rule 12).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

LOOP_KINDS = ("asyncio", "uvloop")


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if kind == "asyncio":
        return asyncio.new_event_loop()
    raise ValueError(f"unknown loop kind {kind!r}")


def run_on(kind: str, coro_fn: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Run `coro_fn()` on a new `kind` loop; fail on unhandled loop exceptions."""
    errors: list[dict] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        errors.append(context)
        loop.default_exception_handler(context)

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(handler)
        return await asyncio.wait_for(coro_fn(), timeout)

    with asyncio.Runner(loop_factory=lambda: new_loop(kind)) as runner:
        result = runner.run(main())
    if errors:
        pytest.fail("unhandled exception(s) on the event loop: " + "; ".join(
            f"{c.get('message')}: {c.get('exception')!r}" for c in errors))
    return result


@pytest.fixture(params=LOOP_KINDS)
def event_loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def loop_runner(event_loop_kind: str) -> Callable[..., Any]:
    def runner(coro_fn: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
        return run_on(event_loop_kind, coro_fn, timeout)
    return runner


@pytest.fixture(params=LOOP_KINDS)
def loop(request):
    """A fresh asyncio or uvloop loop per test (both kinds); any unhandled loop
    exception fails the test."""
    lp = new_loop(request.param)
    errors: list[dict] = []
    lp.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    asyncio.set_event_loop(lp)
    try:
        yield lp
        pending = [t for t in asyncio.all_tasks(lp) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            lp.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        lp.run_until_complete(lp.shutdown_asyncgens())
    finally:
        lp.close()
        asyncio.set_event_loop(None)
    if errors:
        pytest.fail(f"unhandled exception(s) in the {request.param} loop: {errors}")
