"""Configuration: loading, validation errors naming the key and the range, secrets,
stages, strategy import, port check, `check_main`."""
from __future__ import annotations

import re
import socket
from decimal import Decimal

import pytest

from engine.config import (
    Stage,
    check_main,
    check_port_free,
    default_config_path,
    ensure_port_free,
    load_config,
    parse_config,
)
from engine.errors import ConfigError
from engine.strategies import MarketMaker
from tests.engine_helpers import CONFIG_TOML

VENUE = """
[venue]
protocol = "fix"
host = "127.0.0.1"
port = 9878
password_env = "TEST_VENUE_PW"
"""


def parse(text: str = CONFIG_TOML, **kw):
    return parse_config(text, source="t.toml", **kw)


def edit(old: str, new: str, text: str = CONFIG_TOML) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def expect_error(text: str, *fragments: str, **kw) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(text, **kw)
    msg = str(exc.value)
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


# ----------------------------------------------------------------------------- loading

def test_packaged_sample_config_loads():
    cfg = load_config(None)
    assert cfg.source == default_config_path() and cfg.stage is Stage.BACKTEST
    assert [i.symbol for i in cfg.instruments] == ["BTCUSDT", "AAPL"]
    assert cfg.strategy.cls is MarketMaker and isinstance(cfg.strategy.create(), MarketMaker)
    assert cfg.monitoring.admin_host == "127.0.0.1"
    assert cfg.promotion.backtest_to_paper.min_sharpe == 1.0
    assert cfg.promotion.backtest_to_paper.max_drawdown_pct == 15
    assert cfg.promotion.backtest_to_paper.min_profit_factor == 1.3
    assert cfg.promotion.paper_to_shadow.max_deviation_pct == 10


def test_values_are_converted_for_the_kernel():
    cfg = parse()
    btc = cfg.instrument("BTC")
    assert btc.inst_id == 1 and btc.lot_size == Decimal("0.001") and btc.price_scale == 2
    assert btc.size_scale == 3 and btc.qty_to_lots("1.5") == 1500
    r = cfg.risk.instruments["BTC"]
    assert r.kernel_limits() == dict(max_order_qty=5000, max_order_notional=10_000_000_000,
                                     price_band_bps=500, max_position=10_000, max_open_orders=50,
                                     max_ref_age_ns=60_000_000_000)
    assert cfg.risk.account_limits(Stage.BACKTEST)["max_gross_exposure"] == 100_000_000_000
    assert cfg.risk.account_limits(Stage.SMALL)["max_gross_exposure"] == 2_000_000_000
    assert cfg.risk.account_limits(Stage.BACKTEST)["window_ns"] == 1_000_000_000
    assert cfg.orders.status_timeout_ns == 2_000_000_000


def test_defaults_from_design():
    cfg = parse()
    p = cfg.promotion
    assert (p.backtest_to_paper.min_sharpe, p.backtest_to_paper.max_drawdown_pct,
            p.backtest_to_paper.min_profit_factor, p.backtest_to_paper.require_reproducible) == (
        1.0, 15.0, 1.3, True)
    assert p.paper_to_shadow.max_deviation_pct == 10.0 and p.paper_to_shadow.max_system_errors == 0
    assert p.shadow_to_small.max_critical_errors == 0
    assert p.small_to_live.require_all_controls_exercised and p.demote_to is Stage.SMALL
    assert cfg.monitoring.admin_host == "127.0.0.1" and cfg.storage.directory.as_posix() == "var/engine"
    assert cfg.killswitch.state_file.as_posix() == "var/engine/killswitch.json"


def test_config_is_frozen():
    cfg = parse()
    with pytest.raises(AttributeError):
        cfg.stage = Stage.LIVE
    with pytest.raises(TypeError):
        cfg.strategy.params["qty"] = "1"


# ----------------------------------------------------------------------------- errors name the key

