"""Tests of engine/admin.py on real loopback sockets (port 0), on asyncio and uvloop:
the read endpoints, bearer-token auth (fail closed), the action handlers, malformed
requests (the server keeps serving), and the client helpers."""
from __future__ import annotations

import asyncio
import io
import logging

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import admin
from engine.metrics import EngineMetrics
from gateway.loops import run as run_loop

TOKEN = "t0ken-for-tests-0123456789"


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request):
    return request.param


class Engine:
    """What the runtime would register: records the calls."""

    def __init__(self):
        self.calls = []
        self.tripped = False

    def kill(self, flatten, reason):
        self.calls.append(("kill", flatten, reason))
        self.tripped = True
        return {"tripped": True, "flatten": flatten}

    async def reset(self, reason):
        await asyncio.sleep(0)
        if not self.tripped:
            raise admin.AdminActionError("the kill switch is not tripped")
        self.tripped = False
        self.calls.append(("reset", reason))
        return {"tripped": False}

    def flatten(self, reason):
        raise RuntimeError("venue unreachable")

    def reconcile(self):
        self.calls.append(("reconcile",))
        return {"mismatches": 0, "instruments": ["AAPL"]}


def make_server(token=TOKEN, **kw):
    em = EngineMetrics(stage="paper", version="t", process_collector=False)
    em.update({"engine_kill_switch_tripped": 0, "engine_orders_sent_total": {"AAPL": 3}})
    srv = admin.AdminServer(port=0, token=token, metrics=em,
                            status=kw.pop("status", lambda: {"stage": "paper", "positions": {"AAPL": 5}}), **kw)
    eng = Engine()
    srv.on_kill(eng.kill)
    srv.on_kill_reset(eng.reset)
    srv.on_flatten(eng.flatten)
    srv.on_reconcile(eng.reconcile)
    return srv, eng


async def request(srv, method, path, token=None, body=None):
    return await asyncio.to_thread(admin.admin_request, "127.0.0.1", srv.port, method, path, token, body)


async def raw(srv, data: bytes, delay: float = 0.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(data)
    await writer.drain()
    if delay:
        await asyncio.sleep(delay)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def status_of(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


def serve(loop_name, scenario, **kw):
    """Run ``scenario(server, engine)`` against a started server; any unhandled error
    reported to the event loop fails the test."""
    loop_errors = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: loop_errors.append(ctx))
        srv, eng = make_server(**kw)
        await srv.start()
        try:
            return await scenario(srv, eng)
        finally:
            await srv.stop()
    result = run_loop(main(), loop=loop_name)
    assert not loop_errors, loop_errors
    return result


# ----------------------------------------------------------------- read endpoints

def test_read_endpoints(loop_name):
    async def scenario(srv, eng):
        return [await request(srv, "GET", p) for p in ("/metrics", "/healthz", "/status", "/status?pretty=1")]

    metrics, health, status, status2 = serve(loop_name, scenario)
    assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(metrics.body.decode())}
    assert fams["engine_orders_sent"].samples[0].value == 3
    assert health.status == 200 and health.json() == {"status": "ok"}
    assert status.status == 200 and status.json() == {"stage": "paper", "positions": {"AAPL": 5}}
    assert status2.json() == status.json()
    assert status.headers["connection"] == "close"


def test_health_and_status_failures(loop_name):
    state = {"ok": False}

    def health():
        if state["ok"] is None:
            raise RuntimeError("feed handler gone")
        return state["ok"], {"feed": "stale"}

    def status():
        raise ValueError("portfolio not ready")

    async def scenario(srv, eng):
        a = await request(srv, "GET", "/healthz")
        state["ok"] = None
        b = await request(srv, "GET", "/healthz")
        c = await request(srv, "GET", "/status")
        return a, b, c

    a, b, c = serve(loop_name, scenario, health=health, status=status)
    assert a.status == 503 and a.json() == {"status": "unhealthy", "detail": {"feed": "stale"}}
    assert b.status == 503 and "feed handler gone" in b.json()["detail"]
    assert c.status == 500 and "portfolio not ready" in c.json()["error"]


# ----------------------------------------------------------------- auth and actions

def test_acting_endpoints_need_the_token(loop_name, caplog):
    async def scenario(srv, eng):
        out = {}
        for path in ("/kill", "/kill/reset", "/flatten", "/reconcile"):
            out[path] = (await request(srv, "POST", path), await request(srv, "POST", path, token="wrong"))
        out["basic"] = await asyncio.to_thread(
            _raw_http, srv.port, b"POST /kill HTTP/1.1\r\nAuthorization: Basic dXNlcjpwYXNz\r\n\r\n")
        return out

    with caplog.at_level(logging.DEBUG):
        out = serve(loop_name, scenario)
    for path in ("/kill", "/kill/reset", "/flatten", "/reconcile"):
        none, wrong = out[path]
        assert none.status == 401 and none.headers["www-authenticate"].startswith("Bearer"), path
        assert wrong.status == 403 and wrong.json()["error"] == "invalid admin token", path
    assert status_of(out["basic"]) == 401
    assert TOKEN not in caplog.text and "wrong" not in caplog.text.replace("wrong token", "")


