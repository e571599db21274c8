"""The admin endpoint: a small HTTP/1.1 server on asyncio streams (no framework),
bound to 127.0.0.1 by default.

=====================  ====  ===========================================================
``GET  /metrics``      open  Prometheus text format (``engine.metrics.CONTENT_TYPE``)
``GET  /healthz``      open  200 ``{"status":"ok"}`` or 503 with the health callback's detail
``GET  /status``       open  JSON from the status callback
``POST /kill``         auth  body ``{"flatten": bool, "reason": str}`` (both optional)
``POST /kill/reset``   auth  body ``{"reason": str}`` (optional)
``POST /flatten``      auth  body ``{"reason": str}`` (optional)
``POST /reconcile``    auth  no body
=====================  ====  ===========================================================

Acting endpoints need ``Authorization: Bearer <token>``: 401 without it, 403 with a
wrong one (constant-time comparison). With no token configured they are refused
(403): fail closed. The token is registered with `engine.logs` as a secret and never
logged. The runtime registers the handlers (``on_kill``, ``on_kill_reset``,
``on_flatten``, ``on_reconcile``); a handler may be sync or async and returns a
JSON-serialisable result; raising `AdminActionError` answers 409 with its message
(e.g. "the kill switch is not tripped"); any other exception answers 500. An action
without a registered handler answers 503.

Every answer is JSON (except /metrics): ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. Malformed requests get 400 (413 body too large, 431
headers too large, 408 too slow, 501 chunked bodies) with a message naming what was
wrong; the connection is closed after each answer and the server keeps serving.

`admin_request` is the client the ``engine status``/``kill``/``reconcile`` commands use;
`status_main`, `kill_main`, `kill_reset_main`, `flatten_main`, `reconcile_main` are
those commands' bodies.
"""
from __future__ import annotations

import asyncio
import hmac
import http.client
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson

from engine.errors import EngineError

log = logging.getLogger("engine.admin")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464
TOKEN_ENV = "ENGINE_ADMIN_TOKEN"

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 411: "Length Required",
            413: "Content Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}
_TOKEN_RE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_JSON = "application/json"


class AdminActionError(EngineError):
    """Raised by an admin handler to refuse an action with a message (answered 409)."""


class AdminClientError(EngineError):
    """The admin endpoint could not be reached or answered garbage."""


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def resolve_token(configured: str | None = None, env: str = TOKEN_ENV) -> str | None:
    """The admin token: the configured value, else the environment variable, else None
    (acting endpoints disabled)."""
    token = configured if configured else os.environ.get(env) or None
    return token


@dataclass
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes
    peer: str = ""


Handler = Callable[..., Any]


@dataclass
class _Route:
    method: str
    acting: bool
    keys: frozenset[str] = field(default_factory=frozenset)     # allowed JSON body keys


_ROUTES = {
    "/metrics": _Route("GET", False),
    "/healthz": _Route("GET", False),
    "/status": _Route("GET", False),
    "/kill": _Route("POST", True, frozenset({"flatten", "reason"})),
    "/kill/reset": _Route("POST", True, frozenset({"reason"})),
    "/flatten": _Route("POST", True, frozenset({"reason"})),
    "/reconcile": _Route("POST", True, frozenset({"statement"})),
}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return str(obj)


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_json_default,
                        option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)


