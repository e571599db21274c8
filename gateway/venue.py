"""The venue simulator's network side: which acceptors run, on which ports.

`serve(options)` starts them and runs until cancelled. The FIX acceptor's `echo`
application is the reflector of QuickFIX's acceptance tests.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass

from gateway.fix_apps import EchoApplication
from gateway.fix_session import FixSession, SessionConfig
from gateway.fix_store import MemoryStore, SqliteStore
from gateway.fix_transport import FixAcceptor
from gateway.loops import run

log = logging.getLogger("gateway.venue")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_FIX_PORT = 9878
DEFAULT_VENUE_COMP_ID = "VENUE"
DEFAULT_ENGINE_COMP_ID = "ENGINE"
FIX_APPS = ("echo",)


@dataclass(frozen=True)
class VenueOptions:
    host: str = DEFAULT_HOST
    fix_port: int = DEFAULT_FIX_PORT
    fix_app: str = "echo"
    sender_comp_id: str = DEFAULT_VENUE_COMP_ID
    target_comp_id: str = DEFAULT_ENGINE_COMP_ID
    validate: bool = True
    reset_on_logon: bool = True
    store_path: str | None = None      # SQLite file for sequence numbers; None keeps them in memory

    def __post_init__(self) -> None:
        if not 0 <= self.fix_port <= 65535:
            raise ValueError(f"--fix-port {self.fix_port}: allowed 0..65535")
        if self.fix_app not in FIX_APPS:
            raise ValueError(f"--fix-app {self.fix_app!r}: choose one of {', '.join(FIX_APPS)}")


def build_fix_session(options: VenueOptions) -> FixSession:
    config = SessionConfig(sender_comp_id=options.sender_comp_id, target_comp_id=options.target_comp_id,
                           reset_on_logon=options.reset_on_logon, validate=options.validate)
    if options.store_path:
        store = SqliteStore(options.store_path, f"{options.sender_comp_id}-{options.target_comp_id}")
    else:
        store = MemoryStore()
    return FixSession(config, store=store, application=EchoApplication())


async def serve(options: VenueOptions, ready: asyncio.Future | None = None) -> None:
    session = build_fix_session(options)
    acceptor = FixAcceptor([session])
    port = await acceptor.start(options.host, options.fix_port)
    # One parseable line, flushed: tests and scripts started with --fix-port 0 read the port here.
    print(f"venue: FIX acceptor ({options.fix_app}) listening on {options.host}:{port} "
          f"as {options.sender_comp_id} for {options.target_comp_id}", flush=True)
    if ready is not None and not ready.done():
        ready.set_result(port)
    try:
        await asyncio.Event().wait()
    finally:
        await acceptor.stop()


def main_serve(options: VenueOptions, loop: str = "uvloop") -> int:
    try:
        run(serve(options), loop=loop)
    except KeyboardInterrupt:
        print("venue: stopped", file=sys.stderr)
    return 0
