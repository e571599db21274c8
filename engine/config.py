"""Configuration: one TOML file -> frozen dataclasses, validated.

Every error is a `ConfigError` naming the file, the key (dotted path) and what is
allowed; unknown keys are errors too (a typo must not silently fall back to a
default). Decimal values (prices, quantities, money) may be written as strings
("0.01", recommended), integers or floats (taken through their shortest repr); NaN
and infinities are refused; a quantity or price limit that is not a whole multiple of
the instrument's lot or tick size is refused, as is a money amount that is not a
whole multiple of the account money unit (see `engine.instruments`). Relative paths
are relative to the current directory.

Secrets are never in the file: ``password_env = "VAR"`` / ``password_file = "path"``
(venue) and ``token_env`` / ``token_file`` (admin endpoint) name where they are; a
clear ``password`` or ``token`` key is an error. They are read only when
`Secret.reveal` is called (at load time only to check that they exist, for the stages
that trade on a venue), and never appear in ``repr``/``str`` of the config.

Layout (see engine/sample_config.toml for a complete, commented file)::

    stage = "backtest"            # backtest | paper | shadow | small | live
    account = "SIM-1"
    capital = "100000"            # money; base of returns and drawdown %
    [[instruments]]               symbol, tick_size, lot_size, contract_multiplier,
                                  price_scale, size_scale
    [strategy]                    strategy = "module:Class", [strategy.params]
    [venue]                       protocol fix|ouch, host, port, sender_comp_id,
                                  target_comp_id, username, password_env|password_file, heartbeat_s
    [orders]                      status_timeout_ms, max_status_queries
    [risk]                        account limits, daily loss, drawdown, VaR
    [risk.capital_limit]          money per stage (small: required when stage = small)
    [risk.instruments.SYMBOL]     per-instrument limits (required for every instrument)
    [simulation]                  fill model, latency, commissions, mark, seed
    [killswitch]                  state_file, cancel_timeout_ms, flatten_on_trip
    [monitoring]                  admin_host, admin_port, token_env|token_file
    [storage]                     directory
    [promotion.*]                 stage-gate criteria (defaults from DESIGN.md)
"""
from __future__ import annotations

import importlib
import ipaddress
import math
import os
import re
import socket
import stat
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engine.errors import ConfigError
from engine.instruments import Instrument, money_unit, to_decimal

__all__ = [
    "Stage", "Secret", "StrategyConfig", "VenueConfig", "OrdersConfig", "InstrumentRisk", "RiskConfig",
    "SimulationConfig", "KillSwitchConfig", "MonitoringConfig", "StorageConfig",
    "BacktestToPaper", "PaperToShadow", "ShadowToSmall", "SmallToLive", "PromotionConfig", "Config",
    "load_config", "parse_config", "default_config_path", "check_main", "check_port_free",
    "ensure_port_free", "import_strategy",
]

NOTIONAL_LIMIT_MAX = 2**63 - 2   # core_ext.risk.RISK_NOTIONAL_LIMIT_MAX
INT64_MAX = 2**63 - 1
MAX_INSTRUMENTS = 1 << 16


class Stage(StrEnum):
    BACKTEST = "backtest"
    PAPER = "paper"
    SHADOW = "shadow"
    SMALL = "small"
    LIVE = "live"

    @property
    def uses_venue(self) -> bool:
        """Real orders go to a venue (shadow, small, live)."""
        return self in (Stage.SHADOW, Stage.SMALL, Stage.LIVE)

    @property
    def next(self) -> Stage | None:
        order = list(Stage)
        i = order.index(self)
        return order[i + 1] if i + 1 < len(order) else None


STAGES = tuple(s.value for s in Stage)


# --------------------------------------------------------------------------- secrets