class AdminServer:
    """See the module docstring. ``metrics``: an object with ``render() -> bytes``
    (`engine.metrics.EngineMetrics`) or a callable returning bytes; ``status``: a
    callable returning a JSON-serialisable object; ``health``: a callable returning a
    bool or ``(bool, detail)``. Any callback may be async."""

    def __init__(self, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
                 metrics: Any = None, status: Handler | None = None, health: Handler | None = None,
                 max_body: int = 64 * 1024, max_header_bytes: int = 16 * 1024, max_headers: int = 100,
                 read_timeout_s: float = 10.0, max_connections: int = 64) -> None:
        if not 0 <= port <= 65535:
            raise EngineError(f"admin port {port}: must be in 0..65535")
        self.host = host
        self.port = port
        self._token = token or None
        if self._token is not None:
            from engine.logs import register_secret
            register_secret(self._token)
        self._metrics = metrics
        self._status = status
        self._health = health
        self._handlers: dict[str, Handler] = {}
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.read_timeout_s = read_timeout_s
        self.max_connections = max_connections
        self._server: asyncio.base_events.Server | None = None
        self._active = 0
        self._conns: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.stats = {"requests": 0, "bad_requests": 0, "unauthorized": 0, "actions": 0}

    # ------------------------------------------------------------ registration

    @property
    def token_configured(self) -> bool:
        return self._token is not None

    def on_kill(self, fn: Handler) -> None:
        """``fn(flatten: bool, reason: str)``: trip the kill switch (and flatten if asked)."""
        self._handlers["/kill"] = fn

    def on_kill_reset(self, fn: Handler) -> None:
        """``fn(reason: str)``: operator reset of the latched kill switch."""
        self._handlers["/kill/reset"] = fn

    def on_flatten(self, fn: Handler) -> None:
        """``fn(reason: str)``: close every position."""
        self._handlers["/flatten"] = fn

    def on_reconcile(self, fn: Handler) -> None:
        """``fn()``: reconcile with the venue now; return the report."""
        self._handlers["/reconcile"] = fn

    def set_status(self, fn: Handler | None) -> None:
        self._status = fn

    def set_health(self, fn: Handler | None) -> None:
        self._health = fn

    def set_metrics(self, metrics: Any) -> None:
        self._metrics = metrics

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and serve; ``self.port`` is the bound port afterwards (useful with 0)."""
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(self._on_connection, self.host, self.port,
                                                      limit=self.max_header_bytes, reuse_address=True)
        except OSError as exc:
            raise EngineError(f"admin endpoint: cannot listen on {self.host}:{self.port}: "
                              f"{exc.strerror or exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("admin endpoint listening on http://%s:%d (acting endpoints %s)", self.host, self.port,
                 "enabled" if self._token else "DISABLED: no token configured")

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # end open connections by aborting their transports: their reads fail and the
        # handlers return normally (cancelling them would log errors from asyncio)
        for writer in list(self._conns.values()):
            writer.transport.abort()
        tasks = list(self._conns)
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        await server.wait_closed()

    async def __aenter__(self) -> AdminServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ connection

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns[task] = writer
        peer = writer.get_extra_info("peername")
        peer_s = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self._active += 1
        try:
            if self._active > self.max_connections:
                await self._send(writer, 503, _dumps({"ok": False, "error": "too many connections"}), _JSON)
                await self._linger(reader, writer)
                return
            try:
                req = await asyncio.wait_for(self._read_request(reader), self.read_timeout_s)
                req.peer = peer_s
            except TimeoutError:
                self.stats["bad_requests"] += 1
                await self._send(writer, 408, _dumps({"ok": False, "error": "request not received in time"}), _JSON)
                return
            except _HttpError as exc:
                self.stats["bad_requests"] += 1
                await self._send(writer, exc.status, _dumps({"ok": False, "error": exc.message}), _JSON,
                                 exc.headers)
                await self._linger(reader, writer)
                return
            self.stats["requests"] += 1
            status, body, ctype, headers = await self._dispatch(req)
            await self._send(writer, status, body, ctype, headers, head_only=False)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:                                   # the server never dies on one connection
            log.exception("admin endpoint: unexpected error on a connection from %s", peer_s)
        finally:
            self._active -= 1
            try:
                writer.close()
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            if task is not None:
                self._conns.pop(task, None)

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """After an early answer: stop sending and discard what the client still sends
        (briefly), so closing with unread input does not reset the connection before
        the client has read the answer."""
        try:
            if writer.can_write_eof():
                writer.write_eof()
            deadline = asyncio.get_running_loop().time() + 1.0
            received = 0
            while received < 1 << 20:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                chunk = await asyncio.wait_for(reader.read(65536), left)
                if not chunk:
                    break
                received += len(chunk)
        except (TimeoutError, ConnectionError, OSError, asyncio.LimitOverrunError, ValueError):
            pass

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _HttpError(431, "request line too long") from None
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise ConnectionResetError("client closed before sending a request") from None
            raise _HttpError(400, "incomplete request line") from None
        parts = line.rstrip(b"\r\n").split(b" ")
        if len(parts) != 3:
            raise _HttpError(400, "malformed request line: expected 'METHOD /path HTTP/1.1'")
        method_b, target_b, version_b = parts
        if not _TOKEN_RE.match(method_b):
            raise _HttpError(400, "malformed request line: bad method")
        if version_b not in (b"HTTP/1.1", b"HTTP/1.0"):
            if version_b.startswith(b"HTTP/"):
                raise _HttpError(505, f"unsupported HTTP version {version_b.decode('latin-1')!r}")
            raise _HttpError(400, "malformed request line: bad HTTP version")
        if not target_b.startswith(b"/"):
            raise _HttpError(400, "request target must be an absolute path such as /status")
        try:
            target = target_b.decode("ascii")
        except UnicodeDecodeError:
            raise _HttpError(400, "request target must be ASCII") from None
        headers: dict[str, str] = {}
        total = len(line)
        count = 0
        while True:
            try:
                hline = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                raise _HttpError(431, "header line too long") from None
            except asyncio.IncompleteReadError:
                raise _HttpError(400, "incomplete headers") from None
            total += len(hline)
            if total > self.max_header_bytes:
                raise _HttpError(431, f"headers larger than {self.max_header_bytes} bytes")
            hline = hline.rstrip(b"\r\n")
            if not hline:
                break
            count += 1
            if count > self.max_headers:
                raise _HttpError(431, f"more than {self.max_headers} headers")
            name, sep, value = hline.partition(b":")
            if not sep or not _TOKEN_RE.match(name):
                raise _HttpError(400, "malformed header line (expected 'Name: value')")
            key = name.decode("ascii").lower()
            val = value.strip().decode("latin-1")
            if key in headers and key in ("content-length", "authorization", "transfer-encoding"):
                raise _HttpError(400, f"duplicate {key} header")
            headers[key] = val
        if "transfer-encoding" in headers:
            raise _HttpError(501, "Transfer-Encoding is not supported; send the body with Content-Length")
        body = b""
        cl = headers.get("content-length")
        if cl is not None:
            if not cl.isdigit():
                raise _HttpError(400, f"Content-Length {cl!r} is not a number")
            n = int(cl)
            if n > self.max_body:
                raise _HttpError(413, f"body of {n} bytes is larger than the limit of {self.max_body}")
            try:
                body = await reader.readexactly(n)
            except asyncio.IncompleteReadError:
                raise _HttpError(400, f"body shorter than its Content-Length ({n})") from None
        return _Request(method_b.decode("ascii"), target.split("?", 1)[0], version_b.decode(), headers, body)

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str,
                    headers: dict[str, str] | None = None, head_only: bool = False) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
                 f"Content-Type: {ctype}", f"Content-Length: {len(body)}",
                 "Cache-Control: no-store", "Connection: close"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body))
        await writer.drain()

    # ------------------------------------------------------------ dispatch

    @staticmethod
    async def _call(fn: Handler, *args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None
               ) -> tuple[int, bytes, str, dict[str, str]]:
        return status, _dumps({"ok": False, "error": message}), _JSON, headers or {}

    def _authorize(self, req: _Request) -> tuple[int, bytes, str, dict[str, str]] | None:
        if self._token is None:
            self.stats["unauthorized"] += 1
            return self._error(403, "no admin token is configured: acting endpoints are disabled "
                                    f"(set the admin token in the configuration or {TOKEN_ENV})")
        auth = req.headers.get("authorization")
        challenge = {"WWW-Authenticate": 'Bearer realm="engine"'}
        if auth is None:
            self.stats["unauthorized"] += 1
            return self._error(401, "missing Authorization: Bearer <token>", challenge)
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            self.stats["unauthorized"] += 1
            return self._error(401, "Authorization must be 'Bearer <token>'", challenge)
        if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"),
                                   self._token.encode("utf-8", "surrogateescape")):
            self.stats["unauthorized"] += 1
            log.warning("admin %s %s from %s refused: wrong token", req.method, req.path, req.peer)
            return self._error(403, "invalid admin token")
        return None

    @staticmethod
    def _parse_body(req: _Request, route: _Route) -> dict[str, Any]:
        if not req.body.strip():
            return {}
        try:
            doc = orjson.loads(req.body)
        except orjson.JSONDecodeError as exc:
            raise _HttpError(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise _HttpError(400, "body must be a JSON object")
        unknown = set(doc) - route.keys
        if unknown:
            allowed = ", ".join(sorted(route.keys)) or "none"
            raise _HttpError(400, f"unknown field(s) {', '.join(sorted(unknown))} (allowed: {allowed})")
        if "flatten" in doc and not isinstance(doc["flatten"], bool):
            raise _HttpError(400, f"'flatten' must be true or false, got {doc['flatten']!r}")
        if "reason" in doc:
            r = doc["reason"]
            if not isinstance(r, str) or not r.strip() or len(r) > 500:
                raise _HttpError(400, "'reason' must be a non-empty string of at most 500 characters")
        return doc

    async def _dispatch(self, req: _Request) -> tuple[int, bytes, str, dict[str, str]]:
        route = _ROUTES.get(req.path.rstrip("/") or "/")
        if route is None:
            return self._error(404, f"no such endpoint {req.path!r}; try /metrics, /healthz, /status, "
                                    f"POST /kill, /kill/reset, /flatten, /reconcile")
        path = req.path.rstrip("/")
        if req.method != route.method:
            return self._error(405, f"{req.path} accepts {route.method} only", {"Allow": route.method})
        if not route.acting:
            return await self._read_endpoint(path)
        denied = self._authorize(req)
        if denied is not None:
            return denied
        try:
            doc = self._parse_body(req, route)
        except _HttpError as exc:
            self.stats["bad_requests"] += 1
            return self._error(exc.status, exc.message)
        fn = self._handlers.get(path)
        if fn is None:
            return self._error(503, f"{path} is not available in this engine (no handler registered)")
        reason = doc.get("reason", f"admin request from {req.peer}")
        self.stats["actions"] += 1
        log.warning("admin %s from %s: %s", path, req.peer, orjson.dumps(doc).decode())
        try:
            if path == "/kill":
                result = await self._call(fn, flatten=bool(doc.get("flatten", False)), reason=reason)
            elif path == "/reconcile":
                statement = doc.get("statement")
                if statement is not None and (not isinstance(statement, str) or not statement):
                    return self._error(400, "statement: give a file path or URL as a string")
                result = await (self._call(fn, statement=statement) if statement else self._call(fn))
            else:
                result = await self._call(fn, reason=reason)
        except AdminActionError as exc:
            return self._error(409, str(exc))
        except Exception as exc:
            log.exception("admin %s handler failed", path)
            return self._error(500, f"{path} failed: {type(exc).__name__}: {exc}")
        try:
            return 200, _dumps({"ok": True, "result": result}), _JSON, {}
        except TypeError as exc:
            return self._error(500, f"{path}: result is not JSON-serialisable: {exc}")

    async def _read_endpoint(self, path: str) -> tuple[int, bytes, str, dict[str, str]]:
        if path == "/metrics":
            if self._metrics is None:
                return self._error(503, "no metrics registered")
            try:
                render = getattr(self._metrics, "render", None)
                body = await self._call(render) if render is not None else await self._call(self._metrics)
            except Exception as exc:
                log.exception("admin /metrics failed")
                return self._error(500, f"metrics failed: {type(exc).__name__}: {exc}")
            from engine.metrics import CONTENT_TYPE
            return 200, bytes(body), CONTENT_TYPE, {}
        if path == "/healthz":
            if self._health is None:
                return 200, _dumps({"status": "ok"}), _JSON, {}
            try:
                result = await self._call(self._health)
            except Exception as exc:
                return 503, _dumps({"status": "unhealthy", "detail": f"{type(exc).__name__}: {exc}"}), _JSON, {}
            ok, detail = (result if isinstance(result, tuple) else (bool(result), None))
            doc = {"status": "ok" if ok else "unhealthy"}
            if detail is not None:
                doc["detail"] = detail
            return (200 if ok else 503), _dumps(doc), _JSON, {}
        # /status
        if self._status is None:
            return self._error(503, "no status available")
        try:
            result = await self._call(self._status)
            return 200, _dumps(result), _JSON, {}
        except Exception as exc:
            log.exception("admin /status failed")
            return self._error(500, f"status failed: {type(exc).__name__}: {exc}")


# ===================================================================== client

@dataclass(frozen=True)
class AdminResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise AdminClientError(f"admin endpoint answered HTTP {self.status} with a body that is not JSON") \
                from exc


def admin_request(host: str, port: int, method: str, path: str, token: str | None = None,
                  body: Any = None, timeout: float = 5.0) -> AdminResponse:
    """One request to a running engine's admin endpoint. ``body`` (a JSON-serialisable
    object) is sent as JSON. Raises `AdminClientError` if the endpoint cannot be reached."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = orjson.dumps(body)
        headers["Content-Type"] = _JSON
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        return AdminResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
    except (OSError, http.client.HTTPException) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
        raise AdminClientError(f"cannot reach the engine admin endpoint at {host}:{port}: {what} "
                               f"(is the engine running? see --admin-host/--admin-port)") from None
    finally:
        conn.close()


