"""A fleet of simulated gateways and meters in one process, for the demo and for load tests (HES-66).

Each gateway gets 1..4 meters of mixed brands and kinds on one simulated bus (a TCP port, meters told
apart by their device address, HES-38). Everything is drawn from ``seed``, so two fleets with the same
seed have the same inventory and the same consumption. ``acceleration`` runs the meters' clock faster than
wall time for the demo. With ``events`` on, a seeded injector opens covers and cuts phases now and then;
the gateway reads the meter at once and pushes the alarm (AMR-6, HES-24).

Every simulated meter has its own random P1 password (no shared factory default, issue 7); the fleet writes it
into its gateway's secret store under the meter's FLAG+serial and the meter names that entry, as a real
installation would. The stores are encrypted with a key drawn for this fleet run and kept in memory only, so a
new run (new meters, new passwords) replaces them.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from osos.field.gateway import Gateway, GatewayConfig, MeterConfig
from osos.field.meters.brands import load_brands
from osos.field.meters.iec import SimMeter
from osos.field.meters.model import MeterModel, SeededLoad
from osos.field.meters.serve import TcpMeterServer
from osos.field.secrets import STORE_FILE, SecretStore, parse_key
from osos.field.secrets import generate_key as _store_key

KIND_WEIGHTS = (("single-phase", 6), ("three-phase", 3), ("kombi", 1))
HISTORY_DAYS = 3  # meters start this far in the past so load profiles and demand already hold data


@dataclass
class SimGateway:
    gateway: Gateway
    server: TcpMeterServer
    meters: list[SimMeter]
    configs: list[MeterConfig]


class Fleet:
    def __init__(
        self,
        broker_host: str,
        broker_port: int,
        gateways: int = 10,
        topic_root: str = "mass",
        read_interval_s: float | None = 20,
        heartbeat_interval_s: float = 30,
        data_dir: Path | str = Path("fleet-data"),
        seed: int = 1,
        mqtt_protocol: str = "v5",
        acceleration: float = 1.0,
        events: bool = True,
        event_interval_s: float = 30.0,
        gateway_flag: str = "OSS",
        broker_credentials: Callable[[str, str], tuple[str, str]] | None = None,
        broker_ca: Path | None = None,
    ) -> None:
        self.broker_host, self.broker_port = broker_host, broker_port
        self.topic_root = topic_root
        self.read_interval_s = read_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.data_dir = Path(data_dir)
        self.seed = seed
        self.mqtt_protocol = mqtt_protocol
        self.acceleration = acceleration
        self.events = events
        self.event_interval_s = event_interval_s
        self.gateway_flag = gateway_flag
        self.count = gateways
        # broker identity per gateway (HES-4): (flag, serial) -> (username, password), e.g. provisioned by the demo;
        # with a CA the gateways connect over TLS and verify the broker (HES-52)
        self.broker_credentials = broker_credentials
        self.broker_ca = broker_ca
        self.rng = random.Random(seed)
        self._t0_wall = time.monotonic()
        self._t0_sim = datetime.now(UTC).replace(microsecond=0)
        self._lock = threading.Lock()
        self.units: list[SimGateway] = []
        self._stop = threading.Event()
        self._injector: threading.Thread | None = None
        self.injected: list[tuple[str, str]] = []  # (meter serial, event) for the demo log
        self._store_key = parse_key(_store_key())  # this run's secret store key, never written anywhere

    def sim_now(self) -> datetime:
        """The fleet's clock: wall time since start, times the acceleration factor."""
        elapsed = (time.monotonic() - self._t0_wall) * self.acceleration
        return self._t0_sim + timedelta(seconds=elapsed)

    # ------------------------------------------------------------------ building
    def _make_meter(self, serial: str) -> SimMeter:
        brands = load_brands()
        brand = brands[self.rng.choice(sorted(brands))]
        kinds, weights = zip(*KIND_WEIGHTS, strict=True)
        kind = self.rng.choices(kinds, weights)[0]
        start = self._t0_sim - timedelta(days=HISTORY_DAYS)
        load = SeededLoad(
            seed=self.rng.randrange(1 << 30),
            base_w=self.rng.randrange(150, 600),
            peak_w=self.rng.randrange(1200, 6000 if kind != "single-phase" else 3500),
            solar_w=self.rng.choice((0, 0, 0, 2500)) if kind != "single-phase" else 0,
        )
        model = MeterModel(serial, kind, start, load=load, initial_wh=self.rng.randrange(1_000_000, 40_000_000))
        model.advance(self._t0_sim)
        return SimMeter(model, brand, address=serial)

    def build(self) -> Fleet:
        """Create the meters, their buses and the (not yet connected) gateways; idempotent."""
        if self.units:
            return self
        used: set[str] = set()
        for index in range(self.count):
            meters = []
            for _ in range(self.rng.randint(1, 4)):
                serial = f"{self.rng.randrange(10_000_000, 99_999_999)}"
                while serial in used:
                    serial = f"{self.rng.randrange(10_000_000, 99_999_999)}"
                used.add(serial)
                meters.append(self._make_meter(serial))
            serial = f"{self.seed % 1000:03d}{index:07d}"
            store = self._secret_store(self.data_dir / f"{self.gateway_flag}{serial}")
            for m in meters:
                store.set(f"{m.brand.flag}{m.serial}", "password", m.password)
            server = TcpMeterServer(meters, clock=self.sim_now).start()
            configs = [
                MeterConfig(
                    link=f"{server.url}?address={m.address}",
                    flag=m.brand.flag,
                    serial=m.serial,
                    brand=m.brand.name,
                    model=m.brand.models[m.kind],
                    kind=m.kind,
                    secret=f"{m.brand.flag}{m.serial}",
                    max_baud=m.brand.max_baud,
                    date_format=m.brand.date_format,
                    time_format=m.brand.time_format,
                )
                for m in meters
            ]
            config = GatewayConfig(
                flag=self.gateway_flag,
                serial=serial,
                data_dir=self.data_dir / f"{self.gateway_flag}{serial}",
                broker_host=self.broker_host,
                broker_port=self.broker_port,
                topic_root=self.topic_root,
                mqtt_protocol=self.mqtt_protocol,
                heartbeat_interval_s=self.heartbeat_interval_s,
                read_interval_s=self.read_interval_s,
                imei=f"35{self.rng.randrange(10**12, 10**13 - 1)}",
                signal=-self.rng.randrange(55, 100),
            )
            if self.broker_credentials is not None:
                username, password = self.broker_credentials(self.gateway_flag, serial)
                config = replace(config, broker_username=username, broker_password=password,
                                 broker_tls=self.broker_ca is not None, broker_ca=self.broker_ca)
            gateway = Gateway(config, configs, clock=self.sim_now, secrets=store)
            self.units.append(SimGateway(gateway, server, meters, configs))
        return self

    def _secret_store(self, data_dir: Path) -> SecretStore:
        """A fresh store for one simulated gateway: the meters (and their passwords) are new on every run."""
        (data_dir / STORE_FILE).unlink(missing_ok=True)
        return SecretStore(data_dir / STORE_FILE, self._store_key)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Fleet:
        self.build()
        for unit in self.units:
            unit.gateway.start()
        if self.events:
            self._injector = threading.Thread(target=self._inject_loop, name="fleet-events", daemon=True)
            self._injector.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._injector is not None:
            self._injector.join(timeout=5)
        for unit in self.units:
            unit.gateway.stop()  # also fine for a gateway that was built but never started
            unit.server.stop()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ events (fault injection)
    def inject(self, unit: SimGateway, meter_index: int, event: str) -> None:
        """Apply one event to a meter now and have its gateway read and push it."""
        sim = unit.meters[meter_index]
        now = self.sim_now()
        with sim.lock:
            at = max(now, sim.model.now)
            if event == "power_off":
                sim.model.power_off(at)
            elif event == "power_on":
                sim.model.power_on(at)
            elif event == "phase_off":
                sim.model.power_off(at, (self.rng.choice(sim.model.phase_names),))
            elif event == "top_cover":
                sim.model.open_top_cover(at)
            elif event == "terminal_cover":
                sim.model.open_terminal_cover(at)
            elif event == "terminal_cover_close":
                sim.model.close_terminal_cover(at)
            else:
                raise ValueError(f"unknown event {event!r}")
        self.injected.append((sim.serial, event))
        unit.gateway.trigger_push([unit.configs[meter_index]])

    def _inject_loop(self) -> None:
        rng = random.Random(self.seed * 7919)
        restore: list[tuple[float, SimGateway, int, str]] = []
        while not self._stop.wait(0.5):
            now = time.monotonic()
            for item in [r for r in restore if r[0] <= now]:
                restore.remove(item)
                self.inject(item[1], item[2], item[3])
            if not self.units or rng.random() > 0.5 / max(self.event_interval_s, 0.5):
                continue
            unit = rng.choice(self.units)
            index = rng.randrange(len(unit.meters))
            event = rng.choice(("power_off", "phase_off", "terminal_cover", "top_cover"))
            self.inject(unit, index, event)
            if event in ("power_off", "phase_off"):
                restore.append((now + rng.uniform(5, 60), unit, index, "power_on"))
            elif event == "terminal_cover":
                restore.append((now + rng.uniform(5, 30), unit, index, "terminal_cover_close"))
