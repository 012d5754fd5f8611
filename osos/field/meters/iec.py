"""A simulated IEC 62056-21 meter: the byte-level mode C server (AMR-1) over a brand profile and a model.

Sans-I/O: :class:`IecPortSession` takes the bytes a reader sent and returns what the meter(s) answer, each
answer tagged with the baud rate the meter uses for it; the TCP and pty servers in :mod:`osos.field.meters.serve`
move those bytes. Several meters can share one port (a bus behind one gateway serial port, HES-38): the device
address in ``/?<address>!`` selects one, an empty address works only when the port holds a single meter.

Frames come from :mod:`osos.protocols.iec62056_21` (the codec is shared with the head-end; nothing is
re-implemented here). Error answers in programming mode use ``(ERxx)``: ER01 no password yet or wrong
password, ER02 unknown address, ER03 bad value.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from osos.field.meters.brands import BAUD_CHARS, BrandProfile
from osos.field.meters.model import LoadProfileEntry, MeterModel
from osos.protocols import iec62056_21 as iec

INITIAL_BAUD = 300
MAX_PENDING = 4096  # bytes buffered while waiting for a complete frame; more is line noise


def random_password() -> str:
    """A fresh P1 password of 8 characters (IEC 62056-21 leaves the format to the maker)."""
    return secrets.token_hex(4).upper()


@dataclass
class SimMeter:
    """One simulated meter: its physics (model), its brand's way of speaking, its bus address and its own P1
    password (random unless given: no factory default shared by every meter, issue 7)."""

    model: MeterModel
    brand: BrandProfile
    address: str = ""
    password: str = field(default_factory=random_password, repr=False)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def serial(self) -> str:
        return self.model.serial

    @property
    def kind(self) -> str:
        return self.model.kind

    def identification(self) -> bytes:
        return iec.build_identification(self.brand.flag, self.brand.baud_char, self.brand.models[self.kind])

    def readout_lines(self) -> list[iec.DataLine]:
        return [
            iec.DataLine(obis, tuple(iec.DataValue(v, u) for v, u in values))
            for obis, values in self.brand.readout(self.model)
        ]

    def profile_channels(self, profile: int) -> list[tuple[str, str]]:
        """Columns of a load profile (AMR-5): P.01 active energy per period (kombi with export), P.02 the four
        reactive quadrants (kombi only). Empty for a profile the meter does not have."""
        if profile == 1:
            return [("1.29.0", "kWh"), ("2.29.0", "kWh")] if self.kind == "kombi" else [("1.29.0", "kWh")]
        if profile == 2 and self.kind == "kombi":
            return [(f"{q}.29.0", "kvarh") for q in (5, 6, 7, 8)]
        return []

    def load_profile_text(self, start: datetime | None, end: datetime | None, profile: int = 1) -> str:
        """R5 ``P.0n(start;end)`` answer text: one block per run of regular periods (AMR-5).

        Row values are the period's energy in kWh (kvarh) with 3 decimals; a power-cut entry (written at the
        moment of the cut) starts its own block with status ``01``. ``(ER02)`` for an empty range or a profile
        the meter does not keep.
        """
        model = self.model
        channels = self.profile_channels(profile)
        entries = [
            e
            for e in model.profile
            if (start is None or model.local(e.end).replace(tzinfo=None) >= start)
            and (end is None or model.local(e.end).replace(tzinfo=None) <= end)
        ]
        if not entries or not channels:
            return "(ER02)\r\n"
        period = model.profile_period_min
        blocks: list[list[LoadProfileEntry]] = []
        for entry in entries:
            last = blocks[-1][-1] if blocks else None
            regular = (
                last is not None
                and not entry.power_cut
                and not last.power_cut
                and (entry.end - last.end).total_seconds() == period * 60
            )
            if regular:
                blocks[-1].append(entry)
            else:
                blocks.append([entry])
        text = ""
        for block in blocks:
            rows = [self._row(e, profile) for e in block]
            text += iec.build_load_profile(
                profile,
                model.local(block[0].end).replace(tzinfo=None),
                period,
                channels,
                rows,
                status="01" if block[0].power_cut else "00",
            )
        return text

    def _row(self, e: LoadProfileEntry, profile: int) -> list[str]:
        def kwh(wh: int) -> str:
            return f"{wh // 1000}.{wh % 1000:03d}"

        if profile == 2:
            return [kwh(e.reactive_varh.get(f"{q}.8.0", 0)) for q in (5, 6, 7, 8)]
        row = [kwh(e.import_wh)]
        if self.model.kind == "kombi":
            row.append(kwh(e.export_wh))
        return row


def _parse_stamp(text: str) -> datetime | None:
    if not text:
        return None
    return iec.parse_lp_timestamp(text)[0]


class IecPortSession:
    """The meter side of one connection on one port (one reader at a time, as on a real optical head)."""

    def __init__(self, meters: list[SimMeter], clock: Callable[[], datetime]) -> None:
        self.meters = meters
        self.clock = clock
        self.baud = INITIAL_BAUD
        self.state = "idle"
        self.current: SimMeter | None = None
        self.authorized = False
        self.negotiated: list[int] = []  # every baud rate agreed in an option select, in order
        self._buf = bytearray()

    def reset(self, *, drop_input: bool = False) -> None:
        """Back to the initial state at 300 Bd; ``drop_input`` also discards unread bytes (line noise)."""
        self.baud, self.state, self.current, self.authorized = INITIAL_BAUD, "idle", None, False
        if drop_input:
            self._buf.clear()

    # ------------------------------------------------------------------ input
    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Bytes from the reader in, (baud, bytes) answers out."""
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            before = (self.state, len(self._buf))
            out += self._step()
            if (self.state, len(self._buf)) == before:
                break
        if len(self._buf) > MAX_PENDING:
            self.reset(drop_input=True)
        return out

    def _step(self) -> list[tuple[int, bytes]]:
        buf = self._buf
        if not buf:
            return []
        if self.state in ("idle", "ident_sent") and buf[:1] == b"/":
            end = buf.find(b"!\r\n")
            if end < 0:
                return []
            frame = bytes(buf[: end + 3])
            del buf[: end + 3]
            return self._sign_on(frame)
        if self.state == "idle":
            # line noise or a frame for another state: drop up to the next '/'
            nxt = buf.find(b"/", 1)
            del buf[: nxt if nxt > 0 else len(buf)]
            return []
        if self.state == "ident_sent":
            if buf[:1] != iec.ACK:
                self.reset()
                return []
            if len(buf) < 6:
                return []
            frame = bytes(buf[:6])
            del buf[:6]
            return self._option(frame)
        if self.state == "programming":
            if buf[:1] not in (iec.SOH,):
                del buf[:1]
                return []
            for i in range(3, len(buf)):
                if buf[i] in (0x03, 0x04):
                    if i + 1 >= len(buf):
                        return []
                    frame = bytes(buf[: i + 2])
                    del buf[: i + 2]
                    return self._command(frame)
            return []
        return []

    # ------------------------------------------------------------------ handshake
    def _sign_on(self, frame: bytes) -> list[tuple[int, bytes]]:
        self.reset()
        try:
            address = iec.parse_sign_on(frame)
        except iec.IECError:
            return []
        if address:
            matches = [m for m in self.meters if m.address == address]
        else:
            matches = self.meters if len(self.meters) == 1 else []
        if not matches:
            return []  # not addressed to us: stay silent, as a meter on a bus does
        self.current = matches[0]
        self.state = "ident_sent"
        return [(INITIAL_BAUD, self.current.identification())]

    def _option(self, frame: bytes) -> list[tuple[int, bytes]]:
        meter = self.current
        assert meter is not None
        try:
            option = iec.parse_ack_option(frame)
        except iec.IECError:
            self.reset()
            return []
        rate = iec.BAUD_RATES.get(option.baud_char)
        if rate is None or rate > meter.brand.max_baud or option.baud_char not in BAUD_CHARS.values():
            self.reset()
            return []
        self.baud = rate
        self.negotiated.append(rate)
        with meter.lock:
            meter.model.advance(max(self.clock(), meter.model.now))
            if option.option == "readout":
                block = iec.build_data_block(meter.readout_lines())
                self.reset()  # back to 300 Bd and idle after the readout
                return [(rate, block)]
            if option.option == "programming":
                self.state = "programming"
                return [(rate, iec.build_command("P0", f"({meter.serial})"))]
        self.reset()
        return []

    # ------------------------------------------------------------------ programming mode
    def _command(self, frame: bytes) -> list[tuple[int, bytes]]:
        meter = self.current
        assert meter is not None
        try:
            cmd = iec.parse_command(frame)
        except iec.IECError:
            return [(self.baud, iec.NAK)]
        if cmd.command == "B0":
            self.reset()
            return []
        if cmd.command == "P1":
            if meter.password and cmd.data == f"({meter.password})":
                self.authorized = True
                return [(self.baud, iec.ACK)]
            return [(self.baud, self._error("ER01"))]
        if not self.authorized:
            return [(self.baud, self._error("ER01"))]
        with meter.lock:
            meter.model.advance(max(self.clock(), meter.model.now))
            if cmd.command in ("R1", "R5"):
                return [(self.baud, self._read(meter, cmd.data))]
            if cmd.command == "W1":
                return [(self.baud, self._write(meter, cmd.data))]
        return [(self.baud, self._error("ER02"))]

    @staticmethod
    def _error(code: str) -> bytes:
        return iec.build_data_message(f"({code})")

    def _read(self, meter: SimMeter, data: str) -> bytes:
        try:
            line = iec.parse_data_line(data)
        except iec.IECError:
            return self._error("ER03")
        if line.address in ("P.01", "P.02", "P.03"):
            stamps = line.values[0].value.split(";") if line.values else ["", ""]
            if len(stamps) != 2:
                return self._error("ER03")
            try:
                start, end = (_parse_stamp(s) for s in stamps)
            except iec.IECError:
                return self._error("ER03")
            return iec.build_data_message(meter.load_profile_text(start, end, int(line.address[2:])))
        if line.address not in meter.brand.registers[meter.kind] and line.address not in ("0.9.1", "0.9.2"):
            return self._error("ER02")
        values = tuple(iec.DataValue(v, u) for v, u in meter.brand.render(meter.model, line.address))
        return iec.build_data_message([iec.DataLine(line.address, values)])

    def _write(self, meter: SimMeter, data: str) -> bytes:
        """W1 0.9.1(hh:mm:ss) / 0.9.2(date): set the meter clock (HES-35 time sync)."""
        try:
            line = iec.parse_data_line(data)
            value = line.value
            current = meter.model.meter_time().replace(tzinfo=None)
            if line.address == "0.9.1":
                t = datetime.strptime(value, meter.brand.time_format)
                target = current.replace(hour=t.hour, minute=t.minute, second=t.second, microsecond=0)
            elif line.address == "0.9.2":
                d = datetime.strptime(value, meter.brand.date_format)
                target = current.replace(year=d.year, month=d.month, day=d.day)
            else:
                return self._error("ER02")
        except (iec.IECError, ValueError):
            return self._error("ER03")
        meter.model.set_meter_time(target)
        return iec.ACK
