"""Runner for QuickFIX's FIX 4.4 acceptance-test definitions (../shared/fix-at).

Independent of our codec on purpose: it frames, fills and compares FIX bytes with
plain Python so that a bug in core_ext.fix cannot hide a bug in the session layer.
Format: ../shared/fix-at/README.md.
"""
from __future__ import annotations

import datetime as dt
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

SOH = b"\x01"
TIME_TOKEN = re.compile(rb"<TIME([+-]\d+)?>")


@dataclass(frozen=True)
class Step:
    line_no: int
    action: str          # "connect", "disconnect", "send", "expect", "expect_disconnect"
    conn: int            # connection number (1 when the file does not number them)
    payload: bytes = b""


def load_field_formats(path: Path) -> dict[int, re.Pattern]:
    formats = {}
    for line in path.read_bytes().splitlines():
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        tag, _, pattern = line.partition(b"=")
        formats[int(tag)] = re.compile(pattern)
    return formats


def parse_definition(path: Path) -> list[Step]:
    steps = []
    for no, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        line = raw.rstrip(b"\r")
        if not line.strip() or line.startswith(b"#"):
            continue
        kind, rest = chr(line[0]), line[1:]
        conn = 1
        m = re.match(rb"(\d+),", rest)
        if m:
            conn = int(m.group(1))
            rest = rest[m.end():]
        if kind == "i" and rest == b"CONNECT":
            steps.append(Step(no, "connect", conn))
        elif kind == "i" and rest == b"DISCONNECT":
            steps.append(Step(no, "disconnect", conn))
        elif kind == "e" and rest == b"DISCONNECT":
            steps.append(Step(no, "expect_disconnect", conn))
        elif kind == "I":
            steps.append(Step(no, "send", conn, rest))
        elif kind == "E":
            steps.append(Step(no, "expect", conn, rest))
        else:
            raise ValueError(f"{path.name}:{no}: unknown action line {line[:40]!r}")
    return steps


def fix_time(now: dt.datetime, token: re.Match) -> bytes:
    shift = int(token.group(1)) if token.group(1) else 0
    return (now + dt.timedelta(seconds=shift)).strftime("%Y%m%d-%H:%M:%S").encode()


def fill_message(msg: bytes, now: dt.datetime | None = None, expected: bool = False) -> bytes:
    """Substitute <TIME±N>, then add BodyLength and CheckSum.

    A sent line that carries its own BodyLength or CheckSum is sent as written (the tests
    of bad lengths and checksums); an expected line gets whichever of the two it lacks.
    """
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    msg = TIME_TOKEN.sub(lambda m: fix_time(now, m), msg)
    has_length = SOH + b"9=" in msg
    has_checksum = msg.startswith(b"10=") or SOH + b"10=" in msg
    if not expected and (has_length or has_checksum):
        return msg
    if not has_length:
        first_end = msg.index(SOH) + 1
        begin, body = msg[:first_end], msg[first_end:]
        msg = begin + b"9=%d" % len(body) + SOH + body
    if not has_checksum:
        msg = msg + b"10=%03d" % (sum(msg) % 256) + SOH
    return msg


def split_fields(msg: bytes) -> list[tuple[int, bytes]]:
    fields = []
    for part in msg.split(SOH):
        if not part:
            continue
        tag, _, value = part.partition(b"=")
        fields.append((int(tag), value))
    return fields


def match_message(expected: bytes, received: bytes, formats: dict[int, re.Pattern]) -> str | None:
    """None when they match, else a description of the first difference."""
    exp, got = split_fields(expected), split_fields(received)
    for i, (e, g) in enumerate(zip(exp, got, strict=False)):   # lengths compared below
        if e[0] != g[0]:
            return f"field {i}: expected tag {e[0]}, got tag {g[0]}"
        pattern = formats.get(e[0])
        if pattern is not None:
            if not pattern.search(g[1]):
                return f"tag {e[0]}: value {g[1]!r} does not match /{pattern.pattern}/"
        elif e[1] != g[1]:
            return f"tag {e[0]}: expected {e[1]!r}, got {g[1]!r}"
    if len(exp) != len(got):
        return f"expected {len(exp)} fields, got {len(got)}"
    return None


class Connection:
    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def read_message(self, timeout: float) -> bytes | None:
        """Next whole FIX message, framed by BodyLength; None when the peer closed."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.match(rb"8=[^\x01]*\x019=(\d+)\x01", self.buffer)
            if m:
                end_body = m.end() + int(m.group(1))
                trailer = re.compile(rb"10=\d{3}\x01").match(self.buffer, end_body)
                if trailer:
                    msg, self.buffer = self.buffer[:trailer.end()], self.buffer[trailer.end():]
                    return msg
            if self.closed or not self._fill(deadline):
                return None

    def wait_closed(self, timeout: float) -> bytes | None:
        """Wait for the peer to close; returns unexpected bytes received meanwhile, if any."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            if self.buffer:
                return self.buffer
            self._fill(deadline)
        return self.buffer or None

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.closed = True


class DefinitionFailed(AssertionError):
    pass


def run_definition(path: Path, host: str, port: int, formats: dict[int, re.Pattern],
                   expect_timeout: float = 10.0) -> int:
    """Replay one .def against an acceptor. Raises DefinitionFailed naming the line; returns steps run."""
    conns: dict[int, Connection] = {}
    steps = parse_definition(path)
    try:
        for step in steps:
            where = f"{path.name}:{step.line_no}"
            if step.action == "connect":
                conns[step.conn] = Connection(host, port)
            elif step.action == "disconnect":
                conns.pop(step.conn).close()
            elif step.action == "send":
                conns[step.conn].send(fill_message(step.payload))
            elif step.action == "expect":
                expected = fill_message(step.payload, expected=True)
                try:
                    got = conns[step.conn].read_message(expect_timeout)
                except TimeoutError:
                    raise DefinitionFailed(f"{where}: no message within {expect_timeout}s; expected "
                                           f"{expected!r}") from None
                if got is None:
                    raise DefinitionFailed(f"{where}: connection closed; expected {expected!r}")
                diff = match_message(expected, got, formats)
                if diff:
                    raise DefinitionFailed(f"{where}: {diff}\n expected {expected!r}\n received {got!r}")
            elif step.action == "expect_disconnect":
                try:
                    extra = conns[step.conn].wait_closed(expect_timeout)
                except TimeoutError:
                    raise DefinitionFailed(f"{where}: acceptor did not disconnect within "
                                           f"{expect_timeout}s") from None
                if extra:
                    raise DefinitionFailed(f"{where}: expected a disconnect, received {extra!r}")
        return len(steps)
    finally:
        for conn in conns.values():
            conn.close()
