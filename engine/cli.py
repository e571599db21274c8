"""The `engine` command: the user's interface (DESIGN.md, "The `engine` command").

Every subcommand turns the errors it expects (bad options, bad config, bad data)
into one line on stderr naming what was wrong and exit code 2; no traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys

from engine.errors import EngineError

EXIT_USAGE = 2


def _cmd_demo(args: argparse.Namespace) -> int:
    from engine import demo
    if not 1_000 <= args.events <= 50_000_000:
        raise EngineError(f"--events {args.events}: allowed 1000..50000000")
    if not [s for s in args.symbols.split(",") if s.strip()]:
        raise EngineError("--symbols: give at least one symbol, e.g. AAPL,MSFT")
    return demo.main(seed=args.seed, events=args.events, symbols=args.symbols.split(","))


def _cmd_venue(args: argparse.Namespace) -> int:
    from gateway import venue
    try:
        options = venue.VenueOptions(
            host=args.host, fix_port=args.fix_port, fix_app=args.fix_app,
            sender_comp_id=args.sender_comp_id, target_comp_id=args.target_comp_id,
            validate=not args.no_validate, reset_on_logon=not args.no_reset_on_logon,
            store_path=args.fix_store)
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    return venue.main_serve(options, loop=args.loop)


def _cmd_bench(args: argparse.Namespace) -> int:
    from engine import bench
    return bench.main(json_path=args.json, quick=args.quick, only=args.only)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine", description="Backtest-to-live trading engine with a Cython hot path.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="the main job on embedded defaults (see README)",
                          description="Replay a seeded synthetic market through the compiled core "
                                      "(L2 books, L3 matching book, pre-trade risk kernel) and print "
                                      "what happened.")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the synthetic market (default 7)")
    demo.add_argument("--events", type=int, default=200_000,
                      help="synthetic order events per symbol (default 200000)")
    demo.add_argument("--symbols", default="AAPL,MSFT", help="comma-separated symbols (default AAPL,MSFT)")
    demo.set_defaults(func=_cmd_demo)

    from gateway import venue as venue_mod
    venue = sub.add_parser("venue", help="run the venue simulator",
                           description="Run the venue simulator on loopback. Defaults bind to 127.0.0.1.")
    venue.add_argument("--host", default=venue_mod.DEFAULT_HOST,
                       help=f"address to bind (default {venue_mod.DEFAULT_HOST})")
    venue.add_argument("--fix-port", type=int, default=venue_mod.DEFAULT_FIX_PORT,
                       help=f"FIX 4.4 acceptor port; 0 picks a free one and prints it "
                            f"(default {venue_mod.DEFAULT_FIX_PORT})")
    venue.add_argument("--fix-app", default="echo", choices=venue_mod.FIX_APPS,
                       help="application behind the FIX acceptor: echo = the reflector of the FIX "
                            "acceptance tests (default echo)")
    venue.add_argument("--sender-comp-id", default=venue_mod.DEFAULT_VENUE_COMP_ID,
                       help=f"our SenderCompID (default {venue_mod.DEFAULT_VENUE_COMP_ID})")
    venue.add_argument("--target-comp-id", default=venue_mod.DEFAULT_ENGINE_COMP_ID,
                       help=f"the counterparty's CompID (default {venue_mod.DEFAULT_ENGINE_COMP_ID})")
    venue.add_argument("--no-validate", action="store_true",
                       help="do not validate inbound FIX against the FIX 4.4 dictionary")
    venue.add_argument("--no-reset-on-logon", action="store_true",
                       help="keep sequence numbers across logons (default: a Logon resets them)")
    venue.add_argument("--fix-store", metavar="FILE", default=None,
                       help="SQLite file that persists FIX sequence numbers and sent messages")
    venue.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"),
                       help="event loop (default uvloop)")
    venue.set_defaults(func=_cmd_venue)

    bench = sub.add_parser("bench", help="latency benchmarks, printed and written as JSON")
    bench.add_argument("--json", metavar="FILE", default=None, help="write the results as JSON here")
    bench.add_argument("--quick", action="store_true", help="short run (under a minute; for CI smoke tests)")
    bench.add_argument("--only", default=None, help="comma-separated benchmark modules (book,risk,...)")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except EngineError as exc:
        print(f"engine {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
