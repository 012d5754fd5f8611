"""A simulated energy analyzer on pymodbus's server, driven by a register map file (HES-31/32/33, HES-38, HES-40).

The analyzer computes plausible, deterministic measurements from a seed and the time the caller's clock
gives (three phases around 230 V, a daily load curve, energy that grows with time, THD of a few percent),
then holds them in exactly the map's types, scaling and word order. Every read refreshes the words from
the clock, so a test with a fixed clock sees fixed words and can compute the expected values itself.

It answers Modbus TCP (MBAP) or Modbus RTU frames over a TCP socket (the transparent port of a modem), one
or more units behind the same port (several analyzers on one RS485 bus behind one modem, HES-38). Like the
real device it refuses a request longer than the map's ``link.max_registers`` (exception 03) and, unless
the map says the device bridges gaps, a read of an unlisted address (exception 02).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from osos.protocols.modbus import (
    TABLE_BASE,
    TABLES,
    TYPE_WORDS,
    ModbusDecodeError,
    Register,
    RegisterMap,
    encode_register,
)

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # energy registers count from here (float32 keeps 0.01 kWh until 131072)
_FLOAT_STEP = Decimal("0.01")  # simulated float32 values carry two decimals (what the display shows)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _unit_fraction(*parts: object) -> Decimal:
    """A deterministic number in [0, 1) from the parts (no global random state, stable across runs)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return Decimal(int.from_bytes(digest[:6], "big")) / Decimal(2**48)


