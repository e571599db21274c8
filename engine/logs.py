"""Structured logging: JSON lines written by a background thread, secrets redacted.

``setup_logging(LogConfig(directory=...))`` installs one ``QueueHandler`` on the
``engine`` and ``gateway`` loggers (and on the three record loggers below); a
``QueueListener`` thread formats the records with orjson and writes the files, so no
file I/O happens on the event loop. The caller's thread only copies the record, with
its message formatted, onto the queue -- except for the order, fill and risk lines
(one or more per order event), which the caller formats and redacts itself
(``format_record_line``, a few microseconds, after the order has left): the log thread
only writes them, so it takes the GIL from the event loop once per batch instead of
once per line.

Files in ``directory``:

* ``engine.log`` -- the system log: everything from ``engine.*`` and ``gateway.*``
  (and the root logger) at ``level`` or above, except the record logs below;
* ``orders.log`` -- ``log_order(event, **fields)`` (logger ``engine.orderlog``);
* ``fills.log``  -- ``log_fill(**fields)`` (logger ``engine.filllog``);
* ``risk.log``   -- ``log_risk(event, **fields)`` (logger ``engine.risklog``).

One JSON object per line::

    {"ts":"2024-05-01T13:45:12.123456Z","level":"INFO","logger":"engine.orderlog",
     "msg":"new","cl_ord_id":42,"symbol":"AAPL","qty":100}

``ts`` is UTC with microseconds; fields passed as ``extra=`` (or to the ``log_*``
helpers) become top-level keys; ``exc`` holds a formatted traceback.

Rotation is by size (``rotation="size"``, ``max_bytes``, ``backup_count``) or by time
(``rotation="time"``, ``when``/``interval`` as ``TimedRotatingFileHandler``, in UTC).
With ``archive_dir`` set, a rotated file is gzip-compressed into that directory as
``<name>.<UTC timestamp>.gz`` instead of being kept beside the live file; retention of
the archive is ``engine.store.apply_retention``.

Redaction (`RedactionFilter`, on every file handler): values under keys that look
secret (password, passwd, token, secret, authorization, api_key, routing_key,
private_key, credential, cookie), ``Bearer ...`` and ``key=value`` forms of those
keys inside messages, and every value passed to `register_secret` are replaced by
``[REDACTED]`` before a record is written. Register the admin token, the PagerDuty
routing key, venue passwords at startup.
"""
from __future__ import annotations

import copy
import functools
import gzip
import logging
import logging.handlers
import os
import queue
import re
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from engine.errors import ConfigError

REDACTED = "[REDACTED]"
ORDER_LOGGER = "engine.orderlog"
FILL_LOGGER = "engine.filllog"
RISK_LOGGER = "engine.risklog"
_RECORD_LOGGERS = {ORDER_LOGGER: "orders.log", FILL_LOGGER: "fills.log", RISK_LOGGER: "risk.log"}

# Keys whose values are never logged (matched anywhere in the key, case-insensitive).
_SECRET_KEY_RE = re.compile(
    r"pass(?:word|wd|phrase)?|token|secret|authori[sz]ation|api[_-]?key|routing[_-]?key|"
    r"private[_-]?key|credential|cookie", re.IGNORECASE)
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_KV_RE = re.compile(
    r"(?i)\b([\w-]*(?:pass(?:word|wd|phrase)?|token|secret|authori[sz]ation|api[_-]?key|routing[_-]?key|"
    r"private[_-]?key|credential|cookie)[\w-]*)(\"?'?\s*[:=]\s*\"?'?)([^\s\"',;&}]+)")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_re: re.Pattern[str] | None = None
# short text -> its redaction (format_record_line); cleared when the secrets change
_redacted_short: dict[str, str] = {}

# Attributes every LogRecord has; anything else came in through extra= and is a field.
_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def register_secret(value: str | None) -> None:
    """Never log this value (values shorter than 4 characters are ignored: redacting
    them would mangle ordinary text)."""
    global _secret_re
    if not value or len(value) < 4:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        alts = sorted(_secrets, key=len, reverse=True)
        _secret_re = re.compile("|".join(re.escape(s) for s in alts))
        _redacted_short.clear()


