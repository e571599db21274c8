"""The kill switch: stop trading now, and stay stopped until an operator says otherwise.

`KillSwitch.trip(reason)`:

1. latches: the state file (``tripped``, ``reason``, time, history) is written and
   fsynced *first*, so a crash a moment later still restarts tripped;
2. trips the risk kernel's kill switch: every new order and replace is rejected
   (``RISK_REJECT_KILL_SWITCH``) from here on, whoever sends it;
3. stops the strategy (no more callbacks; its actions are refused);
4. cancels every open order through the order manager: one mass cancel when the
   execution client supports it, otherwise one cancel per order;
5. optionally flattens (``flatten=True``), after the cancels are confirmed.

Confirmation: `confirm` (asyncio) or `confirm_sync` (simulation: give it a ``pump``
that advances the simulator) wait until every order covered by the trip is terminal
(Canceled, or Filled if a fill won the race), with a timeout; the result lists the
confirmed and the unconfirmed ids, and unconfirmed ones raise an alert. While waiting,
the order manager's status queries run, so a lost cancel is chased.

Flatten: for every non-zero position (as the kernel holds it), a market IOC order on
the other side for the whole position. To let those through, the kernel's kill switch
is lifted for the duration of the submission only, with the account in reduce-only
(so the kernel still checks each order and can only shrink positions), then tripped
again; the latch itself never opens.

The latch persists across restarts until `reset()`: a KillSwitch constructed over a
tripped state file trips the kernel at once. An unreadable state file counts as
tripped (fail closed). Trip reasons and resets are kept in the file's history (the
last 200).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core_ext import risk as rk
from engine.orders import TERMINAL_STATES, OrderManager, Side

log = logging.getLogger("engine.killswitch")

__all__ = ["KillSwitch", "TripRecord", "CancelConfirmation", "read_state"]

HISTORY_MAX = 200


@dataclass(frozen=True, slots=True)
class TripRecord:
    reason: str
    tripped_at_ns: int
    cancel_requested: tuple[int, ...]   # order ids a cancel now covers
    used_mass_cancel: bool
    flatten: bool


@dataclass(frozen=True, slots=True)
class CancelConfirmation:
    confirmed: tuple[int, ...]      # ended (Canceled / Filled / ...) within the timeout
    unconfirmed: tuple[int, ...]    # still open when the timeout ran out
    flatten_orders: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.unconfirmed


def read_state(path: str | os.PathLike) -> dict:
    """The state file's content ({} when there is none). ValueError if unreadable."""
    p = Path(path)
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: unreadable kill-switch state ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tripped"), bool):
        raise ValueError(f"{p}: kill-switch state lacks a boolean 'tripped'")
    return data


