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
    if args.core:
        from engine import demo
        if not 1_000 <= args.events <= 50_000_000:
            raise EngineError(f"--events {args.events}: allowed 1000..50000000")
        if not [s for s in args.symbols.split(",") if s.strip()]:
            raise EngineError("--symbols: give at least one symbol, e.g. AAPL,MSFT")
        return demo.main(seed=args.seed, events=args.events, symbols=args.symbols.split(","))
    from pathlib import Path

    from engine import pipeline
    from gateway.loops import run
    if not 2 <= args.stage_seconds <= 3600:
        raise EngineError(f"--stage-seconds {args.stage_seconds}: allowed 2..3600")
    return run(pipeline.pipeline(args.seed, args.stage_seconds, Path(args.out)), loop=args.loop)


def _cmd_venue(args: argparse.Namespace) -> int:
    from gateway import fix_venue, venue
    try:
        default_tick, tick_sizes = venue.parse_tick_sizes(args.tick_size or [])
        targets = fix_venue.venue_accounts(args.target_comp_id or [venue.DEFAULT_ENGINE_COMP_ID])
        symbols = tuple(s.strip() for s in args.symbols.split(",") if s.strip())
        data_events = None
        if args.data:
            # any format the backtest reads (quotes, L2, L3, trades CSV/JSON, the engine's
            # Parquet); the file names the symbol and fixes the tick size
            from engine.tickdata import load_tick_data
            data = load_tick_data(args.data)
            symbols = (data.symbol,)
            tick_sizes = ((data.symbol, data.tick_size),)
            data_events = data.events
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
            fault_drop_after_orders=args.fault_drop_after_orders,
            fault_feed_drop_rate=args.fault_feed_drop_rate, fault_feed_reorder_rate=args.fault_feed_reorder_rate,
            fault_feed_stopped=args.fault_feed_stop,
            data_events=data_events,
            itch_request_port=None if args.no_itch else args.itch_request_port, itch_session=args.itch_session,
            ouch_port=args.ouch_port, ouch_user=args.ouch_user, ouch_password_env=args.ouch_password_env)
        options.password()   # a missing password variable is an error now, not at the first Logon
    except ValueError as exc:       # DataError and ReplayFileError are ValueErrors too
        raise EngineError(str(exc)) from exc
    return venue.main_serve(options, loop=args.loop)


def _run_options(args: argparse.Namespace):
    from engine.runtime import RunOptions
    if args.admin_port is not None and not 0 <= args.admin_port <= 65535:
        raise EngineError(f"--admin-port {args.admin_port}: allowed 0..65535")
    if getattr(args, "duration", None) is not None and args.duration <= 0:
        raise EngineError(f"--duration {args.duration}: must be > 0 seconds")
    return RunOptions(config_path=args.config, stage=args.stage, admin_port=args.admin_port,
                      duration_s=getattr(args, "duration", None), force=getattr(args, "force", False),
                      cpu=getattr(args, "cpu", None), gc_policy=getattr(args, "gc_policy", "freeze"),
                      lock_memory=getattr(args, "lock_memory", False),
                      busy_poll=getattr(args, "busy_poll", False))


def _cmd_run(args: argparse.Namespace) -> int:
    from engine import runtime
    from gateway.loops import run
    return run(runtime.run(_run_options(args)), loop=args.loop)


def _cmd_preflight(args: argparse.Namespace) -> int:
    from engine import runtime
    from gateway.loops import run
    return run(runtime.preflight_main(_run_options(args)), loop=args.loop)


def _cmd_config(args: argparse.Namespace) -> int:
    from engine.config import check_main
    return check_main(args.check)


def _store_path(args: argparse.Namespace) -> str:
    from pathlib import Path

    from engine.config import load_config
    if args.store:
        return args.store
    cfg = load_config(args.config, check_secrets=False)
    return str(Path(cfg.storage.directory) / "evidence.db")