@pytest.mark.parametrize("old, new, fragments", [
    ('stage = "backtest"', 'stage = "prod"', ["stage", "'prod' is not one of backtest, paper"]),
    ('lot_size = "1"', 'lot_size = "0"', ["instruments[0].lot_size", "must be > 0"]),
    ('tick_size = "0.01"', 'tick_size = "abc"', ["instruments[0].tick_size", "not a decimal"]),
    ('tick_size = "0.01"', 'tick_size = nan', ["instruments[0].tick_size", "not a finite number"]),
    ('tick_size = "0.01"', 'tick_size = inf', ["instruments[0].tick_size", "not a finite number"]),
    ('tick_size = "0.01"', 'tick_size = "NaN"', ["instruments[0].tick_size", "not a finite"]),
    ('tick_size = "0.01"', 'tick_size = "0.01"\nprice_scale = 1',
     ["instruments[0].price_scale", "allowed 2..18"]),
    ('tick_size = "0.01"', 'tick_size = "0.01"\ncontract_multiplier = 0',
     ["instruments[0].contract_multiplier", "outside the allowed range 1..1000000000"]),
    ('symbol = "BTC"\ntick', 'symbol = "XYZ"\ntick', ["instruments[1].symbol", "appears twice"]),
    ('max_order_qty = "5"', 'max_order_qty = "5.0005"',
     ["risk.instruments.BTC.max_order_qty", "not a whole multiple of the lot size 0.001"]),
    ('max_position = "2000"', 'max_position = "20.5"',
     ["risk.instruments.XYZ.max_position", "lot size 1"]),
    ('max_order_notional = "200000"', 'max_order_notional = "200000.000001"',
     ["risk.instruments.XYZ.max_order_notional", "money unit 0.00001"]),
    ('price_band_bps = 500\nmax_position = "10"', 'price_band_bps = 20000\nmax_position = "10"',
     ["risk.instruments.BTC.price_band_bps", "20000 outside the allowed range 1..10000"]),
    ('max_concentration_bps = 10000', 'max_concentration_bps = -1',
     ["risk.max_concentration_bps", "-1 outside the allowed range 0..10000"]),
    ('max_drawdown_pct = 10', 'max_drawdown_pct = 0', ["risk.max_drawdown_pct", "(0, 100]"]),
    ('max_drawdown_pct = 10', 'max_drawdown_pct = nan', ["risk.max_drawdown_pct", "not a finite"]),
    ('daily_loss_limit = "5000"', 'daily_loss_limit = "-1"', ["risk.daily_loss_limit", "must be > 0"]),
    ('daily_loss_limit = "5000"', 'daily_loss_limit = true', ["risk.daily_loss_limit", "expected a decimal"]),
    ('var_limit = "50000"', 'var_limit = "50000"\nvar_confidence = 1.0',
     ["risk.var_confidence", "(0.5, 1)"]),
    ('var_limit = "50000"', 'var_limit = "50000"\nvar_method = "monte_carlo"',
     ["risk.var_method", "not one of historical, parametric"]),
    ('var_min_samples = 10', 'var_min_samples = 1000', ["risk.var_min_samples", "<= var_window"]),
    ('[risk.capital_limit]\nsmall = "20000"', '[risk.capital_limit]\nsmal = "20000"',
     ["risk.capital_limit.smal", "not a stage"]),
    ('[risk.instruments.BTC]', '[risk.instruments.ETH]', ["risk.instruments.ETH", "unknown instrument"]),
    ('window_ms = 1000', 'window_ms = 1000\nmax_gross = 5', ["risk.max_gross", "unknown key"]),
    ('account = "T1"', 'acount = "T1"', ["acount", "unknown key"]),
    ('capital = "100000"', '', ["capital", "required"]),
])
def test_errors_name_the_key_and_the_range(old, new, fragments):
    msg = expect_error(edit(old, new), *fragments)
    assert msg.startswith("t.toml: ")


def test_every_instrument_needs_limits():
    text = CONFIG_TOML.split("[risk.instruments.BTC]")[0]
    expect_error(text, "risk.instruments.BTC: required")


