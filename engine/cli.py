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
    from gateway import fix_venue, venue
    try:
        default_tick, tick_sizes = venue.parse_tick_sizes(args.tick_size or [])
        targets = fix_venue.venue_accounts(args.target_comp_id or [venue.DEFAULT_ENGINE_COMP_ID])
        symbols = tuple(s.strip() for s in args.symbols.split(",") if s.strip())
        halts = tuple(s.strip() for v in (args.fault_halt or []) for s in v.split(",") if s.strip())
        reset = None
        if args.reset_on_logon and args.no_reset_on_logon:
            raise ValueError("--reset-on-logon and --no-reset-on-logon contradict each other")
        if args.reset_on_logon:
            reset = True
        elif args.no_reset_on_logon:
            reset = False
        options = venue.VenueOptions(
            host=args.host, fix_port=args.fix_port, fix_app=args.fix_app,
            sender_comp_id=args.sender_comp_id, target_comp_ids=targets,
            validate=not args.no_validate, reset_on_logon=reset, store_path=args.fix_store,
            symbols=symbols, tick_sizes=tick_sizes, default_tick_size=default_tick, seed=args.seed,
            warmup_events=args.warmup_events, replay_events_per_tick=args.replay_events_per_tick,
            replay_tick_ms=args.replay_tick_ms, max_order_qty=args.max_order_qty,
            statement_path=args.statement, statement_interval_s=args.statement_interval,
            control_port=args.control_port, cancel_on_disconnect=args.cancel_on_disconnect,
            cod_window_ms=args.cod_window_ms, username=args.username, password_env=args.password_env,
            heartbeat_interval=args.heartbeat,
            fault_reject_rate=args.fault_reject_rate, fault_reject_seed=args.fault_reject_seed,
            fault_ack_delay_ms=args.fault_ack_delay_ms, fault_halt=halts,
            fault_drop_after_orders=args.fault_drop_after_orders)
        options.password()   # a missing password variable is an error now, not at the first Logon
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
    venue = sub.add_parser(
        "venue", help="run the venue simulator",
        description="Run the venue simulator: a FIX 4.4 acceptor in front of an exchange with one L3 "
                    "matching book per symbol, resting liquidity from a seeded synthetic market, one "
                    "account per counterparty CompID, a broker statement and fault injection. Every "
                    "listening socket binds to 127.0.0.1 unless told otherwise. The first line printed is "
                    "'venue: FIX acceptor (APP) listening on HOST:PORT ...'.")
    net = venue.add_argument_group("network and FIX sessions")
    net.add_argument("--host", default=venue_mod.DEFAULT_HOST, help="address the FIX acceptor binds (default %(default)s)")
    net.add_argument("--fix-port", type=int, default=venue_mod.DEFAULT_FIX_PORT,
                     help="FIX 4.4 acceptor port; 0 picks a free one and prints it (default %(default)s)")
    net.add_argument("--fix-app", default="venue", choices=venue_mod.FIX_APPS,
                     help="application behind the FIX acceptor: venue = order entry into the simulated "
                          "exchange; echo = the reflector of the FIX acceptance tests (default %(default)s)")
    net.add_argument("--sender-comp-id", default=venue_mod.DEFAULT_VENUE_COMP_ID, help="our SenderCompID (default %(default)s)")
    net.add_argument("--target-comp-id", action="append", metavar="COMPID[,COMPID...]",
                     help="counterparty CompID(s); repeat or comma-separate for several accounts, each its "
                          f"own session and account (default {venue_mod.DEFAULT_ENGINE_COMP_ID}; echo: exactly one)")
    net.add_argument("--no-validate", action="store_true",
                     help="do not validate inbound FIX against the FIX 4.4 dictionary")
    net.add_argument("--reset-on-logon", action="store_true",
                     help="a Logon resets both sequence numbers to 1 (default for --fix-app echo)")
    net.add_argument("--no-reset-on-logon", action="store_true",
                     help="keep sequence numbers across logons (default for --fix-app venue: reports "
                          "queued while an account is away are resent after its next Logon)")
    net.add_argument("--fix-store", metavar="FILE", default=None,
                     help="SQLite file that persists FIX sequence numbers and sent messages (default: memory)")
    net.add_argument("--heartbeat", type=int, default=30, metavar="SECONDS",
                     help="HeartBtInt until the counterparty's Logon says otherwise (default %(default)s)")
    net.add_argument("--username", default=None,
                     help="with --password-env: the Username (553) every account must send "
                          "(default: the account's own CompID)")
    net.add_argument("--password-env", metavar="VAR", default=None,
                     help="require Password (554) = the value of this environment variable (never logged)")
    net.add_argument("--cancel-on-disconnect", nargs="?", const="disconnect", default="off",
                     choices=("off", "disconnect", "always"),
                     help="cancel an account's open orders when its session ends: 'disconnect' (the bare "
                          "flag) = without a Logout exchange, 'always' = also after a Logout; the Canceled "
                          "reports are delivered at the next Logon (default %(default)s)")
    net.add_argument("--cod-window-ms", type=float, default=0.0,
                     help="cancel-on-disconnect waits this many ms for the account to log on again (default 0)")
    net.add_argument("--control-port", type=int, default=None, metavar="PORT",
                     help="HTTP control endpoint on 127.0.0.1 (POST /faults JSON, GET /faults, "
                          "GET /statement, GET /status); 0 picks a free port; default: none")
    net.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"), help="event loop (default %(default)s)")
    mkt = venue.add_argument_group("exchange and market")
    mkt.add_argument("--symbols", default=",".join(venue_mod.DEFAULT_SYMBOLS),
                     help="comma-separated symbols; each gets a seeded synthetic market (default %(default)s)")
    mkt.add_argument("--tick-size", action="append", metavar="[SYMBOL=]SIZE",
                     help="tick size (price of one tick) for every symbol, or SYMBOL=SIZE for one; "
                          "repeatable (default 0.01)")
    mkt.add_argument("--seed", type=int, default=7, help="seed of the synthetic markets, symbol i gets seed+i (default %(default)s)")
    mkt.add_argument("--warmup-events", type=int, default=2_000,
                     help="synthetic events applied per symbol at start, so there is a book to trade against "
                          "(default %(default)s)")
    mkt.add_argument("--replay-events-per-tick", type=int, default=20,
                     help="synthetic events applied per symbol on each replay tick; 0 = a frozen book "
                          "(default %(default)s)")
    mkt.add_argument("--replay-tick-ms", type=float, default=10.0, help="replay timer interval in ms (default %(default)s)")
    mkt.add_argument("--max-order-qty", type=int, default=venue_mod.ex.DEFAULT_MAX_ORDER_QTY,
                     help="orders above this many lots are rejected (default %(default)s)")
    mkt.add_argument("--statement", metavar="FILE", default=None,
                     help="broker statement CSV (fills and end positions per account), written on a timer "
                          "and at shutdown")
    mkt.add_argument("--statement-interval", type=float, default=5.0, metavar="SECONDS",
                     help="how often the statement is rewritten (default %(default)s)")
    flt = venue.add_argument_group("fault injection (also switchable at run time via --control-port)")
    flt.add_argument("--fault-reject-rate", type=float, default=0.0, metavar="RATE",
                     help="reject this share of new orders, 0..1, 1 = all (default 0)")
    flt.add_argument("--fault-reject-seed", type=int, default=0, help="seed of the reject draws (default %(default)s)")
    flt.add_argument("--fault-ack-delay-ms", type=float, default=0.0, metavar="MS",
                     help="delay every execution report by this many milliseconds (default 0)")
    flt.add_argument("--fault-halt", action="append", metavar="SYMBOL",
                     help="start with SYMBOL halted (repeatable or comma-separated)")
    flt.add_argument("--fault-drop-after-orders", type=int, default=0, metavar="N",
                     help="abort the order-entry connection (no Logout) after N order messages; 0 = never "
                          "(default 0)")
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