def _print_response(resp: AdminResponse, out: TextIO, err: TextIO) -> int:
    try:
        doc = resp.json()
    except AdminClientError as exc:
        print(f"error: {exc}", file=err)
        return 1
    if 200 <= resp.status < 300:
        print(orjson.dumps(doc.get("result", doc) if isinstance(doc, dict) and "ok" in doc else doc,
                           option=orjson.OPT_INDENT_2).decode(), file=out)
        return 0
    msg = doc.get("error") if isinstance(doc, dict) else None
    print(f"error: HTTP {resp.status}: {msg or resp.body.decode('utf-8', 'replace')}", file=err)
    return 1


def status_main(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, out: TextIO | None = None,
                err: TextIO | None = None) -> int:
    """``engine status``: print the running engine's status JSON. 0 ok, 1 error answer;
    raises `AdminClientError` when unreachable."""
    return _print_response(admin_request(host, port, "GET", "/status"), out or sys.stdout, err or sys.stderr)


def _acting(path: str, host: str, port: int, token: str | None, body: Any, out: TextIO | None,
            err: TextIO | None) -> int:
    tok = resolve_token(token)
    if tok is None:
        raise AdminClientError(f"no admin token: pass --token or set {TOKEN_ENV}")
    return _print_response(admin_request(host, port, "POST", path, token=tok, body=body), out or sys.stdout,
                           err or sys.stderr)