def test_not_toml_and_missing_file(tmp_path):
    expect_error("stage = ", "not valid TOML")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


# ----------------------------------------------------------------------------- strategy

def test_unimportable_strategy_is_named():
    msg = expect_error(edit("engine.strategies.ma_crossover:MovingAverageCrossover", "no.such.mod:Thing"),
                       "strategy.strategy", "no.such.mod:Thing", "ModuleNotFoundError")
    assert "Traceback" not in msg
    expect_error(edit("engine.strategies.ma_crossover:MovingAverageCrossover",
                      "engine.strategies.ma_crossover:Nope"), "has no Nope")
    expect_error(edit("engine.strategies.ma_crossover:MovingAverageCrossover", "engine.config:Config"),
                 "not a subclass of engine.strategy.Strategy")
    expect_error(edit("engine.strategies.ma_crossover:MovingAverageCrossover", "just-a-name"),
                 "package.module:Class")


def test_strategy_params_are_validated():
    expect_error(edit('qty = "10"', 'qty = "10.5"'), "strategy.params.qty", "whole multiple of 1")
    expect_error(edit("slow = 6", "slow = 2"), "strategy.params.slow", "4..100000")
    expect_error(edit('symbol = "XYZ"\nqty', 'symbol = "ABC"\nqty'), "strategy.params.symbol",
                 "not a configured instrument")


# ----------------------------------------------------------------------------- secrets

def test_clear_password_is_refused():
    expect_error(CONFIG_TOML + VENUE.replace('password_env = "TEST_VENUE_PW"', 'password = "hunter2"'),
                 "venue.password", "must not be written in the config")
    expect_error(CONFIG_TOML + '[monitoring]\ntoken = "abc"\n', "monitoring.token",
                 "must not be written")
    expect_error(CONFIG_TOML + VENUE.replace('password_env = "TEST_VENUE_PW"',
                                             'password_env = "A"\npassword_file = "/x"'),
                 "venue.password_env", "not both")


