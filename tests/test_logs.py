"""Tests of engine/logs.py: JSON lines through a queue and a listener thread, the
separate order/fill/risk logs, rotation and archival, and redaction of secrets."""
from __future__ import annotations

import gzip
import logging
import logging.handlers
import re
import threading

import orjson
import pytest

from engine import logs
from engine.errors import ConfigError

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def setup(tmp_path):
    handles = []

    def make(**kw):
        kw.setdefault("directory", tmp_path / "logs")
        secrets = kw.pop("secrets", ())
        h = logs.setup_logging(logs.LogConfig(**kw), secrets=secrets)
        handles.append(h)
        return h

    yield make
    for h in handles:
        h.stop()
    logs.clear_secrets()


def lines(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_json_lines_with_utc_microsecond_timestamps_and_fields(setup, tmp_path):
    h = setup()
    log = logging.getLogger("engine.test")
    log.info("order %s sent", 42, extra={"symbol": "AAPL", "qty": 100, "tags": ("a", "b")})
    try:
        raise ValueError("bad price")
    except ValueError:
        log.exception("while pricing")
    logging.getLogger("gateway.fix").warning("resend %d..%d", 3, 7)
    h.flush()
    recs = lines(tmp_path / "logs" / "engine.log")
    assert [r["msg"] for r in recs] == ["order 42 sent", "while pricing", "resend 3..7"]
    first = recs[0]
    assert TS_RE.match(first["ts"]) and first["level"] == "INFO" and first["logger"] == "engine.test"
    assert first["symbol"] == "AAPL" and first["qty"] == 100 and first["tags"] == ["a", "b"]
    assert "ValueError: bad price" in recs[1]["exc"] and recs[1]["level"] == "ERROR"
    assert recs[2]["logger"] == "gateway.fix"


def test_order_fill_and_risk_logs_are_separate(setup, tmp_path):
    h = setup()
    logs.log_order("new", cl_ord_id=7, symbol="AAPL", side="buy", qty=10, price=12345, name="clash")
    logs.log_fill(cl_ord_id=7, exec_id="E1", qty=10, price=12345)
    logs.log_risk("reject", reason="max_position", cl_ord_id=8)
    logging.getLogger("engine.system").info("system line")
    h.flush()
    d = tmp_path / "logs"
    (o,) = lines(d / "orders.log")
    assert o["msg"] == "new" and o["cl_ord_id"] == 7 and o["name_"] == "clash" and o["logger"] == logs.ORDER_LOGGER
    (f,) = lines(d / "fills.log")
    assert f["exec_id"] == "E1"
    (r,) = lines(d / "risk.log")
    assert r["msg"] == "reject" and r["reason"] == "max_position"
    assert [x["msg"] for x in lines(d / "engine.log")] == ["system line"]      # records not duplicated there


def test_levels_are_respected(setup, tmp_path):
    h = setup(level="WARNING")
    log = logging.getLogger("engine.lvl")
    log.info("hidden")
    log.warning("shown")
    h.flush()
    assert [x["msg"] for x in lines(tmp_path / "logs" / "engine.log")] == ["shown"]


def test_file_io_happens_on_the_listener_thread(setup, tmp_path):
    h = setup()
    threads = []
    system = h.handlers[0]
    orig = system.emit

    def spy(record):
        threads.append(threading.current_thread())
        orig(record)

    system.emit = spy
    logging.getLogger("engine.t").info("x")
    h.flush()
    assert threads and all(t is not threading.main_thread() for t in threads)


def test_redaction_of_keys_registered_values_bearer_and_pairs(setup, tmp_path):
    h = setup(secrets=["hunter2-venue-password"])
    log = logging.getLogger("engine.sec")
    log.info("logon with %s", "hunter2-venue-password",
             extra={"password": "p4ss", "config": {"api_key": "k-123", "nested": [{"token": "t"}], "port": 9},
                    "Authorization": "Bearer abc"})
    log.warning("header Authorization: Bearer eyJhbGciOi.payload.sig and token=abcdef12 secret: s3cr3t")
    try:
        raise RuntimeError("login failed for hunter2-venue-password")
    except RuntimeError:
        log.exception("oops")
    logs.log_order("new", password="x1234", symbol="AAPL")
    h.flush()
    text = (tmp_path / "logs" / "engine.log").read_text() + (tmp_path / "logs" / "orders.log").read_text()
    for secret in ("hunter2-venue-password", "p4ss", "k-123", "eyJhbGciOi", "abcdef12", "s3cr3t", "x1234"):
        assert secret not in text, secret
    recs = lines(tmp_path / "logs" / "engine.log")
    assert recs[0]["password"] == logs.REDACTED
    assert recs[0]["config"]["api_key"] == logs.REDACTED and recs[0]["config"]["port"] == 9
    assert recs[0]["config"]["nested"][0]["token"] == logs.REDACTED
    assert "AAPL" in text                                        # ordinary values untouched


def test_short_values_are_not_registered_as_secrets():
    logs.register_secret("ab")
    try:
        assert logs.redact_text("abc ab") == "abc ab"
    finally:
        logs.clear_secrets()


def test_size_rotation_archives_gzipped_files(setup, tmp_path):
    arch = tmp_path / "archive"
    h = setup(max_bytes=2048, backup_count=3, archive_dir=arch)
    log = logging.getLogger("engine.rot")
    for i in range(200):
        log.info("line %d", i, extra={"pad": "x" * 40})
    h.flush()
    gz = sorted(arch.glob("engine.log.*.gz"))
    assert len(gz) >= 3
    archived = [orjson.loads(x)["msg"] for g in gz for x in gzip.decompress(g.read_bytes()).splitlines()]
    current = [x["msg"] for x in lines(tmp_path / "logs" / "engine.log")]
    assert sorted(archived + current, key=lambda s: int(s.split()[1])) == [f"line {i}" for i in range(200)]
    assert not list((tmp_path / "logs").glob("engine.log.1"))          # archived, not kept beside


def test_time_rotation_keeps_backups_beside_the_live_file(setup, tmp_path):
    h = setup(rotation="time", when="S", interval=1, backup_count=2)
    log = logging.getLogger("engine.time")
    log.info("before")
    h.flush()
    h.handlers[0].rolloverAt = 0                     # due now (instead of sleeping a second)
    log.info("after")
    h.flush()
    d = tmp_path / "logs"
    rotated = [p for p in d.iterdir() if p.name.startswith("engine.log.")]
    assert len(rotated) == 1
    assert [x["msg"] for x in lines(rotated[0])] == ["before"]
    assert [x["msg"] for x in lines(d / "engine.log")] == ["after"]


@pytest.mark.parametrize("kw,what", [
    ({"rotation": "weekly"}, "logging.rotation"),
    ({"level": "LOUD"}, "logging.level"),
    ({"max_bytes": 10}, "logging.max_bytes"),
    ({"backup_count": -1}, "logging.backup_count"),
])
def test_config_validation(tmp_path, kw, what):
    with pytest.raises(ConfigError, match=what):
        logs.LogConfig(directory=tmp_path, **kw)


def test_stop_removes_the_handlers(setup, tmp_path):
    h = setup()
    h.stop()
    logging.getLogger("engine.after").warning("after stop")
    assert "after stop" not in (tmp_path / "logs" / "engine.log").read_text()
    assert not any(isinstance(x, logging.handlers.QueueHandler) for x in logging.getLogger("engine").handlers)


def test_utc_timestamp():
    assert logs.utc_timestamp(1714571112.123456) == "2024-05-01T13:45:12.123456Z"