class SimulatedAnalyzer:
    """The values and words of one analyzer at any instant."""

    def __init__(
        self,
        regmap: RegisterMap,
        seed: int = 0,
        unit: int = 1,
        clock: Callable[[], datetime] = _utc_now,
        overrides: Mapping[str, Decimal | int | str] | None = None,
    ) -> None:
        self.regmap, self.seed, self.unit, self.clock = regmap, seed, unit, clock
        self.overrides = dict(overrides or {})
        names = {r.name for r in regmap.registers}
        unknown = set(self.overrides) - names
        if unknown:
            raise ValueError(f"overrides name registers the map does not have: {sorted(unknown)}")

    # ------------------------------------------------------------------------------------ measurements
    def _phase(self, t: datetime, phase: int) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """(volts, amps, power factor, THD-V %) of one phase at ``t``."""
        minute = int(t.timestamp()) // 60
        volts = Decimal(225) + 10 * _unit_fraction(self.seed, "v", phase, minute)
        hour = Decimal(t.hour) + Decimal(t.minute) / 60
        # a daily load curve: low at night, peak in the evening, each phase loaded a little differently
        day_load = Decimal(str(0.55 + 0.35 * math.sin(math.pi * float((hour - 6) % 24) / 24)))
        phase_share = Decimal("0.8") + Decimal("0.4") * _unit_fraction(self.seed, "i", phase)
        amps = Decimal(10) * day_load * phase_share + 2 * _unit_fraction(self.seed, "di", phase, minute)
        pf = Decimal("0.93") + Decimal("0.06") * _unit_fraction(self.seed, "pf", phase, minute)
        thd = Decimal("1.5") + 2 * _unit_fraction(self.seed, "thd", phase, minute)
        return volts, amps, pf, thd

    def values_at(self, t: datetime) -> dict[str, Decimal | str]:
        """What the analyzer measures at ``t``, by register name, before rounding to the register."""
        phases = [self._phase(t, n) for n in (1, 2, 3)]
        sqrt3 = Decimal(3).sqrt()
        v: dict[str, Decimal | str] = {}
        p_total = q_total = s_total = Decimal(0)
        for n, (volts, amps, pf, thd) in zip(("l1", "l2", "l3"), phases, strict=True):
            s = volts * amps
            p = s * pf
            q = (s * s - p * p).sqrt()
            p_total, q_total, s_total = p_total + p, q_total + q, s_total + s
            v.update({
                f"voltage_{n}_n": volts, f"current_{n}": amps, f"power_factor_{n}": pf,
                f"active_power_{n}": p, f"reactive_power_{n}": q, f"apparent_power_{n}": s,
                f"phase_angle_{n}": Decimal(str(math.degrees(math.acos(float(pf))))),
                f"thd_voltage_{n}_n": thd, f"thd_current_{n}": thd * 4,
                f"current_{n}_demand": amps, f"current_{n}_demand_max": amps * Decimal("1.2"),
            })
        for a, b in (("l1", "l2"), ("l2", "l3"), ("l3", "l1")):
            line = (v[f"voltage_{a}_n"] + v[f"voltage_{b}_n"]) / 2 * sqrt3  # type: ignore[operator]
            v[f"voltage_{a}_{b}"] = line
            v[f"thd_voltage_{a}_{b}"] = v[f"thd_voltage_{a}_n"]
        volts_avg = sum((p[0] for p in phases), Decimal(0)) / 3
        amps = [p[1] for p in phases]
        v.update({
            "voltage_ln_avg": volts_avg, "voltage_ln_sys": volts_avg,
            "voltage_ll_avg": volts_avg * sqrt3, "voltage_ll_sys": volts_avg * sqrt3,
            "current_avg": sum(amps, Decimal(0)) / 3, "current_sum": sum(amps, Decimal(0)),
            "current_n": abs(amps[0] - amps[1]) + abs(amps[1] - amps[2]) / 2,
            "active_power_total": p_total, "reactive_power_total": q_total, "apparent_power_total": s_total,
            "power_factor_total": p_total / s_total,
            "phase_angle_total": Decimal(str(math.degrees(math.acos(float(p_total / s_total))))),
            "frequency": Decimal("49.95") + Decimal("0.1") * _unit_fraction(self.seed, "f", int(t.timestamp()) // 10),
            "thd_voltage_ln_avg": sum((p[3] for p in phases), Decimal(0)) / 3,
            "thd_voltage_ll_avg": sum((p[3] for p in phases), Decimal(0)) / 3,
            "thd_current_avg": sum((p[3] for p in phases), Decimal(0)) / 3 * 4,
            "active_power_demand": p_total, "active_power_demand_max": p_total * Decimal("1.3"),
            "apparent_power_demand": s_total, "apparent_power_demand_max": s_total * Decimal("1.3"),
            "current_n_demand": Decimal(3), "current_n_demand_max": Decimal(6),
            "phase_sequence": "L1-L2-L3",
        })
        # energy: the average load (4 kW import, a little export) since EPOCH, plus a per-seed start
        hours = Decimal(int((t - EPOCH).total_seconds())) / 3600
        start = 1000 * _unit_fraction(self.seed, "e")
        v.update({
            "active_energy_import": start + hours * 4, "active_energy_export": hours * Decimal("0.4"),
            "reactive_energy_import": start / 4 + hours * 5, "reactive_energy_export": hours * Decimal("0.1"),
        })
        v["active_energy_total"] = v["active_energy_import"] + v["active_energy_export"]  # type: ignore[operator]
        v["reactive_energy_total"] = v["reactive_energy_import"] + v["reactive_energy_export"]  # type: ignore[operator]
        # identity and set-up
        serial = 10_000_000 + int(_unit_fraction(self.seed, "sn") * 80_000_000)
        v.update({
            "serial_number": Decimal(serial), "device_id": Decimal(self.unit), "meter_code": Decimal(0x70),
            "demand_period": Decimal(15), "demand_time": Decimal(t.minute % 15), "system_type": Decimal(3),
            "network_parity_stop": Decimal(0), "baud_rate_code": Decimal(2),
            "firmware_version": Decimal(0), "firmware_revision": Decimal(0),
            "application": "C", "measuring_system": "3Pn", "ct_ratio": Decimal(20), "vt_ratio": Decimal(1),
            "kwh_per_pulse": Decimal("0.1"),
        })
        v.update(self.overrides)  # type: ignore[arg-type]
        return v

    # ---------------------------------------------------------------------------------------- words
    def register_value(self, reg: Register, value: Decimal | str | None) -> Decimal | str:
        """``value`` as the register can hold it: rounded to its scale (or two decimals for float32),
        clamped into the type's range; an enumeration keeps its label."""
        if reg.enum is not None:
            if isinstance(value, str) and value in reg.enum.values():
                return value
            return next(iter(reg.enum.values()))
        number = value if isinstance(value, Decimal) else Decimal(0)
        if reg.type == "float32":
            return number.quantize(_FLOAT_STEP, rounding=ROUND_HALF_EVEN)
        steps = (number / reg.scale).to_integral_value(rounding=ROUND_HALF_EVEN)
        bits = 16 * TYPE_WORDS[reg.type]
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if reg.type.startswith("s") else (0, 2**bits - 1)
        return min(max(steps, low), high) * reg.scale

    def words_at(self, t: datetime) -> dict[int, int]:
        """Every word the analyzer holds at ``t``, keyed by Modicon reference (3xxxxx input, 4xxxxx holding)."""
        values = self.values_at(t)
        words: dict[int, int] = {}
        for reg in self.regmap.registers:
            try:
                encoded = encode_register(reg, self.register_value(reg, values.get(reg.name)))
            except ModbusDecodeError:  # an override that does not fit: hold zero, as a blank register would
                encoded = [0] * reg.count
            for i, word in enumerate(encoded):
                words[reg.reference + i] = word
        return words

    def words(self) -> dict[int, int]:
        return self.words_at(self.clock())


# -------------------------------------------------------------------------------------------------- server

def _blocks(regmap: RegisterMap, table: str) -> list[tuple[int, int]]:
    """(address, count) spans the device answers in ``table``: each register, plus gaps when it bridges them."""
    regs = sorted((r for r in regmap.registers if r.table == table), key=lambda r: r.address)
    spans: list[tuple[int, int]] = []
    for reg in regs:
        if spans and regmap.bridge_gaps and reg.address - (spans[-1][0] + spans[-1][1]) <= regmap.max_registers:
            start = spans[-1][0]
            spans[-1] = (start, reg.end - start)
        else:
            spans.append((reg.address, reg.count))
    return spans


class AnalyzerServer:
    """Serves simulated analyzers (one per unit id) on a TCP port in a background thread.

    ``framer`` is ``"socket"`` (Modbus TCP) or ``"rtu"`` (RTU frames over TCP, as through a modem's
    transparent port). Use as a context manager; :attr:`port` is the bound port.
    """

    def __init__(self, analyzers: list[SimulatedAnalyzer], framer: str = "socket", host: str = "127.0.0.1",
                 port: int = 0) -> None:
        if framer not in ("socket", "rtu"):
            raise ValueError("framer must be 'socket' or 'rtu'")
        if not analyzers:
            raise ValueError("at least one analyzer")
        self.analyzers = {a.unit: a for a in analyzers}
        if len(self.analyzers) != len(analyzers):
            raise ValueError("two analyzers share a unit id")
        self.framer, self.host, self.port = framer, host, port
        self.requests = 0  # requests answered (for tests that count round trips)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _device(self, analyzer: SimulatedAnalyzer):  # type: ignore[no-untyped-def]
        from pymodbus.constants import ExcCodes
        from pymodbus.simulator import DataType, SimData, SimDevice

        regmap = analyzer.regmap
        blocks: dict[str, list[SimData]] = {}
        for table in TABLES:
            blocks[table] = [SimData(address, count=1, values=[0] * count, datatype=DataType.REGISTERS,
                                     readonly=True) for address, count in _blocks(regmap, table)]
            if not blocks[table]:  # pymodbus wants every table non-empty; this address is never mapped
                blocks[table] = [SimData(0xFFFF, datatype=DataType.INVALID)]
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]

        async def action(function_code: int, start_address: int, address: int, count: int,
                         registers: list[int], set_values: object) -> ExcCodes | None:
            if set_values is not None:
                return ExcCodes.ILLEGAL_FUNCTION
            if count > regmap.max_registers:
                return ExcCodes.ILLEGAL_VALUE
            table = "input" if function_code == 4 else "holding"
            base = TABLE_BASE[table]
            for ref, word in analyzer.words().items():
                offset = ref - base - start_address
                if base <= ref < base + 0x10000 and 0 <= offset < len(registers):
                    registers[offset] = word
            self.requests += 1
            return None

        return SimDevice(analyzer.unit, simdata=(bits, list(bits), blocks["holding"], blocks["input"]),
                         action=action)

    async def _serve(self) -> None:
        from pymodbus.framer import FramerType
        from pymodbus.server import ModbusTcpServer

        devices = [self._device(a) for a in self.analyzers.values()]
        framer = FramerType.RTU if self.framer == "rtu" else FramerType.SOCKET
        self._server = ModbusTcpServer(devices, framer=framer, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        self.port = self._server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._server.shutdown())  # type: ignore[union-attr]
        loop.close()

    def start(self) -> AnalyzerServer:
        self._thread = threading.Thread(target=self._run, name="modbus-analyzer", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"simulated analyzer did not start: {self._error}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = self._thread = None

    def __enter__(self) -> AnalyzerServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