class KillSwitch:
    """See the module docstring. ``state_file`` None keeps the latch in memory only
    (tests, one-shot backtests)."""

    def __init__(self, state_file: str | os.PathLike | None, kernel: rk.RiskKernel, *,
                 order_manager: OrderManager | None = None,
                 stop_strategy: Callable[[str], None] | None = None,
                 clock: Callable[[], int] = time.time_ns,
                 alert: Callable[[str, str], None] | None = None,
                 flatten_on_trip: bool = False) -> None:
        self.state_file = Path(state_file) if state_file is not None else None
        self.kernel = kernel
        self.order_manager = order_manager
        self.stop_strategy = stop_strategy
        self.clock = clock
        self._alert = alert
        self.flatten_on_trip = flatten_on_trip
        self.tripped = False
        self.reason = ""
        self.tripped_at_ns = 0
        self.history: list[dict] = []
        self.last_trip: TripRecord | None = None
        self._covered: list[int] = []
        self._flatten_pending = False
        self._load()

    def attach(self, order_manager: OrderManager | None = None,
               stop_strategy: Callable[[str], None] | None = None) -> None:
        if order_manager is not None:
            self.order_manager = order_manager
        if stop_strategy is not None:
            self.stop_strategy = stop_strategy

    # ------------------------------------------------------------------ trip / reset
    def trip(self, reason: str, *, flatten: bool | None = None) -> TripRecord:
        """Trip (or trip again: cancels are re-sent, the reason is added to the history)."""
        now = self.clock()
        flatten = self.flatten_on_trip if flatten is None else flatten
        if not self.tripped:
            self.tripped, self.reason, self.tripped_at_ns = True, reason, now
        self._history("trip", reason, now)
        try:
            self._save()
        except OSError as exc:  # the in-memory latch and the kernel still hold
            self._raise_alert("killswitch_persist", f"cannot write {self.state_file}: {exc}")
        self.kernel.trip_kill_switch()
        log.error("KILL SWITCH tripped: %s", reason)
        self._raise_alert("kill_switch", reason)
        if self.stop_strategy is not None:
            try:
                self.stop_strategy(f"kill switch: {reason}")
            except Exception:  # noqa: BLE001 - the cancels below must still go
                log.exception("stopping the strategy failed")
        covered: list[int] = []
        mass = False
        om = self.order_manager
        if om is not None:
            mass = bool(getattr(om.client, "supports_mass_cancel", False))
            covered = om.cancel_all(use_mass_cancel=True)
            # include orders already pending (a cancel or replace was in flight)
            covered = sorted(set(covered) | {o.cl_ord_id for o in om.open_orders()})
        self._covered = covered
        self._flatten_pending = flatten
        self.last_trip = TripRecord(reason, now, tuple(covered), mass, flatten)
        return self.last_trip

    def reset(self, operator: str = "", note: str = "") -> None:
        """Open the latch (an operator's explicit decision) and re-enable the kernel.
        The strategy stays stopped: the runtime restarts it."""
        now = self.clock()
        self._history("reset", f"{operator}: {note}".strip(": "), now)
        self.tripped, self.reason, self.tripped_at_ns = False, "", 0
        self._flatten_pending = False
        self._covered = []
        self._save()
        self.kernel.reset_kill_switch()
        log.warning("kill switch reset by %s %s", operator or "?", note)

    # ------------------------------------------------------------------ confirmation
    def pending(self) -> list[int]:
        """Orders covered by the last trip that are not terminal yet."""
        om = self.order_manager
        if om is None:
            return []
        out = []
        for cl in self._covered:
            o = om.order(cl)
            if o is not None and o.state not in TERMINAL_STATES:
                out.append(cl)
        # a replacement confirmed after the trip is covered too
        out.extend(o.cl_ord_id for o in om.open_orders() if o.cl_ord_id not in self._covered)
        return sorted(set(out))

    def confirm_sync(self, timeout_ns: int, pump: Callable[[], object], *,
                     max_rounds: int = 100_000) -> CancelConfirmation:
        """Wait (calling `pump` to make progress, e.g. advance the simulator) until the
        covered orders have ended or `timeout_ns` of the clock has passed."""
        deadline = self.clock() + timeout_ns
        rounds = 0
        while self.pending() and self.clock() < deadline and rounds < max_rounds:
            pump()
            if self.order_manager is not None:
                self.order_manager.check_timeouts()
            rounds += 1
        return self._finish()

    async def confirm(self, timeout_s: float = 5.0, poll_s: float = 0.005) -> CancelConfirmation:
        """asyncio: wait until the covered orders have ended, or `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.pending() and loop.time() < deadline:
            await asyncio.sleep(poll_s)
            if self.order_manager is not None:
                self.order_manager.check_timeouts()
        return self._finish()

    def _finish(self) -> CancelConfirmation:
        pending = self.pending()
        confirmed = tuple(cl for cl in self._covered if cl not in pending)
        if pending:
            self._raise_alert("kill_switch_unconfirmed",
                              f"{len(pending)} order(s) not confirmed canceled: "
                              f"{', '.join(map(str, pending[:20]))}")
        flat: tuple[int, ...] = ()
        if self._flatten_pending and not pending:
            self._flatten_pending = False
            flat = tuple(self.flatten())
        elif self._flatten_pending:
            self._raise_alert("kill_switch_flatten", "flatten not attempted: open orders remain")
        return CancelConfirmation(confirmed, tuple(pending), flat)

    # ------------------------------------------------------------------ flatten
    def flatten(self) -> list[int]:
        """Market IOC orders closing every position the kernel holds (see the module
        docstring). Returns their ids; refused ones are alerted."""
        om = self.order_manager
        if om is None:
            return []
        k = self.kernel
        was_reduce_only = bool(k.reduce_only)
        ids = []
        k.set_reduce_only(True)
        k.reset_kill_switch()
        try:
            for symbol, inst in om.instruments.items():
                pos = k.position(inst.inst_id)
                if pos == 0:
                    continue
                side = Side.SELL if pos > 0 else Side.BUY
                cl = om.submit(symbol, side, abs(pos), None, "IOC", tag="flatten", ignore_blocks=True)
                ids.append(cl)
                o = om.order(cl)
                if o is not None and o.reject_reason:
                    self._raise_alert("kill_switch_flatten", f"flatten {symbol} {side.name} {abs(pos)}: "
                                                             f"{o.reject_reason}")
        finally:
            if self.tripped:
                k.trip_kill_switch()
            k.set_reduce_only(was_reduce_only)
        self._history("flatten", f"{len(ids)} order(s)", self.clock())
        try:
            self._save()
        except OSError as exc:
            self._raise_alert("killswitch_persist", f"cannot write {self.state_file}: {exc}")
        return ids

    # ------------------------------------------------------------------ persistence
    def _load(self) -> None:
        if self.state_file is None:
            return
        try:
            data = read_state(self.state_file)
        except ValueError as exc:
            self.tripped, self.reason, self.tripped_at_ns = True, f"state file unreadable: {exc}", self.clock()
            self.kernel.trip_kill_switch()
            log.error("kill switch: %s (fail closed: tripped)", exc)
            return
        self.history = list(data.get("history", []))[-HISTORY_MAX:]
        if data.get("tripped"):
            self.tripped = True
            self.reason = str(data.get("reason", ""))
            self.tripped_at_ns = int(data.get("tripped_at_ns", 0))
            self.kernel.trip_kill_switch()
            log.error("kill switch is latched from a previous run: %s", self.reason)

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = {"tripped": self.tripped, "reason": self.reason, "tripped_at_ns": self.tripped_at_ns,
                "tripped_at": _iso(self.tripped_at_ns) if self.tripped else "",
                "history": self.history[-HISTORY_MAX:]}
        d = self.state_file.parent
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".killswitch.", dir=d)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_file)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        try:
            dfd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass

    def _history(self, event: str, reason: str, ts_ns: int) -> None:
        self.history.append({"event": event, "reason": reason, "ts_ns": ts_ns, "at": _iso(ts_ns)})
        del self.history[:-HISTORY_MAX]

    def _raise_alert(self, kind: str, message: str) -> None:
        if self._alert is not None:
            try:
                self._alert(kind, message)
            except Exception:  # noqa: BLE001
                log.exception("alert handler failed")


def _iso(ts_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ns / 1e9)) + f".{ts_ns % 1_000_000_000:09d}Z"
