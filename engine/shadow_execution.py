"""Shadow execution: every order goes to the venue and to the simulator, side by side.

The order manager follows the real side (the venue's reports are the truth about our
orders and positions). The simulated side receives the very same requests; its reports
are kept, not acted on. Each real fill is paired with the simulator's fills of the same
client order id, and the difference of their prices is the slippage model error the
shadow → small promotion criterion is measured on (engine.promotion).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine.orders import ExecKind, ExecutionClient, ExecutionReport, Order


@dataclass
class _Side:
    qty: int = 0
    notional: int = 0          # sum of qty * price, tick-lots
    first_ts: int = 0
    last_ts: int = 0

    def add(self, qty: int, price: int, ts: int) -> None:
        if self.qty == 0:
            self.first_ts = ts
        self.qty += qty
        self.notional += qty * price
        self.last_ts = ts

    @property
    def avg(self) -> float | None:
        return self.notional / self.qty if self.qty else None


@dataclass
class ShadowPair:
    """Fills of one order on both sides."""
    cl_ord_id: int
    symbol: str
    side: int
    real: _Side = field(default_factory=_Side)
    sim: _Side = field(default_factory=_Side)

    def error_bps(self) -> float | None:
        """Signed cost of the real fill against the simulated one, in bps of the
        simulated price: positive = the venue filled us worse than the model said."""
        r, s = self.real.avg, self.sim.avg
        if r is None or s is None or s == 0:
            return None
        sign = 1 if self.side == 0 else -1
        return sign * (r - s) / s * 10_000


class ShadowExecution:
    """ExecutionClient: `real` drives the order manager, `sim` runs alongside."""

    def __init__(self, real: ExecutionClient, sim: ExecutionClient) -> None:
        self.real = real
        self.sim = sim
        self.supports_mass_cancel = real.supports_mass_cancel
        self.pairs: dict[int, ShadowPair] = {}
        self._handler: Callable[[ExecutionReport], None] | None = None
        self.sim_errors = 0
        real.set_report_handler(self._on_real)
        sim.set_report_handler(self._on_sim)

    def set_report_handler(self, handler: Callable[[ExecutionReport], None]) -> None:
        self._handler = handler

    def _pair(self, order: Order) -> ShadowPair:
        pair = self.pairs.get(order.cl_ord_id)
        if pair is None:
            pair = self.pairs[order.cl_ord_id] = ShadowPair(order.cl_ord_id, order.symbol, int(order.side))
        return pair

    def _mirror(self, call: Callable[[], None]) -> None:
        # The simulator must never stop a real request: its failures are counted only.
        try:
            call()
        except Exception:  # noqa: BLE001
            self.sim_errors += 1

    def send_new(self, order: Order) -> None:
        self.real.send_new(order)
        self._pair(order)
        self._mirror(lambda: self.sim.send_new(order))

    def send_cancel(self, order: Order, cancel_id: int) -> None:
        self.real.send_cancel(order, cancel_id)
        self._mirror(lambda: self.sim.send_cancel(order, cancel_id))

    def send_replace(self, order: Order, replacement: Order) -> None:
        self.real.send_replace(order, replacement)
        self._pair(replacement)
        self._mirror(lambda: self.sim.send_replace(order, replacement))

    def send_mass_cancel(self, symbol: str | None, request_id: int) -> None:
        self.real.send_mass_cancel(symbol, request_id)
        self._mirror(lambda: self.sim.send_mass_cancel(symbol, request_id))

    def send_status_request(self, order: Order) -> None:
        self.real.send_status_request(order)

    def _on_real(self, report: ExecutionReport) -> None:
        if report.kind == ExecKind.TRADE and report.cl_ord_id in self.pairs:
            self.pairs[report.cl_ord_id].real.add(report.last_qty, report.last_px, report.ts_ns)
        if self._handler is not None:
            self._handler(report)

    def _on_sim(self, report: ExecutionReport) -> None:
        if report.kind == ExecKind.TRADE and report.cl_ord_id in self.pairs:
            self.pairs[report.cl_ord_id].sim.add(report.last_qty, report.last_px, report.ts_ns)

    def paired(self) -> list[ShadowPair]:
        """Orders filled on both sides (the evidence for slippage model error)."""
        return [p for p in self.pairs.values() if p.real.qty and p.sim.qty]

    def summary(self) -> dict:
        errors = [e for e in (p.error_bps() for p in self.paired()) if e is not None]
        real_only = sum(1 for p in self.pairs.values() if p.real.qty and not p.sim.qty)
        sim_only = sum(1 for p in self.pairs.values() if p.sim.qty and not p.real.qty)
        return {
            "orders": len(self.pairs), "paired": len(errors), "real_only_fills": real_only,
            "sim_only_fills": sim_only, "sim_errors": self.sim_errors,
            "mean_error_bps": sum(errors) / len(errors) if errors else None,
            "mean_abs_error_bps": sum(abs(e) for e in errors) / len(errors) if errors else None,
        }