def _cmd_promote(args: argparse.Namespace) -> int:
    from engine.promotion import promote_main
    return promote_main(_store_path(args), args.to, dry_run=args.dry_run)


def _cmd_report(args: argparse.Namespace) -> int:
    from engine.report import report_main
    return report_main(_store_path(args), args.out)


def _admin_target(args: argparse.Namespace) -> tuple[str, int, str | None]:
    from engine import admin
    return args.host, args.port, admin.resolve_token(None)


def _cmd_status(args: argparse.Namespace) -> int:
    from engine import admin
    host, port, _ = _admin_target(args)
    return admin.status_main(host, port)


def _cmd_kill(args: argparse.Namespace) -> int:
    from engine import admin
    host, port, token = _admin_target(args)
    if args.reset:
        return admin.kill_reset_main(host, port, token=token)
    return admin.kill_main(host, port, token=token, flatten=args.flatten)


def _cmd_reconcile(args: argparse.Namespace) -> int:
    from engine import admin
    host, port, token = _admin_target(args)
    return admin.reconcile_main(host, port, token=token, statement=args.statement)


def _cmd_backtest(args: argparse.Namespace) -> int:
    from engine.backtest import backtest_main
    if args.sample_interval <= 0:
        raise EngineError(f"--sample-interval {args.sample_interval}: must be > 0 seconds")
    return backtest_main(args.config, args.data, args.out, args.progress, symbol=args.symbol,
                         sample_interval_s=args.sample_interval)


def _cmd_convert(args: argparse.Namespace) -> int:
    from engine.backtest import convert_main
    return convert_main(args.data, args.out, args.config, symbol=args.symbol)


def _cmd_audit(args: argparse.Namespace) -> int:
    from engine.audit import verify_main
    return verify_main(args.journal)


def _cmd_backup(args: argparse.Namespace) -> int:
    from engine.backup import backup_main
    return backup_main(args.store, args.journal, args.out)


