"""Read an energy analyzer by its register map, in as few requests as the device allows (HES-31/32/33, HES-40).

Three ways to reach the device, one call: :func:`read_map` takes
- a pymodbus synchronous client (``ModbusTcpClient``, with the socket framer for Modbus TCP or the RTU framer
  for RTU over TCP, e.g. a modem's transparent port, HES-42), see :func:`open_client`;
- an ``osos.field.links`` :class:`~osos.field.links.Link` (TCP socket or serial port): RTU frames are built and
  checked by pymodbus's RTU framer and carried over the byte pipe, the path a gateway uses on its RS485 port;
- anything with ``read_registers(request, unit) -> list[int]`` (a directive interpreter's own carrier).

Field side: imports only ``osos.protocols`` (never the head-end, store or web).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit

from osos.protocols.modbus import (
    AlarmThresholds,
    ReadRequest,
    RegisterMap,
    decode_words,
    evaluate_alarms,
    plan_reads,
)

EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "server device failure", 6: "server device busy", 11: "gateway target failed to respond"}


class ModbusClientError(Exception):
    """The device could not be reached or answered nothing usable."""


class ModbusExceptionResponse(ModbusClientError):
    """The device answered a request with a Modbus exception."""

    def __init__(self, request: ReadRequest, code: int) -> None:
        self.request, self.code = request, code
        super().__init__(f"function {request.function_code:02d} at {request.reference} x{request.count}: "
                         f"exception {code:02d} ({EXCEPTION_NAMES.get(code, 'unknown')})")


class RegisterReader(Protocol):
    def read_registers(self, request: ReadRequest, unit: int) -> list[int]: ...


@dataclass
class ReadResult:
    """Raw words (Modicon reference -> word, HES-5: kept as read), decoded values, alarms, what failed."""

    words: dict[int, int]
    values: dict[str, Decimal | str]
    alarms: list[str]
    errors: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    identity: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "values": {k: str(v) for k, v in self.values.items()},
            "alarms": self.alarms,
            "errors": self.errors,
            "requests": self.requests,
            "words": {str(k): v for k, v in sorted(self.words.items())},
        }


class PymodbusReader:
    """A pymodbus synchronous client (TCP or RTU framer) as a :class:`RegisterReader`."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def read_registers(self, request: ReadRequest, unit: int) -> list[int]:
        from pymodbus.exceptions import ModbusException

        call = self.client.read_input_registers if request.table == "input" else self.client.read_holding_registers
        try:
            response = call(request.address, count=request.count, device_id=unit)
        except ModbusException as exc:
            raise ModbusClientError(f"no answer from unit {unit}: {exc}") from None
        if response.isError():
            raise ModbusExceptionResponse(request, int(getattr(response, "exception_code", 0)))
        words = list(response.registers)
        if len(words) != request.count:
            raise ModbusClientError(f"asked for {request.count} registers, got {len(words)}")
        return words


class LinkRtuReader:
    """Modbus RTU over an ``osos.field.links`` byte pipe; frames and CRCs are pymodbus's."""

    def __init__(self, link: Any, timeout_s: float = 2.0) -> None:
        from pymodbus.framer import FramerRTU
        from pymodbus.pdu import DecodePDU

        self.link, self.timeout_s = link, timeout_s
        self.framer = FramerRTU(DecodePDU(False))

    def read_registers(self, request: ReadRequest, unit: int) -> list[int]:
        from pymodbus.exceptions import ModbusException
        from pymodbus.pdu.register_message import ReadHoldingRegistersRequest, ReadInputRegistersRequest

        cls = ReadInputRegistersRequest if request.table == "input" else ReadHoldingRegistersRequest
        self.link.write(self.framer.buildFrame(cls(address=request.address, count=request.count, dev_id=unit)))
        expected = 5 + 2 * request.count
        data = b""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            data += self.link.read(expected - len(data), max(deadline - time.monotonic(), 0.001))
            if len(data) >= 5 and data[1] & 0x80 or len(data) >= expected:
                break
        if len(data) < 5:
            raise ModbusClientError(f"no answer from unit {unit} within {self.timeout_s} s")
        if data[1] & 0x80:
            data = data[:5]
        try:
            _used, pdu = self.framer.handleFrame(data, unit, 0)
        except ModbusException as exc:
            raise ModbusClientError(f"undecodable answer {data.hex()}: {exc}") from None
        if pdu is None:
            raise ModbusClientError(f"bad RTU frame (CRC, length or unit) {data.hex()}")
        if pdu.isError():
            raise ModbusExceptionResponse(request, int(getattr(pdu, "exception_code", 0)))
        words = list(pdu.registers)
        if len(words) != request.count:
            raise ModbusClientError(f"asked for {request.count} registers, got {len(words)}")
        return words