def kill_main(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, token: str | None = None,
              flatten: bool = False, reason: str = "operator kill via engine kill",
              out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``engine kill [--flatten]``: trip the kill switch of the running engine."""
    return _acting("/kill", host, port, token, {"flatten": flatten, "reason": reason}, out, err)


def kill_reset_main(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, token: str | None = None,
                    reason: str = "operator reset via engine kill --reset", out: TextIO | None = None,
                    err: TextIO | None = None) -> int:
    """``engine kill --reset``: reset the latched kill switch."""
    return _acting("/kill/reset", host, port, token, {"reason": reason}, out, err)


def flatten_main(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, token: str | None = None,
                 reason: str = "operator flatten", out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``engine flatten``: close every position."""
    return _acting("/flatten", host, port, token, {"reason": reason}, out, err)


def reconcile_main(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, token: str | None = None,
                   statement: str | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``engine reconcile [--statement FILE]``: reconcile with the venue's statement (or
    the broker statement FILE, read by the engine) now and print the report."""
    body = {"statement": os.path.abspath(statement)} if statement else None
    return _acting("/reconcile", host, port, token, body, out, err)


__all__ = ["AdminServer", "AdminResponse", "AdminActionError", "AdminClientError", "admin_request",
           "resolve_token", "status_main", "kill_main", "kill_reset_main", "flatten_main", "reconcile_main",
           "DEFAULT_HOST", "DEFAULT_PORT", "TOKEN_ENV"]