def test_secrets_come_from_env_or_file_and_never_show(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_VENUE_PW", raising=False)
    live = edit('stage = "backtest"', 'stage = "live"', CONFIG_TOML + VENUE)
    expect_error(live, "venue.password_env", "TEST_VENUE_PW is not set")
    monkeypatch.setenv("TEST_VENUE_PW", "s3cret-value")
    cfg = parse(live)
    assert cfg.venue.password.reveal() == "s3cret-value"
    for text in (repr(cfg), str(cfg), repr(cfg.venue)):
        assert "s3cret-value" not in text
    assert "Secret(env=TEST_VENUE_PW)" in repr(cfg.venue)
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    pw.chmod(0o600)
    cfg = parse(edit('password_env = "TEST_VENUE_PW"', f'password_file = "{pw}"', live))
    assert cfg.venue.password.reveal() == "from-file" and cfg.venue.password.file_is_private()
    assert "from-file" not in repr(cfg)
    pw.chmod(0o644)
    assert not cfg.venue.password.file_is_private()
    # backtest does not need the secret to exist
    monkeypatch.delenv("TEST_VENUE_PW")
    assert parse(CONFIG_TOML + VENUE).venue.password.env == "TEST_VENUE_PW"
    # an explicit environment mapping
    assert parse(live, environ={"TEST_VENUE_PW": "x"}).stage is Stage.LIVE


def test_admin_endpoint_off_loopback_needs_a_token():
    expect_error(CONFIG_TOML + '[monitoring]\nadmin_host = "0.0.0.0"\n', "monitoring.admin_host",
                 "token_env or token_file")
    cfg = parse(CONFIG_TOML + '[monitoring]\nadmin_host = "0.0.0.0"\ntoken_env = "TOK"\n')
    assert cfg.monitoring.token.env == "TOK"
    expect_error(CONFIG_TOML + '[monitoring]\nadmin_port = 70000\n', "monitoring.admin_port", "0..65535")


# ----------------------------------------------------------------------------- stages

def test_stage_requirements():
    small = edit('stage = "backtest"', 'stage = "small"')
    expect_error(small, "venue: required when stage = small")
    cfg = parse(small + VENUE, environ={"TEST_VENUE_PW": "x"})
    assert cfg.stage is Stage.SMALL
    no_cap = edit('[risk.capital_limit]\nsmall = "20000"', "", small + VENUE)
    expect_error(no_cap, "risk.capital_limit.small: required when stage = small",
                 environ={"TEST_VENUE_PW": "x"})
    base = parse(CONFIG_TOML + VENUE)
    assert base.with_stage("paper").stage is Stage.PAPER
    with pytest.raises(ConfigError, match="capital_limit.small"):
        parse(edit('[risk.capital_limit]\nsmall = "20000"', "")).with_stage(Stage.SMALL)
    assert parse(CONFIG_TOML, stage="paper").stage is Stage.PAPER
    with pytest.raises(ConfigError, match="not one of"):
        parse(CONFIG_TOML, stage="prod")
    assert Stage.BACKTEST.next is Stage.PAPER and Stage.LIVE.next is None
    assert [s.uses_venue for s in Stage] == [False, False, True, True, True]


# ----------------------------------------------------------------------------- helpers

def test_check_port_free():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert check_port_free("127.0.0.1", port) is False
        with pytest.raises(ConfigError, match=re.escape(f"monitoring.admin_port: 127.0.0.1:{port} is already in use")):
            ensure_port_free("127.0.0.1", port, "monitoring.admin_port")
    assert check_port_free("127.0.0.1", port) is True
    assert check_port_free("127.0.0.1", 0) is True


def test_check_main(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text(CONFIG_TOML)
    assert check_main(good) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"OK {good}") and "stage backtest" in out.out and out.err == ""
    bad = tmp_path / "bad.toml"
    bad.write_text(edit('max_order_qty = "5"', 'max_order_qty = "5.0001"'))
    assert check_main(bad) == 2
    out = capsys.readouterr()
    assert out.out == "" and "risk.instruments.BTC.max_order_qty" in out.err
    assert "Traceback" not in out.err
    assert check_main(None) == 0


def test_venue_statement_source_is_a_config_key(tmp_path):
    from importlib import resources

    from engine.config import load_config
    text = (resources.files("engine") / "sample_run_config.toml").read_text()
    text = text.replace('feed_session = "VENUE1"', 'feed_session = "VENUE1"\nstatement = "http://127.0.0.1:9881/statement"')
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert load_config(path).venue.statement == "http://127.0.0.1:9881/statement"


def _run_config(tmp_path, extra: str = "", feed_host: str | None = None):
    from importlib import resources

    from engine.config import load_config
    text = (resources.files("engine") / "sample_run_config.toml").read_text()
    if feed_host is not None:
        text = text.replace('feed_host = "127.0.0.1"', f'feed_host = "{feed_host}"')
    text = text.replace('feed_session = "VENUE1"', 'feed_session = "VENUE1"\n' + extra)
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path)


def test_feed_bind_address_defaults_to_the_venues_side_and_is_configurable(tmp_path):
    v = _run_config(tmp_path).venue
    assert (v.feed_bind_host, v.feed_bind_port) == ("127.0.0.1", 0)          # a venue on this box
    assert _run_config(tmp_path, feed_host="10.1.2.3").venue.feed_bind_host == "0.0.0.0"   # a remote one
    v = _run_config(tmp_path, 'feed_bind_host = "10.9.9.9"\nfeed_bind_port = 26400', feed_host="10.1.2.3").venue
    assert (v.feed_bind_host, v.feed_bind_port) == ("10.9.9.9", 26400)


@pytest.mark.parametrize("extra, message", [
    ('feed_bind_host = "eth0"', "venue.feed_bind_host: 'eth0' is not an IP address"),
    ("feed_bind_port = 70000", "venue.feed_bind_port"),
])
def test_feed_bind_address_errors_name_the_key(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _run_config(tmp_path, extra)