def _raw_http(port, data):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                return b"".join(chunks)
            chunks.append(c)


def test_no_configured_token_refuses_every_action(loop_name):
    async def scenario(srv, eng):
        return [await request(srv, "POST", p, token=t) for p in ("/kill", "/reconcile") for t in (None, "x")], eng

    resps, eng = serve(loop_name, scenario, token=None)
    assert all(r.status == 403 and "no admin token is configured" in r.json()["error"] for r in resps)
    assert eng.calls == []


def test_actions_call_the_handlers(loop_name):
    async def scenario(srv, eng):
        return [
            await request(srv, "POST", "/kill/reset", TOKEN),                        # not tripped: 409
            await request(srv, "POST", "/kill", TOKEN, {"flatten": True, "reason": "runaway"}),
            await request(srv, "POST", "/kill", TOKEN),                              # body optional
            await request(srv, "POST", "/kill/reset", TOKEN, {"reason": "fixed"}),
            await request(srv, "POST", "/flatten", TOKEN),                           # handler raises: 500
            await request(srv, "POST", "/reconcile", TOKEN),
        ], eng

    (r409, kill, kill2, reset, r500, rec), eng = serve(loop_name, scenario)
    assert r409.status == 409 and r409.json() == {"ok": False, "error": "the kill switch is not tripped"}
    assert kill.status == 200 and kill.json() == {"ok": True, "result": {"tripped": True, "flatten": True}}
    assert kill2.status == 200
    assert reset.status == 200 and reset.json()["result"] == {"tripped": False}
    assert r500.status == 500 and "venue unreachable" in r500.json()["error"]
    assert rec.json()["result"] == {"mismatches": 0, "instruments": ["AAPL"]}
    assert eng.calls[0] == ("kill", True, "runaway")
    assert eng.calls[1][0:2] == ("kill", False) and eng.calls[1][2].startswith("admin request from 127.0.0.1")
    assert eng.calls[2] == ("reset", "fixed") and eng.calls[3] == ("reconcile",)


