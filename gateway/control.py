"""A tiny HTTP control endpoint for the venue simulator (asyncio streams, no framework).

Serves one request per connection (Connection: close), JSON via orjson:

  GET  /faults      the current faults (gateway.exchange.Faults.snapshot())
  POST /faults      a JSON object of changes (Faults.apply): e.g.
                    {"reject_rate": 0.5, "reject_seed": 3}, {"ack_delay_ms": 200},
                    {"halt": "AAPL"}, {"resume": ["AAPL"]}, {"drop_connection": true},
                    {"drop_connection": "ENGINE"}, {"drop_after_orders": 5}
  GET  /statement   the broker statement (text/csv; columns in gateway.exchange)
  GET  /status      counters (JSON)
  GET  /healthz     "ok"

Binds 127.0.0.1 by default. Bad requests get 400 with {"error": "..."} naming what was
wrong; unknown paths 404; wrong methods 405. Requests are bounded (8 KiB of head,
64 KiB of body, 5 s).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from gateway.exchange import ExchangeError, Faults

log = logging.getLogger("gateway.control")

MAX_HEAD = 8192
MAX_BODY = 65536
REQUEST_TIMEOUT_S = 5.0
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Payload Too Large", 500: "Internal Server Error"}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ControlServer:
    """HTTP control of a running venue: faults, statement, status."""

    def __init__(self, faults: Faults, statement: Callable[[], str], status: Callable[[], dict[str, Any]]) -> None:
        self.faults = faults
        self.statement = statement
        self.status = status
        self.server: asyncio.AbstractServer | None = None
        self.requests = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        try:
            try:
                method, path, body = await asyncio.wait_for(self._read(reader), REQUEST_TIMEOUT_S)
                status, ctype, payload = self._route(method, path, body)
            except HttpError as exc:
                status, ctype, payload = exc.status, "application/json", orjson.dumps({"error": exc.message})
            except TimeoutError:
                status, ctype, payload = 408, "application/json", orjson.dumps({"error": "request timed out"})
            except Exception as exc:   # a bug must not take the venue down
                log.exception("control: request failed")
                status, ctype, payload = 500, "application/json", orjson.dumps({"error": f"internal error: {exc}"})
            head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode("ascii")
            writer.write(head + payload)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def _read(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as exc:
            raise HttpError(400, "request line too long") from exc
        except asyncio.IncompleteReadError as exc:
            raise HttpError(400, "incomplete request") from exc
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpError(400, "malformed request line")
        method, path, _ = parts
        length = 0
        total = len(line)
        while True:
            try:
                header = await reader.readuntil(b"\r\n")
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError) as exc:
                raise HttpError(400, "malformed or too long headers") from exc
            total += len(header)
            if total > MAX_HEAD:
                raise HttpError(400, "headers too long")
            if header == b"\r\n":
                break
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError as exc:
                    raise HttpError(400, f"Content-Length {value.strip()!r} is not a number") from exc
                if length < 0:
                    raise HttpError(400, "negative Content-Length")
                if length > MAX_BODY:
                    raise HttpError(413, f"body of {length} bytes is above the limit of {MAX_BODY}")
        body = await reader.readexactly(length) if length else b""
        return method, path.split("?", 1)[0], body

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        if path == "/faults":
            if method == "GET":
                return 200, "application/json", orjson.dumps(self.faults.snapshot())
            if method == "POST":
                try:
                    changes = orjson.loads(body) if body else None
                except orjson.JSONDecodeError as exc:
                    raise HttpError(400, f"body is not JSON: {exc}") from exc
                try:
                    out = self.faults.apply(changes)
                except ExchangeError as exc:
                    raise HttpError(400, str(exc)) from exc
                log.warning("control: faults changed: %s -> %s", changes, out)
                return 200, "application/json", orjson.dumps(out)
            raise HttpError(405, f"{method} not allowed on /faults (GET, POST)")
        if path in ("/statement", "/status", "/healthz"):
            if method != "GET":
                raise HttpError(405, f"{method} not allowed on {path} (GET)")
            if path == "/statement":
                return 200, "text/csv; charset=utf-8", self.statement().encode("utf-8")
            if path == "/status":
                return 200, "application/json", orjson.dumps(self.status())
            return 200, "text/plain", b"ok\n"
        raise HttpError(404, f"no such path {path!r}; try /faults, /statement, /status, /healthz")
