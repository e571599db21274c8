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


def _through_logging(logger_name, event, fields):
    """The line the logging path writes (a record, RedactionFilter, JsonFormatter)."""
    clash = logs._STD_ATTRS.intersection(fields)
    extra = {(f"{k}_" if k in clash else k): v for k, v in fields.items()}
    rec = logging.getLogger(logger_name).makeRecord(logger_name, logging.INFO, "", 0, event, None, None,
                                                    extra=extra)
    rec.created = 1714571112.123456                  # a fixed instant: both paths format it
    assert logs.RedactionFilter().filter(rec)
    return logs.JsonFormatter().format(rec)


@pytest.mark.parametrize("event,fields", [
    ("PendingNew", {"cl_ord_id": 2**63 - 5, "symbol": "AAPL", "side": 0, "qty": 1, "price": 9972, "cum_qty": 0,
                    "reason": None}),
    ("new token=abcdef12", {"name": "clash", "msg": "dropped", "ts": "dropped", "password": "p4ss",
                            "nested": {"api_key": "k", "ok": [1.5, ("a", b"b")]}, "note": "Bearer xyz.abc"}),
])
def test_record_lines_formatted_on_the_caller_match_the_logging_path(event, fields):
    logs.register_secret("hunter2-venue-password")
    try:
        fields = dict(fields, detail="pw hunter2-venue-password")
        expected = _through_logging(logs.ORDER_LOGGER, event, fields)
        line = logs.format_record_line(logs.ORDER_LOGGER, event, fields, t_ns=1714571112_123456_000)
    finally:
        logs.clear_secrets()
    assert line.endswith("\n") and line.count("\n") == 1
    got = orjson.loads(line)
    want = orjson.loads(expected)
    assert list(got) == list(want)                   # same keys, same order
    assert got == want                               # the same timestamp, values and redactions
    assert "hunter2" not in line and "p4ss" not in line and "abcdef12" not in line and "xyz.abc" not in line


def test_record_lines_go_through_the_queue_and_rotate(setup, tmp_path):
    arch = tmp_path / "archive"
    h = setup(max_bytes=2048, backup_count=3, archive_dir=arch)
    writer = threading.current_thread()
    for i in range(100):
        logs.log_order("New", cl_ord_id=i, symbol="AAPL", pad="x" * 40)
    h.flush()
    assert writer is threading.main_thread()
    gz = sorted(arch.glob("orders.log.*.gz"))
    assert len(gz) >= 2                              # rotation applies to record lines too
    archived = [orjson.loads(x)["cl_ord_id"] for g in gz for x in gzip.decompress(g.read_bytes()).splitlines()]
    current = [x["cl_ord_id"] for x in lines(tmp_path / "logs" / "orders.log")]
    assert sorted(archived + current) == list(range(100))
    assert not (tmp_path / "logs" / "engine.log").read_text()   # nothing leaked into the system log


def test_record_lines_after_stop_go_to_standard_logging(setup, tmp_path, caplog):
    h = setup()
    h.stop()
    with caplog.at_level(logging.INFO, logger=logs.ORDER_LOGGER):
        logging.getLogger(logs.ORDER_LOGGER).propagate = True
        try:
            logs.log_order("New", cl_ord_id=1)
        finally:
            logging.getLogger(logs.ORDER_LOGGER).propagate = False
    assert "New" in [r.getMessage() for r in caplog.records if r.name == logs.ORDER_LOGGER]
    assert not (tmp_path / "logs" / "orders.log").read_text()


def test_a_secret_registered_later_is_redacted_from_remembered_short_strings():
    first = orjson.loads(logs.format_record_line(logs.ORDER_LOGGER, "New", {"reason": "key s3cr3t-value"}))
    assert first["reason"] == "key s3cr3t-value"
    logs.register_secret("s3cr3t-value")
    try:
        again = orjson.loads(logs.format_record_line(logs.ORDER_LOGGER, "New", {"reason": "key s3cr3t-value"}))
    finally:
        logs.clear_secrets()
    assert again["reason"] == f"key {logs.REDACTED}"