@pytest.mark.parametrize("body,what", [
    (b"{not json", "body is not valid JSON"),
    (b"[1, 2]", "body must be a JSON object"),
    (b'{"flatten": "yes"}', "'flatten' must be true or false"),
    (b'{"reason": ""}', "'reason' must be a non-empty string"),
    (b'{"reason": 5}', "'reason' must be a non-empty string"),
    (b'{"flatten": true, "force": 1}', "unknown field(s) force (allowed: flatten, reason)"),
])
def test_bad_action_bodies(loop_name, body, what):
    async def scenario(srv, eng):
        req = (b"POST /kill HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
               b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        return await raw(srv, req), eng

    resp, eng = serve(loop_name, scenario)
    assert status_of(resp) == 400
    assert orjson.loads(resp.split(b"\r\n\r\n", 1)[1])["error"] == what or what in resp.decode()
    assert eng.calls == []


def test_missing_handler_is_503(loop_name):
    async def main():
        srv = admin.AdminServer(port=0, token=TOKEN)
        async with srv:
            return await request(srv, "POST", "/reconcile", TOKEN), await request(srv, "GET", "/metrics")
    rec, met = run_loop(main(), loop=loop_name)
    assert rec.status == 503 and "no handler registered" in rec.json()["error"]
    assert met.status == 503


# ----------------------------------------------------------------- garbage

GARBAGE = [
    (b"\x00\xff\x13garbage\r\n\r\n", 400),
    (b"GET /status\r\n\r\n", 400),                                      # no version
    (b"GET status HTTP/1.1\r\n\r\n", 400),                              # not a path
    (b"GET /status HTTP/2.0\r\n\r\n", 505),
    (b"GET /status HTTP/1.1\r\nNoColonHere\r\n\r\n", 400),
    (b"GET /status HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET /status HTTP/1.1\r\n" + b"X-A: b\r\n" * 150 + b"\r\n", 431),
    (b"POST /kill HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413),
    (b"POST /kill HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
    (b"POST /kill HTTP/1.1\r\nContent-Length: 10\r\nContent-Length: 10\r\n\r\n", 400),
    (b"POST /kill HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501),
    (b"POST /kill HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort", 400),   # then EOF (write side shut below)
    (b"GET /nowhere HTTP/1.1\r\n\r\n", 404),
    (b"DELETE /status HTTP/1.1\r\n\r\n", 405),
    (b"GET /kill HTTP/1.1\r\n\r\n", 405),
]


def test_garbage_gets_clear_errors_and_the_server_keeps_serving(loop_name):
    async def scenario(srv, eng):
        results = []
        for data, _ in GARBAGE:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(data)
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            results.append(await asyncio.wait_for(reader.read(), 5))
            writer.close()
        # a client that connects and goes away, one that sends half a line and goes away
        _, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.close()
        _, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"GET /sta")
        await w.drain()
        w.close()
        ok = await request(srv, "GET", "/status")
        return results, ok

    results, ok = serve(loop_name, scenario)
    for (data, expect), resp in zip(GARBAGE, results, strict=True):
        assert status_of(resp) == expect, (data[:40], resp[:200])
        doc = orjson.loads(resp.split(b"\r\n\r\n", 1)[1])
        assert doc["ok"] is False and doc["error"], resp
    assert b"Allow: POST" in results[-1]
    assert ok.status == 200


def test_slow_client_times_out_with_408(loop_name):
    async def scenario(srv, eng):
        return await raw(srv, b"GET /status HTTP/1.1\r\n", delay=0.0)

    resp = serve(loop_name, scenario, read_timeout_s=0.2)
    assert status_of(resp) == 408


def test_connection_limit(loop_name):
    async def scenario(srv, eng):
        held = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(2)]
        for _ in range(500):                         # until the server has accepted both
            if srv._active >= 2:
                break
            await asyncio.sleep(0.01)
        resp = await raw(srv, b"GET /status HTTP/1.1\r\n\r\n")
        for _, w in held:
            w.close()
        for _ in range(500):
            if srv._active == 0:
                break
            await asyncio.sleep(0.01)
        after = await request(srv, "GET", "/status")
        return resp, after

    resp, after = serve(loop_name, scenario, max_connections=2, read_timeout_s=2)
    assert status_of(resp) == 503 and after.status == 200


# ----------------------------------------------------------------- client helpers

def test_cli_helpers(loop_name, monkeypatch):
    async def scenario(srv, eng):
        out, err = io.StringIO(), io.StringIO()
        codes = {}
        codes["status"] = await asyncio.to_thread(admin.status_main, "127.0.0.1", srv.port, out=out, err=err)
        monkeypatch.setenv(admin.TOKEN_ENV, TOKEN)
        codes["kill"] = await asyncio.to_thread(admin.kill_main, "127.0.0.1", srv.port, flatten=True,
                                                reason="cli", out=out, err=err)
        codes["reset"] = await asyncio.to_thread(admin.kill_reset_main, "127.0.0.1", srv.port, out=out, err=err)
        codes["reconcile"] = await asyncio.to_thread(admin.reconcile_main, "127.0.0.1", srv.port, out=out, err=err)
        codes["flatten"] = await asyncio.to_thread(admin.flatten_main, "127.0.0.1", srv.port, out=out, err=err)
        codes["wrong"] = await asyncio.to_thread(admin.kill_main, "127.0.0.1", srv.port, token="nope",
                                                 out=out, err=err)
        return codes, out.getvalue(), err.getvalue(), eng

    codes, out, err, eng = serve(loop_name, scenario)
    assert codes == {"status": 0, "kill": 0, "reset": 0, "reconcile": 0, "flatten": 1, "wrong": 1}
    assert '"stage": "paper"' in out and '"mismatches": 0' in out
    assert "HTTP 500" in err and "HTTP 403: invalid admin token" in err
    assert eng.calls[0] == ("kill", True, "cli")


def test_client_errors(monkeypatch):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                        # nothing listens there
    with pytest.raises(admin.AdminClientError, match=f"cannot reach the engine admin endpoint at 127.0.0.1:{port}"):
        admin.admin_request("127.0.0.1", port, "GET", "/status")
    monkeypatch.delenv(admin.TOKEN_ENV, raising=False)
    with pytest.raises(admin.AdminClientError, match="no admin token"):
        admin.kill_main("127.0.0.1", port)
    assert admin.resolve_token(None) is None
    monkeypatch.setenv(admin.TOKEN_ENV, "from-env")
    assert admin.resolve_token(None) == "from-env" and admin.resolve_token("cfg") == "cfg"


def test_stop_with_idle_and_half_sent_connections_open(loop_name):
    async def scenario(srv, eng):
        idle = await asyncio.open_connection("127.0.0.1", srv.port)
        half = await asyncio.open_connection("127.0.0.1", srv.port)
        half[1].write(b"POST /kill HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        await half[1].drain()
        await asyncio.sleep(0.05)
        await asyncio.wait_for(srv.stop(), 10)          # does not hang on open connections
        for _, w in (idle, half):
            w.close()
        return eng

    eng = serve(loop_name, scenario)
    assert eng.calls == []