def as_reader(link_or_client: Any) -> RegisterReader:
    if hasattr(link_or_client, "read_registers"):
        return link_or_client  # type: ignore[no-any-return]
    if hasattr(link_or_client, "read_input_registers"):
        return PymodbusReader(link_or_client)
    if hasattr(link_or_client, "write") and hasattr(link_or_client, "read"):
        return LinkRtuReader(link_or_client)
    raise TypeError(f"cannot read Modbus through {type(link_or_client).__name__}")


def open_client(url: str, timeout_s: float = 3.0) -> Any:
    """A connected pymodbus client: ``tcp://host:port`` (Modbus TCP) or ``rtu+tcp://host:port`` (RTU over TCP)."""
    from pymodbus.client import ModbusTcpClient
    from pymodbus.framer import FramerType

    parts = urlsplit(url)
    if parts.scheme not in ("tcp", "rtu+tcp") or not parts.hostname:
        raise ModbusClientError(f"use tcp://host:port or rtu+tcp://host:port, not {url!r}")
    framer = FramerType.RTU if parts.scheme == "rtu+tcp" else FramerType.SOCKET
    client = ModbusTcpClient(parts.hostname, port=parts.port or 502, framer=framer, timeout=timeout_s, retries=0)
    if not client.connect():
        raise ModbusClientError(f"cannot connect to {parts.hostname}:{parts.port or 502}")
    return client


def read_map(
    link_or_client: Any,
    regmap: RegisterMap,
    unit: int = 1,
    names: Iterable[str] | None = None,
    limits: AlarmThresholds | None = None,
) -> ReadResult:
    """Read ``regmap`` (or only ``names``) from ``unit``: coalesced requests, exact values, HES-33 alarms.

    A request the device refuses with a Modbus exception costs only its own registers (listed in
    ``errors``); a dead link raises :class:`ModbusClientError`.
    """
    if not 0 <= unit <= 247:
        raise ModbusClientError(f"unit id must be 0..247, not {unit}")
    reader = as_reader(link_or_client)
    words: dict[int, int] = {}
    failed: dict[str, str] = {}
    requests = plan_reads(regmap, names)
    for request in requests:
        try:
            got = reader.read_registers(request, unit)
        except ModbusExceptionResponse as exc:
            for reg in regmap.registers:
                if reg.table == request.table and request.address <= reg.address < request.address + request.count:
                    failed[reg.name] = str(exc)
            continue
        for i, word in enumerate(got):
            words[request.reference + i] = word
    wanted = set(names) if names is not None else None
    values, errors = decode_words(regmap, words)
    errors = {k: v for k, v in errors.items() if (wanted is None or k in wanted) and k not in failed}
    errors.update(failed)
    alarms = evaluate_alarms(values, limits if limits is not None else regmap.alarms)
    if wanted is not None:  # neighbours read in the same request stay in ``words`` only
        values = {k: v for k, v in values.items() if k in wanted}
    identity = dict(regmap.device)
    identity.update({r.name: str(values[r.name]) for r in regmap.registers
                     if r.group == "identity" and r.name in values})
    return ReadResult(words=words, values=values, alarms=alarms, errors=errors, requests=len(requests),
                      identity=identity)
