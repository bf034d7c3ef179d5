"""The faults, and the plan that injects them one at a time at moments drawn from the seed."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.chaos import (
    BLACKHOLE_SECONDS,
    COOL_DOWN_SECONDS,
    FAULT_EVERY_SECONDS,
    RECOVERY_SECONDS,
    RESTART_SECONDS,
    WARM_UP_SECONDS,
)
from bench.chaos.processes import Supervisor, relay_is_active
from bench.chaos.records import Clock, FaultWindow
from bench.chaos.sandbox import Sandbox, rabbitmqctl
from tests.support.proxy import Refusal, TcpProxy


@dataclass
class Rig:
    """What the faults act on."""

    box: Sandbox
    supervisor: Supervisor
    database_proxy: TcpProxy
    broker_proxy: TcpProxy
    rng: random.Random


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[Rig], str]  # returns a detail for the report
    restore: Callable[[Rig], None] = lambda rig: None
    hold: float = 0.0  # seconds between inject and restore


def kill_worker(rig: Rig) -> str:
    victim = rig.rng.choice(rig.supervisor.of_role("worker"))
    rig.supervisor.kill(victim)
    return victim.name


def kill_active_relay(rig: Rig) -> str:
    relays = rig.supervisor.of_role("relay")
    active = [relay for relay in relays if relay_is_active(relay)]
    victim = rig.rng.choice(active or relays)
    rig.supervisor.kill(victim)
    return f"{victim.name} ({'active' if active else 'none reported active'})"


def restart_killed(rig: Rig) -> None:
    rig.supervisor.restart_killed()


def cut(proxy_of: Callable[[Rig], TcpProxy], how: Refusal) -> Callable[[Rig], str]:
    def inject(rig: Rig) -> str:
        proxy = proxy_of(rig)
        live = proxy.live_connections
        proxy.cut(how)
        return f"{live} connections dropped, new ones {how.value}"

    return inject


def restore(proxy_of: Callable[[Rig], TcpProxy]) -> Callable[[Rig], None]:
    return lambda rig: proxy_of(rig).restore()


def broker(rig: Rig) -> TcpProxy:
    return rig.broker_proxy


def database(rig: Rig) -> TcpProxy:
    return rig.database_proxy


def close_broker_connections(rig: Rig) -> str:
    rabbitmqctl("close_all_connections", "-p", rig.box.vhost, "chaos")
    return f"vhost {rig.box.vhost}"


def terminate_database_sessions(rig: Rig) -> str:
    killed = rig.box.admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        rig.box.database,
    )
    return f"{len(killed)} sessions"


def blackhole_database(rig: Rig) -> str:
    rig.database_proxy.blackhole()
    return f"port {rig.database_proxy.port} dropped by nftables"


FAULTS: tuple[Fault, ...] = (
    Fault("worker SIGKILL", kill_worker, restart_killed, hold=RESTART_SECONDS),
    Fault("relay SIGKILL", kill_active_relay, restart_killed, hold=RESTART_SECONDS),
    Fault("broker refused", cut(broker, Refusal.REFUSE), restore(broker), hold=2.0),
    Fault("broker reset", cut(broker, Refusal.RESET), restore(broker), hold=2.0),
    Fault("broker close_all_connections", close_broker_connections),
    Fault("database refused", cut(database, Refusal.REFUSE), restore(database), hold=2.0),
    Fault("database sessions terminated", terminate_database_sessions),
    Fault("database blackholed", blackhole_database, restore(database), hold=BLACKHOLE_SECONDS),
)


@dataclass(frozen=True)
class PlannedFault:
    at: float
    fault: Fault


def time_needed(faults: list[Fault] | tuple[Fault, ...]) -> float:
    return sum(fault.hold + RECOVERY_SECONDS for fault in faults)


def least_duration() -> float:
    return WARM_UP_SECONDS + COOL_DOWN_SECONDS + time_needed(FAULTS)


def plan_faults(duration: float, rng: random.Random) -> list[PlannedFault]:
    """Every fault at least once, then more in shuffled rounds (one per FAULT_EVERY_SECONDS),
    one at a time: the time the faults leave free is split into random gaps between them."""
    span = duration - WARM_UP_SECONDS - COOL_DOWN_SECONDS
    order: list[Fault] = []
    while len(order) < max(len(FAULTS), span / FAULT_EVERY_SECONDS):
        order += rng.sample(FAULTS, len(FAULTS))
    order = order[: max(len(FAULTS), int(span / FAULT_EVERY_SECONDS))]
    while time_needed(order) > span:
        order.pop()
    cuts = sorted(rng.uniform(0, span - time_needed(order)) for _ in order)
    plan, needed = [], 0.0
    for cut_at, fault in zip(cuts, order, strict=True):
        plan.append(PlannedFault(WARM_UP_SECONDS + cut_at + needed, fault))
        needed += fault.hold + RECOVERY_SECONDS
    return plan


class Injector:
    """Applies the plan on a thread of its own; every fault it injects, it restores."""

    def __init__(self, rig: Rig, plan: list[PlannedFault], clock: Clock) -> None:
        self.rig, self.plan, self.clock = rig, plan, clock
        self.windows: list[FaultWindow] = []
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="injector", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        for planned in self.plan:
            if self._cancelled.wait(max(0.0, planned.at - self.clock.now())):
                return
            self._apply(planned.fault)

    def _apply(self, fault: Fault) -> None:
        window = FaultWindow(fault.name, self.clock.now())
        self.windows.append(window)
        try:
            window.detail = fault.inject(self.rig)
            time.sleep(fault.hold)  # not cut short by stop(): restore always follows
        except Exception as error:
            window.failed = f"inject: {error!r}"
        finally:
            try:
                fault.restore(self.rig)
            except Exception as error:
                window.failed = f"restore: {error!r}"
            window.ended = self.clock.now()

    def finish(self) -> float:
        """Waits until the plan is done; returns when the last fault ended."""
        self._thread.join()
        return max((w.ended or 0.0 for w in self.windows), default=0.0)

    def stop(self) -> None:
        self._cancelled.set()
        if self._thread.is_alive():
            self._thread.join(30)