def _cmd_bench(args: argparse.Namespace) -> int:
    from engine import bench
    return bench.main(json_path=args.json, quick=args.quick, only=args.only)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine", description="Backtest-to-live trading engine with a Cython hot path.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="the main job on embedded defaults (see README)",
                          description="The deployment pipeline on embedded defaults: starts the venue "
                                      "simulator on loopback with a seeded synthetic market, runs the sample "
                                      "strategy through backtest -> paper -> shadow -> small with the "
                                      "promotion gate between stages, drills the kill switch in small and "
                                      "prints the stage report. With --core: only the compiled-core replay.")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the synthetic market (default 7)")
    demo.add_argument("--stage-seconds", type=float, default=8.0,
                      help="duration of each venue stage, compressed for the demo (default 8)")
    demo.add_argument("--out", default="var/demo", help="output directory, recreated (default %(default)s)")
    demo.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"), help="event loop")
    demo.add_argument("--core", action="store_true",
                      help="instead: replay the synthetic market through the compiled core only")
    demo.add_argument("--events", type=int, default=200_000,
                      help="with --core: synthetic order events per symbol (default 200000)")
    demo.add_argument("--symbols", default="AAPL,MSFT", help="with --core: comma-separated symbols")
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
    mkt.add_argument("--data", metavar="FILE", default=None,
                     help="replay this market-data file as resting liquidity instead of the synthetic market: "
                          "quotes, trades, L2 or L3 data in the formats of ../shared/data/README.md, or the "
                          "engine's Parquet tick format (engine convert); it names the symbol and the tick "
                          "size; the file loops")
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
    md = venue.add_argument_group("market data feed and OUCH order entry")
    md.add_argument("--itch-request-port", type=int, default=venue_mod.DEFAULT_ITCH_REQUEST_PORT, metavar="PORT",
                    help="UDP port of the ITCH 5.0/MoldUDP64 feed's subscription and retransmission service; "
                         "engines subscribe here (default %(default)s; 0 picks one and prints it)")
    md.add_argument("--itch-session", default=venue_mod.DEFAULT_ITCH_SESSION,
                    help="MoldUDP64 session name (default %(default)s)")
    md.add_argument("--no-itch", action="store_true", help="publish no market data feed")
    md.add_argument("--ouch-port", type=int, default=None, metavar="PORT",
                    help="OUCH 4.2 over SoupBinTCP order entry port (default: none; 0 picks one)")
    md.add_argument("--ouch-user", default=venue_mod.DEFAULT_OUCH_USER,
                    help="SoupBinTCP username, its own exchange account (default %(default)s)")
    md.add_argument("--ouch-password-env", default=None, metavar="VAR",
                    help="environment variable holding the OUCH password (required with --ouch-port)")
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
    flt.add_argument("--fault-feed-drop-rate", type=float, default=0.0, metavar="RATE",
                     help="drop this share of ITCH feed packets, 0..1 (recovered by retransmission; default 0)")
    flt.add_argument("--fault-feed-reorder-rate", type=float, default=0.0, metavar="RATE",
                     help="send this share of ITCH feed packets one packet late, 0..1 (default 0)")
    flt.add_argument("--fault-feed-stop", action="store_true",
                     help="start with the feed stopped (nothing published; switch on at run time with "
                          "POST /faults {\"feed_stopped\": false})")
    venue.set_defaults(func=_cmd_venue)

    stages = ("paper", "shadow", "small", "live")
    for name, helptext, func in (("run", "run the engine in a stage against a venue", _cmd_run),
                                 ("preflight", "run the pre-flight checks; non-zero exit if any fails",
                                  _cmd_preflight)):
        p = sub.add_parser(name, help=helptext, description=helptext + ". Without --config the built-in "
                           "sample configuration is used (venue simulator defaults on 127.0.0.1).")
        p.add_argument("--config", metavar="FILE", default=None, help="TOML configuration (default: built-in sample)")
        p.add_argument("--stage", choices=stages, default=None, help="stage (default: the config's)")
        p.add_argument("--admin-port", type=int, default=None, metavar="PORT",
                       help="admin endpoint port on 127.0.0.1 (/metrics, /healthz, /status, POST /kill)")
        p.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"), help="event loop")
        if name == "run":
            p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                           help="stop by itself after this long (default: run until SIGINT/SIGTERM)")
            p.add_argument("--force", action="store_true",
                           help="run a stage not reached by promotion (recorded as a forced run)")
            p.add_argument("--cpu", type=int, default=None, metavar="N",
                           help="pin the event loop's process to CPU N (see deploy/TUNING.md)")
            p.add_argument("--gc", dest="gc_policy", choices=("default", "freeze", "disabled"), default="freeze",
                           help="garbage collector policy after start-up: freeze moves start-up objects out of "
                                "the collector's generations (default %(default)s)")
            p.add_argument("--lock-memory", action="store_true",
                           help="mlockall the process memory (no page faults on the hot path)")
            p.add_argument("--busy-poll", action="store_true",
                           help="keep the event loop polling instead of sleeping: a packet is picked up "
                                "without a thread wake-up, at the cost of a whole CPU (use with --cpu)")
        p.set_defaults(func=func)

    bt = sub.add_parser("backtest", help="replay historical data through the strategy; metrics and a report",
                        description="Replay quotes, trades, L2 or L3 data (CSV, Bitfinex L3 JSON, the engine's "
                                    "Parquet tick format) through the same strategy, risk and simulated "
                                    "execution code as paper trading, in event time.")
    bt.add_argument("--config", metavar="FILE", default=None,
                    help="TOML configuration (default: the sample moving-average strategy on the file's instrument)")
    bt.add_argument("--data", metavar="FILE", action="append", required=True,
                    help="market data file; repeat to merge files in time")
    bt.add_argument("--out", metavar="DIR", default=None,
                    help="write metrics.json, fills.csv, equity.csv and report.html here")
    bt.add_argument("--symbol", default=None, help="the instrument (a symbol of a multi-symbol file)")
    bt.add_argument("--sample-interval", type=float, default=1.0, metavar="SECONDS",
                    help="equity sampling interval for the ratios (default %(default)s)")
    prog = bt.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="progress bar (default: only on a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    bt.set_defaults(func=_cmd_backtest)

    cv = sub.add_parser("convert", help="a market-data file -> the engine's Parquet tick format")
    cv.add_argument("--data", required=True, metavar="FILE")
    cv.add_argument("--out", required=True, metavar="FILE")
    cv.add_argument("--config", default=None, metavar="FILE")
    cv.add_argument("--symbol", default=None)
    cv.set_defaults(func=_cmd_convert)

    cfg = sub.add_parser("config", help="validate a configuration file without running")
    cfg.add_argument("--check", metavar="FILE", required=True, help="the TOML file to validate")
    cfg.set_defaults(func=_cmd_config)

    for name, helptext, func in (("promote", "evaluate the promotion criteria on recorded evidence", _cmd_promote),
                                 ("report", "stage comparison report (HTML with PNG plots, and a table)",
                                  _cmd_report)):
        p = sub.add_parser(name, help=helptext, description=helptext + ".")
        p.add_argument("--config", metavar="FILE", default=None, help="configuration (for the storage directory)")
        p.add_argument("--store", metavar="FILE", default=None, help="evidence database (default: storage/evidence.db)")
        if name == "promote":
            p.add_argument("--to", required=True, choices=("paper", "shadow", "small", "live"),
                           help="the stage to promote to")
            p.add_argument("--dry-run", action="store_true", help="evaluate without recording the decision")
        else:
            p.add_argument("--out", metavar="DIR", default="report", help="output directory (default %(default)s)")
        p.set_defaults(func=func)

    from engine import admin as admin_mod
    for name, helptext, func in (("status", "status of a running engine", _cmd_status),
                                 ("kill", "trip the kill switch of a running engine (token required)", _cmd_kill),
                                 ("reconcile", "reconcile a running engine with the venue (token required)",
                                  _cmd_reconcile)):
        p = sub.add_parser(name, help=helptext, description=helptext + f". The token is read from "
                           f"${admin_mod.TOKEN_ENV}; it is never taken on the command line.")
        p.add_argument("--host", default=admin_mod.DEFAULT_HOST, help="admin host (default %(default)s)")
        p.add_argument("--port", type=int, default=8787, help="admin port (default %(default)s)")
        if name == "reconcile":
            p.add_argument("--statement", metavar="FILE", default=None,
                           help="a broker statement CSV (the venue's format: record,account,symbol,...) to "
                                "reconcile against instead of the configured venue statement")
        if name == "kill":
            p.add_argument("--flatten", action="store_true", help="also flatten positions")
            p.add_argument("--reset", action="store_true", help="reset a tripped (latched) kill switch")
        p.set_defaults(func=func)

    audit = sub.add_parser("audit", help="audit trail: verify the journal's hash chain")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_sub.add_parser("verify", help="check every record's hash chains to the one before; "
                                  "names the first broken record")
    verify.add_argument("journal", nargs="?", default="var/engine/journal",
                        help="journal directory or segment file (default %(default)s)")
    verify.set_defaults(func=_cmd_audit)

    backup = sub.add_parser("backup", help="online backup of the SQLite store plus a copy of the journal")
    backup.add_argument("--store", default="var/engine/evidence.db", help="SQLite database (default %(default)s)")
    backup.add_argument("--journal", default="var/engine/journal", help="journal directory (default %(default)s)")
    backup.add_argument("--out", required=True, metavar="DIR", help="backup directory")
    backup.set_defaults(func=_cmd_backup)

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