def clear_secrets() -> None:
    """Forget the registered secrets (tests)."""
    global _secret_re
    with _secrets_lock:
        _secrets.clear()
        _secret_re = None
        _redacted_short.clear()


def redact_text(text: str) -> str:
    """The text with registered secrets, bearer credentials and ``secretkey=value``
    pairs replaced by ``[REDACTED]``."""
    pat = _secret_re
    if pat is not None:
        text = pat.sub(REDACTED, text)
    if "earer" in text or "asic" in text:
        text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _KV_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEY_RE.search(key) is not None


_PLAIN = (int, float, bool, type(None))


def redact_value(value: Any, key: str | None = None) -> Any:
    """Redact a field value: everything under a secret-looking key; recursively
    inside mappings and sequences; strings through `redact_text`."""
    if key is not None and _is_secret_key(key):
        return REDACTED
    if type(value) in _PLAIN:          # ids, quantities, prices: nothing to redact
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact_value(v) for v in value]
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return value


class RedactionFilter(logging.Filter):
    """Redacts the message, the traceback and every extra field of a record (it
    modifies the record, so put it on handlers that see a private copy, such as the
    handlers behind a QueueListener)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        for key, value in list(vars(record).items()):
            if key not in _STD_ATTRS:
                setattr(record, key, redact_value(value, key))
        return True


def utc_timestamp(created: float) -> str:
    """``2024-05-01T13:45:12.123456Z`` from an epoch-seconds float."""
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return repr(obj)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, microseconds), level, logger, msg, the
    extra fields, and exc (a traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and key not in doc:
                doc[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info))
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.levelno >= logging.WARNING and record.threadName not in (None, "MainThread"):
            doc["thread"] = record.threadName
        return orjson.dumps(doc, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()


#: the log thread writes at most this often: records queue up in between, so the event
#: loop's put never wakes it (a woken thread takes the GIL from the loop: 20-60 us, and
#: milliseconds when it is preempted holding it)
LOG_WRITE_INTERVAL_S = 0.02


class _RecordLine:
    """An orders/fills/risk log line formatted and redacted on the caller's thread, so the
    log thread only writes it: formatting it there (filters, a LogRecord, the JSON
    formatter) held the GIL 10-30 us a line, and every line was a GIL handoff with
    the event loop."""
    __slots__ = ("logger", "text")

    def __init__(self, logger: str, text: str) -> None:
        self.logger = logger
        self.text = text


class _BatchingQueueListener(logging.handlers.QueueListener):
    """QueueListener that handles what has queued up, then sleeps LOG_WRITE_INTERVAL_S."""

    def _monitor(self) -> None:
        q = self.queue
        has_task_done = hasattr(q, "task_done")
        while True:
            batch = [self.dequeue(True)]
            while True:
                try:
                    batch.append(self.dequeue(False))
                except queue.Empty:
                    break
            stop = False
            for record in batch:
                if record is self._sentinel:
                    stop = True
                elif type(record) is _RecordLine:
                    # formatted on the caller's thread: a string append, no GIL handoff
                    self._write_line(record)
                else:
                    self.handle(record)
                    # hand the GIL back between records: the event loop, if it is waiting
                    # for it, waits for one record's formatting, not for the whole batch
                    time.sleep(0)
                if has_task_done:
                    q.task_done()
            for h in self.handlers:    # the file handlers write a batch with one flush
                try:
                    h.flush()
                except Exception as exc:  # noqa: BLE001 - a full disk must not end the log thread
                    # said where logging itself reports its failures, never swallowed
                    sys.stderr.write(f"engine.logs: flushing {getattr(h, 'baseFilename', h)} failed: {exc!r}\n")
            if stop:
                return
            time.sleep(LOG_WRITE_INTERVAL_S)

    line_handlers: dict[str, logging.Handler] = {}

    def _write_line(self, line: _RecordLine) -> None:
        handler = self.line_handlers.get(line.logger)
        if handler is None:
            return
        try:
            handler.write_text(line.text)           # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a full disk must not end the log thread
            sys.stderr.write(f"engine.logs: writing {getattr(handler, 'baseFilename', handler)} failed: {exc!r}\n")


class _PreparingQueueHandler(logging.handlers.QueueHandler):
    """QueueHandler that keeps the extra fields (the stock one formats them away) and
    formats the message and the traceback on the caller's thread, so the record on
    the queue holds no references to mutable caller objects."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        rec = copy.copy(record)
        rec.msg = record.getMessage()
        rec.args = None
        if record.exc_info:
            rec.exc_text = "".join(traceback.format_exception(*record.exc_info))
        rec.exc_info = None
        rec.stack_info = record.stack_info
        return rec

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:                    # never block the event loop on logging
            self.dropped += 1

    dropped = 0