@dataclass(frozen=True)
class Secret:
    """Where a secret is (an environment variable or a file), never its value."""
    key: str                  # config key it came from, for error messages
    env: str | None = None
    file: Path | None = None

    def __repr__(self) -> str:
        where = f"env={self.env}" if self.env else f"file={self.file}"
        return f"Secret({where})"

    __str__ = __repr__

    def reveal(self, environ: Mapping[str, str] | None = None) -> str:
        """The secret's value; ConfigError naming the key if it cannot be read."""
        if self.env:
            value = (os.environ if environ is None else environ).get(self.env)
            if not value:
                raise ConfigError(f"{self.key}: environment variable {self.env} is not set or empty")
            return value
        assert self.file is not None
        try:
            value = self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{self.key}: cannot read {self.file} ({exc.strerror})") from None
        if not value:
            raise ConfigError(f"{self.key}: {self.file} is empty")
        return value

    def file_is_private(self) -> bool:
        """True unless the secret file is readable by group or others."""
        if self.file is None:
            return True
        try:
            return not (self.file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
        except OSError:
            return True


# --------------------------------------------------------------------------- sections

@dataclass(frozen=True)
class StrategyConfig:
    spec: str                                   # "module:Class"
    cls: type = field(repr=False, compare=False)
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def compiled(self) -> bool:
        """A Cython strategy (a core_ext.t2t.CStrategy subclass): the runtime runs it on
        the compiled tick-to-trade path (engine.compiled_path)."""
        from core_ext.t2t import CStrategy
        return issubclass(self.cls, CStrategy)

    def create(self):
        """A new strategy instance with the configured parameters (a compiled strategy
        comes wrapped in an engine.strategy.CompiledStrategy)."""
        if self.compiled:
            from engine.strategy import CompiledStrategy
            return CompiledStrategy(self.cls, _thaw(self.params))
        return self.cls(_thaw(self.params))


@dataclass(frozen=True)
class VenueConfig:
    protocol: str                 # "fix" | "ouch"
    host: str
    port: int
    sender_comp_id: str
    target_comp_id: str
    username: str | None
    password: Secret | None
    heartbeat_s: int = 30
    feed_host: str = "127.0.0.1"     # the venue's ITCH 5.0 / MoldUDP64 feed
    feed_request_port: int = 9880    # its retransmission/subscription port (UDP)
    feed_session: str = "VENUE1"     # MoldUDP64 session name
    feed_bind_host: str = "127.0.0.1"  # local address the feed socket binds (the market-data NIC)
    feed_bind_port: int = 0            # 0: any free port (the subscription tells the venue)
    statement: str | None = None     # the venue's broker statement: its GET /statement URL or a file


@dataclass(frozen=True)
class OrdersConfig:
    status_timeout_ms: int = 2000      # query an unanswered order after this long
    max_status_queries: int = 3        # then alert
    flatten_on_stop: bool = False      # SIGINT/SIGTERM: after canceling open orders, also close positions

    @property
    def status_timeout_ns(self) -> int:
        return self.status_timeout_ms * 1_000_000


@dataclass(frozen=True)
class InstrumentRisk:
    """Per-instrument limits: decimal (as configured) and in kernel units."""
    symbol: str
    max_order_qty: Decimal           # quantity
    max_order_notional: Decimal      # money
    price_band_bps: int
    max_position: Decimal            # quantity
    max_open_orders: int
    max_ref_age_ms: int
    max_order_qty_lots: int
    max_order_notional_units: int    # kernel tick-lots (money / money_unit)
    max_position_lots: int

    @property
    def max_ref_age_ns(self) -> int:
        return self.max_ref_age_ms * 1_000_000

    def kernel_limits(self) -> dict[str, int]:
        """Keyword arguments of RiskKernel.set_instrument_limits."""
        return dict(max_order_qty=self.max_order_qty_lots, max_order_notional=self.max_order_notional_units,
                    price_band_bps=self.price_band_bps, max_position=self.max_position_lots,
                    max_open_orders=self.max_open_orders, max_ref_age_ns=self.max_ref_age_ns)


@dataclass(frozen=True)
class RiskConfig:
    instruments: Mapping[str, InstrumentRisk]
    max_gross_exposure: Decimal          # money
    max_concentration_bps: int
    concentration_floor: Decimal         # money
    max_orders_per_window: int
    window_ms: int
    capital_limit: Mapping[Stage, Decimal]   # money per stage
    daily_loss_limit: Decimal            # money > 0: loss of the day that trips the kill switch
    max_drawdown_pct: float              # % of peak equity that trips the kill switch
    var_method: str                      # "historical" | "parametric"
    var_confidence: float                # e.g. 0.99
    var_limit: Decimal                   # money: VaR above it -> reduce-only
    var_window: int                      # return samples used
    var_interval_ms: int                 # how often VaR is computed (and prices sampled)
    var_min_samples: int                 # below this many returns VaR is not computed
    reduce_only_on_limit_breach: bool    # position/concentration breach -> instrument reduce-only
    money_unit: Decimal                  # money of one kernel tick-lot
    max_gross_exposure_units: int
    concentration_floor_units: int
    capital_limit_units: Mapping[Stage, int]

    @property
    def window_ns(self) -> int:
        return self.window_ms * 1_000_000

    def gross_limit_units(self, stage: Stage) -> int:
        """The kernel's max_gross_exposure for `stage`: the account limit, lowered to
        the stage's capital_limit when one is configured (how `small` is enforced)."""
        limit = self.max_gross_exposure_units
        cap = self.capital_limit_units.get(stage)
        return limit if cap is None else min(limit, cap)

    def account_limits(self, stage: Stage) -> dict[str, int]:
        """Keyword arguments of RiskKernel.set_account_limits for `stage`."""
        return dict(max_gross_exposure=self.gross_limit_units(stage),
                    max_concentration_bps=self.max_concentration_bps,
                    concentration_floor=self.concentration_floor_units,
                    max_orders_per_window=self.max_orders_per_window, window_ns=self.window_ns)


@dataclass(frozen=True)
class SimulationConfig:
    seed: int = 7
    slippage_bps: float = 0.0
    walk_depth: bool = True
    queue_position: bool = True
    order_latency_ns: int = 0
    report_latency_ns: int = 0
    latency_jitter_ns: int = 0
    maker_fee_bps: float = 0.0
    taker_fee_bps: float = 0.0
    fee_per_fill: float = 0.0
    mark: str = "mid"                  # mid | last | bid_ask


@dataclass(frozen=True)
class KillSwitchConfig:
    state_file: Path
    cancel_timeout_ms: int = 5000
    flatten_on_trip: bool = False


@dataclass(frozen=True)
class MonitoringConfig:
    admin_host: str = "127.0.0.1"
    admin_port: int = 8787             # 0: pick a free port
    token: Secret | None = None        # None: POST /kill is refused


@dataclass(frozen=True)
class StorageConfig:
    directory: Path
    # When an order's journal record must be on disk, in the real stages:
    #   "before_send" (default): fsynced before the request leaves -- the venue never holds
    #       an order the journal does not know, even after a power cut; costs a disk flush
    #       per order (hundreds of microseconds);
    #   "interval": written to the file by the event loop right after the event that sent
    #       the request (microseconds later, not on its path) and fsynced within
    #       journal_fsync_ms -- a process killed in between, or a power cut within the
    #       interval, can lose the record; the restart's reconciliation with the venue
    #       then finds the order ("not in the journal") and trading stays blocked until
    #       it is resolved.
    journal_sync: str = "before_send"
    journal_fsync_ms: int = 5


# Promotion criteria: the bounds are strict, as in DESIGN.md ("Sharpe > 1").
@dataclass(frozen=True)
class BacktestToPaper:
    min_sharpe: float = 1.0
    max_drawdown_pct: float = 15.0
    min_profit_factor: float = 1.3
    require_reproducible: bool = True


@dataclass(frozen=True)
class PaperToShadow:
    max_deviation_pct: float = 10.0    # paper results within this of the backtest, same period
    max_system_errors: int = 0
    min_duration_s: int = 86_400


@dataclass(frozen=True)
class ShadowToSmall:
    max_slippage_error_bps: float = 5.0  # |simulated - real fill price| tolerance
    max_critical_errors: int = 0
    min_duration_s: int = 86_400


@dataclass(frozen=True)
class SmallToLive:
    max_return_deviation_pct: float = 20.0   # risk-adjusted returns consistent with paper
    require_all_controls_exercised: bool = True
    min_duration_s: int = 5 * 86_400


@dataclass(frozen=True)
class PromotionConfig:
    backtest_to_paper: BacktestToPaper = BacktestToPaper()
    paper_to_shadow: PaperToShadow = PaperToShadow()
    shadow_to_small: ShadowToSmall = ShadowToSmall()
    small_to_live: SmallToLive = SmallToLive()
    demote_to: Stage = Stage.SMALL            # live: any breach -> kill switch, restart here


@dataclass(frozen=True)
class Config:
    source: Path | None
    stage: Stage
    account: str
    capital: Decimal
    instruments: tuple[Instrument, ...]
    money_unit: Decimal
    strategy: StrategyConfig
    venue: VenueConfig | None
    orders: OrdersConfig
    risk: RiskConfig
    simulation: SimulationConfig
    killswitch: KillSwitchConfig
    monitoring: MonitoringConfig
    storage: StorageConfig
    promotion: PromotionConfig

    @property
    def instruments_by_symbol(self) -> dict[str, Instrument]:
        return {i.symbol: i for i in self.instruments}

    def instrument(self, symbol: str) -> Instrument:
        for i in self.instruments:
            if i.symbol == symbol:
                return i
        raise KeyError(f"unknown symbol {symbol!r}")

    def with_stage(self, stage: Stage | str) -> Config:
        """The same configuration in another stage (promotion); validated like a load
        (capital_limit.small needed for small; a venue for shadow/small/live)."""
        stage = Stage(stage)
        _check_stage_needs(stage, self.risk, self.venue, str(self.source or "<config>"))
        return replace(self, stage=stage)


# --------------------------------------------------------------------------- reading helpers

_REQUIRED = object()
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/\-]{0,31}$")
_COMP_ID_RE = re.compile(r"^[\x21-\x7e]{1,32}$")
_SPEC_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Table:
    """One TOML table: typed getters that name the key; `done` rejects unknown keys."""

    def __init__(self, data: Any, path: str, file: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {path or 'top level'}: expected a table, got {_tname(data)}")
        self.d = data
        self.path = path
        self.file = file
        self.used: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def err(self, k: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.key(k)}: {msg}")

    def has(self, k: str) -> bool:
        return k in self.d

    def raw(self, k: str, default: Any = _REQUIRED) -> Any:
        self.used.add(k)
        if k not in self.d:
            if default is _REQUIRED:
                raise self.err(k, "required")
            return default
        return self.d[k]

    def str_(self, k: str, default: Any = _REQUIRED, choices: tuple[str, ...] | None = None,
             pattern: re.Pattern | None = None, what: str = "") -> Any:
        v = self.raw(k, default)
        if v is default and default is not _REQUIRED:
            return v
        if not isinstance(v, str) or not v.strip():
            raise self.err(k, f"expected a non-empty string{', ' + what if what else ''}, got {v!r}")
        if choices is not None and v not in choices:
            raise self.err(k, f"{v!r} is not one of {', '.join(choices)}")
        if pattern is not None and not pattern.match(v):
            raise self.err(k, f"{v!r} is not valid{' (' + what + ')' if what else ''}")
        return v

    def int_(self, k: str, default: Any, lo: int, hi: int) -> int:
        v = self.raw(k, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(k, f"expected an integer in {lo}..{hi}, got {v!r}")
        if not lo <= v <= hi:
            raise self.err(k, f"{v} outside the allowed range {lo}..{hi}")
        return v

    def float_(self, k: str, default: Any, lo: float, hi: float, *, lo_open: bool = False,
               hi_open: bool = False) -> float:
        v = self.raw(k, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.err(k, f"expected a number, got {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise self.err(k, f"{v!r} is not a finite number")
        lo_ok = v > lo if lo_open else v >= lo
        hi_ok = v < hi if hi_open else v <= hi
        if not (lo_ok and hi_ok):
            rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise self.err(k, f"{v:g} outside the allowed range {rng}")
        return v

    def bool_(self, k: str, default: Any) -> bool:
        v = self.raw(k, default)
        if not isinstance(v, bool):
            raise self.err(k, f"expected true or false, got {v!r}")
        return v

    def dec(self, k: str, default: Any = _REQUIRED, *, positive: bool = False,
            nonneg: bool = False) -> Decimal:
        v = self.raw(k, default)
        try:
            d = to_decimal(v, self.key(k))
        except ValueError as exc:
            raise ConfigError(f"{self.file}: {exc}") from None
        if positive and d <= 0:
            raise self.err(k, f"{v!r} must be > 0")
        if nonneg and d < 0:
            raise self.err(k, f"{v!r} must be >= 0")
        return d

    def table(self, k: str, required: bool = False) -> _Table | None:
        v = self.raw(k, _REQUIRED if required else None)
        if v is None:
            return None
        return _Table(v, self.key(k), self.file)

    def forbid(self, k: str, msg: str) -> None:
        if k in self.d:
            raise self.err(k, msg)

    def done(self) -> None:
        unknown = sorted(set(self.d) - self.used)
        if unknown:
            allowed = ", ".join(sorted(self.used)) or "none"
            raise self.err(unknown[0], f"unknown key (allowed here: {allowed})")


def _tname(v: Any) -> str:
    return type(v).__name__


def _units(t: _Table, k: str, value: Decimal, unit: Decimal, what: str, *, hi: int = INT64_MAX) -> int:
    units = value / unit
    whole = units.to_integral_value()
    if units != whole:
        raise t.err(k, f"{value} is not a whole multiple of the {what} {unit}")
    n = int(whole)
    if not 0 <= n <= hi:
        raise t.err(k, f"{value} is outside the allowed range 0..{hi * unit} ({what} {unit})")
    return n


def _secret(t: _Table, name: str) -> Secret | None:
    t.forbid(name, f"a {name} must not be written in the config: use {name}_env = \"VAR\" "
                   f"or {name}_file = \"path\"")
    env = t.raw(f"{name}_env", None)
    file = t.raw(f"{name}_file", None)
    if env is not None and file is not None:
        raise t.err(f"{name}_env", f"give {name}_env or {name}_file, not both")
    if env is not None:
        if not isinstance(env, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", env):
            raise t.err(f"{name}_env", f"{env!r} is not an environment variable name")
        return Secret(t.key(f"{name}_env"), env=env)
    if file is not None:
        if not isinstance(file, str) or not file:
            raise t.err(f"{name}_file", f"expected a path, got {file!r}")
        return Secret(t.key(f"{name}_file"), file=Path(file).expanduser())
    return None


def import_strategy(spec: str) -> type:
    """The class named by "package.module:Class" (a subclass of engine.strategy.Strategy);
    ValueError naming the spec otherwise."""
    if not isinstance(spec, str) or not _SPEC_RE.match(spec):
        raise ValueError(f"{spec!r} is not of the form \"package.module:Class\"")
    module_name, _, cls_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a config error
        raise ValueError(f"cannot import {spec!r} ({type(exc).__name__}: {exc})") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ValueError(f"cannot import {spec!r}: module {module_name} has no {cls_name}")
    from core_ext.t2t import CStrategy
    from engine.strategy import Strategy
    if not (isinstance(cls, type) and issubclass(cls, (Strategy, CStrategy))):
        raise ValueError(f"{spec!r} is not a subclass of engine.strategy.Strategy (Python) or of "
                         f"core_ext.t2t.CStrategy (Cython)")
    return cls


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return MappingProxyType({k: _freeze(x) for k, x in v.items()})
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _thaw(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    return v


def _check_nonfinite(v: Any, path: str, file: str) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{file}: {path}: {v!r} is not a finite number")
    if isinstance(v, dict):
        for k, x in v.items():
            _check_nonfinite(x, f"{path}.{k}" if path else k, file)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _check_nonfinite(x, f"{path}[{i}]", file)


# --------------------------------------------------------------------------- sections

def _instruments(top: _Table) -> tuple[Instrument, ...]:
    raw = top.raw("instruments")
    file = top.file
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{file}: instruments: expected at least one [[instruments]] table")
    if len(raw) > MAX_INSTRUMENTS:
        raise ConfigError(f"{file}: instruments: at most {MAX_INSTRUMENTS} instruments")
    out: list[Instrument] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        t = _Table(item, f"instruments[{i}]", file)
        symbol = t.str_("symbol", pattern=_SYMBOL_RE, what="letters, digits and ._:/- up to 32")
        if symbol in seen:
            raise t.err("symbol", f"{symbol!r} appears twice")
        seen.add(symbol)
        tick = t.dec("tick_size", positive=True)
        lot = t.dec("lot_size", positive=True)
        mult = t.int_("contract_multiplier", 1, 1, 10**9)
        tick_dp = max(0, -tick.normalize().as_tuple().exponent)
        lot_dp = max(0, -lot.normalize().as_tuple().exponent)
        price_scale = t.int_("price_scale", tick_dp, 0, 18)
        size_scale = t.int_("size_scale", lot_dp, 0, 18)
        if price_scale < tick_dp:
            raise t.err("price_scale", f"{price_scale} cannot express the tick size {tick} "
                                       f"(allowed {tick_dp}..18)")
        if size_scale < lot_dp:
            raise t.err("size_scale", f"{size_scale} cannot express the lot size {lot} "
                                      f"(allowed {lot_dp}..18)")
        t.done()
        out.append(Instrument(symbol, i, tick, lot, mult, price_scale, size_scale))
    unit = money_unit([x.money_per_tick_lot for x in out])
    return tuple(replace(x, kernel_multiplier=int(x.money_per_tick_lot / unit)) for x in out)


def _strategy(top: _Table, instruments: dict[str, Instrument]) -> StrategyConfig:
    t = top.table("strategy", required=True)
    spec = t.str_("strategy", what="\"package.module:Class\"")
    try:
        cls = import_strategy(spec)
    except ValueError as exc:
        raise t.err("strategy", str(exc)) from None
    params = t.table("params")
    raw_params = dict(params.d) if params is not None else {}
    t.done()
    from core_ext.t2t import CStrategy
    if issubclass(cls, CStrategy):
        # a compiled strategy takes its parameters as keyword arguments (integers: lots,
        # ticks); building one is the check
        try:
            cls(**raw_params)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"{t.file}: strategy.params: {spec}: {exc}") from None
        return StrategyConfig(spec, cls, _freeze(raw_params))
    try:
        cls.validate_params(raw_params, instruments)
    except ValueError as exc:
        raise ConfigError(f"{t.file}: strategy.params.{exc}") from None
    return StrategyConfig(spec, cls, _freeze(raw_params))


def _venue(top: _Table) -> VenueConfig | None:
    t = top.table("venue")
    if t is None:
        return None
    v = VenueConfig(
        protocol=t.str_("protocol", choices=("fix", "ouch")),
        host=t.str_("host", "127.0.0.1"),
        port=t.int_("port", _REQUIRED, 1, 65535),
        sender_comp_id=t.str_("sender_comp_id", "ENGINE", pattern=_COMP_ID_RE, what="1..32 printable"),
        target_comp_id=t.str_("target_comp_id", "VENUE", pattern=_COMP_ID_RE, what="1..32 printable"),
        username=t.str_("username", None),
        password=_secret(t, "password"),
        heartbeat_s=t.int_("heartbeat_s", 30, 1, 300),
        feed_host=t.str_("feed_host", "127.0.0.1"),
        feed_request_port=t.int_("feed_request_port", 9880, 1, 65535),
        feed_session=t.str_("feed_session", "VENUE1", pattern=re.compile(r"^[\x21-\x7e]{1,10}$"),
                            what="1..10 printable characters"),
        statement=t.str_("statement", None, what="the venue's statement URL or a file path"),
        feed_bind_host=_ip_address(t, "feed_bind_host", None),
        feed_bind_port=t.int_("feed_bind_port", 0, 0, 65535),
    )
    t.done()
    if v.feed_bind_host is None:
        # default: loopback for a venue on this machine, every interface for a remote one
        local = v.feed_host in ("localhost",) or _is_loopback(v.feed_host)
        v = replace(v, feed_bind_host="127.0.0.1" if local else "0.0.0.0")
    return v


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ip_address(t: _Table, key: str, default: str | None) -> str | None:
    value = t.str_(key, default)
    if value is None:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise t.err(key, f"{value!r} is not an IP address (the local address to bind, "
                         f"e.g. the market-data NIC's)") from None
    return value


def _orders(top: _Table) -> OrdersConfig:
    t = top.table("orders")
    if t is None:
        return OrdersConfig()
    o = OrdersConfig(status_timeout_ms=t.int_("status_timeout_ms", 2000, 10, 600_000),
                     max_status_queries=t.int_("max_status_queries", 3, 1, 100),
                     flatten_on_stop=t.bool_("flatten_on_stop", False))
    t.done()
    return o


def _risk(top: _Table, instruments: tuple[Instrument, ...], unit: Decimal) -> RiskConfig:
    t = top.table("risk", required=True)
    by_symbol = {i.symbol: i for i in instruments}
    per = t.table("instruments", required=True)
    inst_risk: dict[str, InstrumentRisk] = {}
    for symbol in per.d:
        if symbol not in by_symbol:
            raise per.err(symbol, f"limits for unknown instrument {symbol!r} "
                                  f"(configured: {', '.join(by_symbol)})")
        inst = by_symbol[symbol]
        r = per.table(symbol, required=True)
        qty = r.dec("max_order_qty", positive=True)
        notional = r.dec("max_order_notional", positive=True)
        pos = r.dec("max_position", nonneg=True)
        inst_risk[symbol] = InstrumentRisk(
            symbol=symbol, max_order_qty=qty, max_order_notional=notional,
            price_band_bps=r.int_("price_band_bps", _REQUIRED, 1, 10_000),
            max_position=pos, max_open_orders=r.int_("max_open_orders", _REQUIRED, 0, 1_000_000),
            max_ref_age_ms=r.int_("max_ref_age_ms", 5000, 1, 86_400_000),
            max_order_qty_lots=_units(r, "max_order_qty", qty, inst.lot_size, "lot size"),
            max_order_notional_units=_units(r, "max_order_notional", notional, unit, "money unit",
                                            hi=NOTIONAL_LIMIT_MAX),
            max_position_lots=_units(r, "max_position", pos, inst.lot_size, "lot size"),
        )
        r.done()
    per.done()
    missing = [s for s in by_symbol if s not in inst_risk]
    if missing:
        raise ConfigError(f"{t.file}: risk.instruments.{missing[0]}: required (every instrument needs "
                          f"its limits)")
    gross = t.dec("max_gross_exposure", positive=True)
    floor = t.dec("concentration_floor", "0", nonneg=True)
    caps: dict[Stage, Decimal] = {}
    cap_units: dict[Stage, int] = {}
    ct = t.table("capital_limit")
    if ct is not None:
        for k in list(ct.d):
            if k not in STAGES:
                raise ct.err(k, f"not a stage (allowed: {', '.join(STAGES)})")
            caps[Stage(k)] = ct.dec(k, positive=True)
            cap_units[Stage(k)] = _units(ct, k, caps[Stage(k)], unit, "money unit", hi=NOTIONAL_LIMIT_MAX)
        ct.done()
    daily = t.dec("daily_loss_limit", positive=True)
    var_limit = t.dec("var_limit", positive=True)
    cfg = RiskConfig(
        instruments=MappingProxyType(inst_risk),
        max_gross_exposure=gross,
        max_concentration_bps=t.int_("max_concentration_bps", 10_000, 0, 10_000),
        concentration_floor=floor,
        max_orders_per_window=t.int_("max_orders_per_window", 100, 0, 1 << 22),
        window_ms=t.int_("window_ms", 1000, 1, 86_400_000),
        capital_limit=MappingProxyType(caps),
        daily_loss_limit=daily,
        max_drawdown_pct=t.float_("max_drawdown_pct", 20.0, 0.0, 100.0, lo_open=True),
        var_method=t.str_("var_method", "historical", choices=("historical", "parametric")),
        var_confidence=t.float_("var_confidence", 0.99, 0.5, 1.0, lo_open=True, hi_open=True),
        var_limit=var_limit,
        var_window=t.int_("var_window", 500, 10, 1_000_000),
        var_interval_ms=t.int_("var_interval_ms", 60_000, 10, 86_400_000),
        var_min_samples=t.int_("var_min_samples", 30, 2, 1_000_000),
        reduce_only_on_limit_breach=t.bool_("reduce_only_on_limit_breach", True),
        money_unit=unit,
        max_gross_exposure_units=_units(t, "max_gross_exposure", gross, unit, "money unit",
                                        hi=NOTIONAL_LIMIT_MAX),
        concentration_floor_units=_units(t, "concentration_floor", floor, unit, "money unit",
                                         hi=NOTIONAL_LIMIT_MAX),
        capital_limit_units=MappingProxyType(cap_units),
    )
    if cfg.var_min_samples > cfg.var_window:
        raise t.err("var_min_samples", f"{cfg.var_min_samples} must be <= var_window ({cfg.var_window})")
    t.done()
    return cfg


def _simulation(top: _Table) -> SimulationConfig:
    t = top.table("simulation")
    if t is None:
        return SimulationConfig()
    big = 60_000_000_000
    s = SimulationConfig(
        seed=t.int_("seed", 7, 0, 2**63 - 1),
        slippage_bps=t.float_("slippage_bps", 0.0, 0.0, 10_000.0),
        walk_depth=t.bool_("walk_depth", True),
        queue_position=t.bool_("queue_position", True),
        order_latency_ns=t.int_("order_latency_ns", 0, 0, big),
        report_latency_ns=t.int_("report_latency_ns", 0, 0, big),
        latency_jitter_ns=t.int_("latency_jitter_ns", 0, 0, big),
        maker_fee_bps=t.float_("maker_fee_bps", 0.0, -1_000.0, 1_000.0),
        taker_fee_bps=t.float_("taker_fee_bps", 0.0, 0.0, 1_000.0),
        fee_per_fill=t.float_("fee_per_fill", 0.0, 0.0, 1e9),
        mark=t.str_("mark", "mid", choices=("mid", "last", "bid_ask")),
    )
    t.done()
    return s


def _killswitch(top: _Table, storage: StorageConfig) -> KillSwitchConfig:
    t = top.table("killswitch")
    default_file = storage.directory / "killswitch.json"
    if t is None:
        return KillSwitchConfig(default_file)
    path = t.str_("state_file", None)
    k = KillSwitchConfig(Path(path).expanduser() if path else default_file,
                         cancel_timeout_ms=t.int_("cancel_timeout_ms", 5000, 1, 600_000),
                         flatten_on_trip=t.bool_("flatten_on_trip", False))
    t.done()
    return k


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _monitoring(top: _Table) -> MonitoringConfig:
    t = top.table("monitoring")
    if t is None:
        return MonitoringConfig()
    m = MonitoringConfig(admin_host=t.str_("admin_host", "127.0.0.1"),
                         admin_port=t.int_("admin_port", 8787, 0, 65535),
                         token=_secret(t, "token"))
    if not _is_loopback(m.admin_host) and m.token is None:
        raise t.err("admin_host", f"{m.admin_host} is not a loopback address: the admin endpoint "
                                  f"then needs token_env or token_file")
    t.done()
    return m


def _storage(top: _Table) -> StorageConfig:
    t = top.table("storage")
    if t is None:
        return StorageConfig(Path("var/engine"))
    s = StorageConfig(Path(t.str_("directory", "var/engine")).expanduser(),
                      journal_sync=t.str_("journal_sync", "before_send", choices=("before_send", "interval")),
                      journal_fsync_ms=t.int_("journal_fsync_ms", 5, 1, 10_000))
    t.done()
    return s


def _promotion(top: _Table) -> PromotionConfig:
    t = top.table("promotion")
    if t is None:
        return PromotionConfig()
    d = PromotionConfig()
    b = t.table("backtest_to_paper")
    bp = d.backtest_to_paper
    if b is not None:
        bp = BacktestToPaper(b.float_("min_sharpe", 1.0, -100.0, 100.0),
                             b.float_("max_drawdown_pct", 15.0, 0.0, 100.0, lo_open=True),
                             b.float_("min_profit_factor", 1.3, 0.0, 1000.0),
                             b.bool_("require_reproducible", True))
        b.done()
    p = t.table("paper_to_shadow")
    ps = d.paper_to_shadow
    if p is not None:
        ps = PaperToShadow(p.float_("max_deviation_pct", 10.0, 0.0, 1000.0),
                           p.int_("max_system_errors", 0, 0, 1_000_000),
                           p.int_("min_duration_s", 86_400, 0, 365 * 86_400))
        p.done()
    s = t.table("shadow_to_small")
    ss = d.shadow_to_small
    if s is not None:
        ss = ShadowToSmall(s.float_("max_slippage_error_bps", 5.0, 0.0, 10_000.0),
                           s.int_("max_critical_errors", 0, 0, 1_000_000),
                           s.int_("min_duration_s", 86_400, 0, 365 * 86_400))
        s.done()
    sl = t.table("small_to_live")
    sm = d.small_to_live
    if sl is not None:
        sm = SmallToLive(sl.float_("max_return_deviation_pct", 20.0, 0.0, 1000.0),
                         sl.bool_("require_all_controls_exercised", True),
                         sl.int_("min_duration_s", 5 * 86_400, 0, 365 * 86_400))
        sl.done()
    demote = Stage(t.str_("demote_to", "small", choices=STAGES))
    t.done()
    return PromotionConfig(bp, ps, ss, sm, demote)


def _check_stage_needs(stage: Stage, risk: RiskConfig, venue: VenueConfig | None, file: str,
                       environ: Mapping[str, str] | None = None, check_secrets: bool = False) -> None:
    if stage is Stage.SMALL and Stage.SMALL not in risk.capital_limit:
        raise ConfigError(f"{file}: risk.capital_limit.small: required when stage = small "
                          f"(the small stage trades under that capital limit)")
    if stage.uses_venue:
        if venue is None:
            raise ConfigError(f"{file}: venue: required when stage = {stage} (orders go to a venue)")
        if check_secrets and venue.password is not None:
            venue.password.reveal(environ)


# --------------------------------------------------------------------------- entry points

def default_config_path() -> Path:
    """The packaged sample config (engine/sample_config.toml)."""
    return Path(str(resources.files("engine") / "sample_config.toml"))


def load_config(path: str | os.PathLike | None = None, *, stage: Stage | str | None = None,
                environ: Mapping[str, str] | None = None,
                check_secrets: bool | None = None) -> Config:
    """Read and validate a config file (None: the packaged sample config). `stage`
    overrides the file's stage. Secrets are checked for existence when
    `check_secrets` (default: when the stage trades on a venue)."""
    p = Path(path) if path is not None else default_config_path()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    return parse_config(text, source=p, stage=stage, environ=environ, check_secrets=check_secrets)


def parse_config(text: str, *, source: str | os.PathLike | None = None,
                 stage: Stage | str | None = None, environ: Mapping[str, str] | None = None,
                 check_secrets: bool | None = None) -> Config:
    """Validate config text (see load_config)."""
    file = str(source) if source is not None else "<config>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    _check_nonfinite(data, "", file)
    top = _Table(data, "", file)
    st_name = top.str_("stage", "backtest", choices=STAGES)
    if stage is not None:
        if isinstance(stage, str) and stage not in STAGES:
            raise ConfigError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
        st = Stage(stage)
    else:
        st = Stage(st_name)
    account = top.str_("account", "default", pattern=re.compile(r"^[\x21-\x7e]{1,64}$"),
                       what="1..64 printable characters")
    capital = top.dec("capital", positive=True)
    instruments = _instruments(top)
    unit = money_unit([i.money_per_tick_lot for i in instruments])
    by_symbol = {i.symbol: i for i in instruments}
    strategy = _strategy(top, by_symbol)
    venue = _venue(top)
    orders = _orders(top)
    risk = _risk(top, instruments, unit)
    simulation = _simulation(top)
    storage = _storage(top)
    killswitch = _killswitch(top, storage)
    monitoring = _monitoring(top)
    promotion = _promotion(top)
    top.done()
    if check_secrets is None:
        check_secrets = st.uses_venue
    _check_stage_needs(st, risk, venue, file, environ, check_secrets)
    if check_secrets and monitoring.token is not None:
        monitoring.token.reveal(environ)
    return Config(Path(source) if source is not None else None, st, account, capital, instruments,
                  unit, strategy, venue, orders, risk, simulation, killswitch, monitoring, storage,
                  promotion)


def check_port_free(host: str, port: int) -> bool:
    """True if a server could bind (host, port) now (port 0 is always free). Binds with
    SO_REUSEADDR, as asyncio servers do, so a port in TIME_WAIT counts as free and only
    a listening socket makes it busy."""
    if port == 0:
        return True
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {host!r}: {exc}") from None
    family, socktype, proto, _, addr = infos[0]
    with socket.socket(family, socktype, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError:
            return False
    return True


def ensure_port_free(host: str, port: int, key: str) -> None:
    """ConfigError naming `key` if (host, port) is in use."""
    if not check_port_free(host, port):
        raise ConfigError(f"{key}: {host}:{port} is already in use")


def check_main(path: str | os.PathLike | None) -> int:
    """`engine config --check FILE`: prints OK and a summary (stdout) or the error
    (stderr); returns 0 or 2."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    inst = ", ".join(f"{i.symbol} (tick {i.tick_size}, lot {i.lot_size})" for i in cfg.instruments)
    venue = f"{cfg.venue.protocol} {cfg.venue.host}:{cfg.venue.port}" if cfg.venue else "none"
    print(f"OK {cfg.source}: stage {cfg.stage}, account {cfg.account}, instruments {inst}; "
          f"strategy {cfg.strategy.spec}; venue {venue}; money unit {cfg.money_unit}")
    return 0