class _NameFilter(logging.Filter):
    def __init__(self, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> None:
        super().__init__()
        self.include = tuple(include)
        self.exclude = tuple(exclude)

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if self.include and not any(name == p or name.startswith(p + ".") for p in self.include):
            return False
        return not any(name == p or name.startswith(p + ".") for p in self.exclude)


def _archiving_rotator(archive_dir: Path):
    def rotate(source: str, dest: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = archive_dir / f"{Path(source).name}.{stamp}.gz"
        with open(source, "rb") as src, gzip.open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.remove(source)
    return rotate


@dataclass(frozen=True)
class LogConfig:
    """Where and how the engine logs. ``rotation``: "size" or "time" (or "none")."""
    directory: str | os.PathLike[str]
    level: str = "INFO"
    rotation: str = "size"
    max_bytes: int = 64 * 1024 * 1024
    backup_count: int = 10
    when: str = "midnight"
    interval: int = 1
    archive_dir: str | os.PathLike[str] | None = None
    console: bool = False
    queue_size: int = 100_000

    def __post_init__(self) -> None:
        if self.rotation not in ("size", "time", "none"):
            raise ConfigError(f"logging.rotation: expected size, time or none, got {self.rotation!r}")
        if logging.getLevelName(str(self.level).upper()) not in (10, 20, 30, 40, 50):
            raise ConfigError(f"logging.level: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {self.level!r}")
        if self.rotation == "size" and self.max_bytes < 1024:
            raise ConfigError(f"logging.max_bytes: must be >= 1024, got {self.max_bytes}")
        if self.backup_count < 0:
            raise ConfigError(f"logging.backup_count: must be >= 0, got {self.backup_count}")
        if self.interval < 1:
            raise ConfigError(f"logging.interval: must be >= 1, got {self.interval}")
        if self.queue_size < 1:
            raise ConfigError(f"logging.queue_size: must be >= 1, got {self.queue_size}")


class LoggingHandle:
    """What `setup_logging` installed; ``stop()`` flushes and removes it."""

    def __init__(self, listener: logging.handlers.QueueListener, queue_handler: _PreparingQueueHandler,
                 loggers: list[logging.Logger], handlers: list[logging.Handler],
                 saved_levels: dict[str, int]) -> None:
        self.listener = listener
        self.queue_handler = queue_handler
        self.loggers = loggers
        self.handlers = handlers
        self._saved_levels = saved_levels
        self._stopped = False

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full."""
        return self.queue_handler.dropped

    def flush(self) -> None:
        """Wait until every record queued so far has been written (stops and restarts
        the listener thread; for tests and shutdown)."""
        if self._stopped:
            return
        self.listener.stop()
        for h in self.handlers:
            h.flush()
        self.listener.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.queue_handler in _line_sinks:
            _line_sinks.remove(self.queue_handler)
        for lg in self.loggers:
            lg.removeHandler(self.queue_handler)
            if lg.name in self._saved_levels:
                lg.setLevel(self._saved_levels[lg.name])
        self.listener.stop()
        for h in self.handlers:
            h.flush()
            h.close()


class _BatchFlushed:
    """File handlers of the log thread: a record is formatted once and written; the
    flush comes at the end of the listener's batch (one write per batch, not per
    record). The stock rotating handler also formatted each record a second time, and
    stat'ed the file, to decide on rotation."""

    def _rotate_first(self, record: logging.LogRecord | None, msg: str) -> None:
        """Rotate before writing `msg` if it is time to (subclasses)."""

    def write_text(self, msg: str, record: logging.LogRecord | None = None) -> None:
        """Write an already formatted line (a `_RecordLine`'s, or `record` formatted),
        rotating first if due."""
        if self.stream is None:
            self.stream = self._open()
        self._rotate_first(record, msg)
        if self.stream is None:              # the rollover closed it
            self.stream = self._open()
        self.stream.write(msg)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_text(self.format(record) + self.terminator, record)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


class _SizeRotatingFile(_BatchFlushed, logging.handlers.RotatingFileHandler):
    def _rotate_first(self, record: logging.LogRecord | None, msg: str) -> None:
        if self.maxBytes > 0 and self.stream.tell() + len(msg) >= self.maxBytes:
            self.doRollover()


class _TimeRotatingFile(_BatchFlushed, logging.handlers.TimedRotatingFileHandler):
    def _rotate_first(self, record: logging.LogRecord | None, msg: str) -> None:
        if self.shouldRollover(record):      # decided on the clock alone (the record is unused)
            self.doRollover()


class _PlainFile(_BatchFlushed, logging.FileHandler):
    pass


def _file_handler(cfg: LogConfig, path: Path) -> logging.Handler:
    if cfg.rotation == "size":
        h: logging.Handler = _SizeRotatingFile(
            path, maxBytes=cfg.max_bytes, backupCount=cfg.backup_count, encoding="utf-8")
    elif cfg.rotation == "time":
        h = _TimeRotatingFile(
            path, when=cfg.when, interval=cfg.interval, backupCount=cfg.backup_count, encoding="utf-8",
            utc=True)
    else:
        h = _PlainFile(path, encoding="utf-8")
    if cfg.archive_dir is not None and cfg.rotation != "none":
        h.rotator = _archiving_rotator(Path(cfg.archive_dir))       # type: ignore[attr-defined]
    return h


def setup_logging(config: LogConfig, *, secrets: Iterable[str] = (),
                  loggers: Iterable[str] = ("engine", "gateway")) -> LoggingHandle:
    """Install the queue-based JSON logging described in the module docstring."""
    directory = Path(config.directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if config.archive_dir is not None:
            Path(config.archive_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"logging.directory: cannot create {exc.filename}: {exc.strerror}") from exc
    for s in secrets:
        register_secret(s)
    level = logging.getLevelName(str(config.level).upper())
    formatter = JsonFormatter()
    redaction = RedactionFilter()
    handlers: list[logging.Handler] = []

    system = _file_handler(config, directory / "engine.log")
    system.setLevel(level)
    system.addFilter(_NameFilter(exclude=_RECORD_LOGGERS))
    handlers.append(system)
    line_handlers: dict[str, logging.Handler] = {}
    for name, filename in _RECORD_LOGGERS.items():
        h = _file_handler(config, directory / filename)
        h.addFilter(_NameFilter(include=[name]))
        handlers.append(h)
        line_handlers[name] = h
    if config.console:
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(level)
        console.addFilter(_NameFilter(exclude=_RECORD_LOGGERS))
        handlers.append(console)
    for h in handlers:
        h.addFilter(redaction)          # redaction runs after the name filter, on the listener thread
        h.setFormatter(formatter)

    q: queue.Queue[logging.LogRecord] = queue.Queue(config.queue_size)
    qh = _PreparingQueueHandler(q)
    listener = _BatchingQueueListener(q, *handlers, respect_handler_level=True)
    # the record loggers' lines skip the filters: _emit formats and redacts them
    listener.line_handlers = line_handlers
    installed: list[logging.Logger] = []
    saved: dict[str, int] = {}
    for name in [*loggers, *_RECORD_LOGGERS]:
        lg = logging.getLogger(name)
        saved[name] = lg.level
        lg.addHandler(qh)
        if name in _RECORD_LOGGERS:
            lg.setLevel(logging.INFO)
            lg.propagate = False
        else:
            lg.setLevel(level)
        installed.append(lg)
    listener.start()
    _line_sinks.append(qh)
    return LoggingHandle(listener, qh, installed, handlers, saved)


# the queue handlers of the installed setups (setup_logging): record lines go onto
# their queues directly, formatted (one entry per setup; normally exactly one)
_line_sinks: list[_PreparingQueueHandler] = []

# (epoch second, "YYYY-MM-DDTHH:MM:SS") of the last record line: the date part is
# formatted once a second, not per line
_ts_second: tuple[int, str] = (-1, "")


def _utc_timestamp_ns(t_ns: int) -> str:
    """`utc_timestamp` from epoch nanoseconds, the date formatted once a second."""
    global _ts_second
    sec, ns = divmod(t_ns, 1_000_000_000)
    cached = _ts_second
    if cached[0] != sec:
        cached = _ts_second = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{ns // 1000:06d}Z"


def format_record_line(logger_name: str, event: str, fields: Mapping[str, Any],
                       t_ns: int | None = None) -> str:
    """The JSON line (with its newline) the JSON formatter writes for a record logger's
    `event` with `fields`, redacted as `RedactionFilter` would: the same keys in the
    same order (a field named like a LogRecord attribute gets a trailing ``_``; one
    named ts, level, logger or msg is dropped)."""
    doc: dict[str, Any] = {
        "ts": _utc_timestamp_ns(time.time_ns() if t_ns is None else t_ns),
        "level": "INFO",
        "logger": logger_name,
        "msg": _redact_short(str(event)),
    }
    for key, value in fields.items():
        out_key, secret = _field_key(key)
        if out_key in doc:
            continue
        if secret:
            doc[out_key] = REDACTED
        elif type(value) in _PLAIN:
            doc[out_key] = value
        elif type(value) is str:
            doc[out_key] = _redact_short(value)
        else:
            doc[out_key] = redact_value(value)
    return orjson.dumps(doc, default=_default, option=orjson.OPT_NON_STR_KEYS).decode() + "\n"


# field name -> (the key it is written under, whether its value is always redacted)
_field_keys: dict[str, tuple[str, bool]] = {}


def _field_key(key: str) -> tuple[str, bool]:
    out = _field_keys.get(key)
    if out is None:
        renamed = f"{key}_" if key in _STD_ATTRS else key
        out = _field_keys[key] = (renamed, _is_secret_key(renamed))
    return out


def _redact_short(text: str) -> str:
    """`redact_text`, remembered for short strings (event names, symbols, reasons: a
    small set, each redacted once rather than three regex passes a line). The memory
    is forgotten whenever the registered secrets change."""
    if len(text) > 64:
        return redact_text(text)
    cache = _redacted_short
    out = cache.get(text)
    if out is None:
        if len(cache) >= 4096:
            cache.clear()
        out = cache[text] = redact_text(text)
    return out


def _emit(logger_name: str, event: str, fields: Mapping[str, Any]) -> None:
    if _line_sinks:
        line = _RecordLine(logger_name, format_record_line(logger_name, event, fields))
        for sink in _line_sinks:
            sink.enqueue(line)
        return
    lg = logging.getLogger(logger_name)
    if lg.isEnabledFor(logging.INFO):
        clash = _STD_ATTRS.intersection(fields)
        extra = {(f"{k}_" if k in clash else k): v for k, v in fields.items()} if clash else dict(fields)
        # the record directly (Logger.info would walk the stack for the caller's file and
        # line, which these JSON lines do not carry): this runs on the event loop, once
        # per order event
        lg.handle(lg.makeRecord(logger_name, logging.INFO, "", 0, event, None, None, extra=extra))


def log_order(event: str, **fields: Any) -> None:
    """One line in orders.log: ``event`` (new, ack, cancel, replace, reject, ...) and fields."""
    _emit(ORDER_LOGGER, event, fields)


def log_fill(**fields: Any) -> None:
    """One line in fills.log."""
    _emit(FILL_LOGGER, "fill", fields)


def log_risk(event: str, **fields: Any) -> None:
    """One line in risk.log: ``event`` (reject, breach, kill, reset, ...) and fields."""
    _emit(RISK_LOGGER, event, fields)
