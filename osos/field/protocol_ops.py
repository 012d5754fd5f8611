"""Directive steps for the binary meter protocols (HES-40, HES-44..46): DLMS/COSEM, Modbus RTU and M-Bus.

The interpreter (``osos.field.directives``) hands every op it does not know itself to :func:`run_step`. Each
step works on the directive's :class:`~osos.field.links.Link`, so a DLMS or Modbus meter is read the same way
over a serial port, a modem's transparent TCP port or a simulated meter. What a step reads goes into the run
exactly as it arrived: ``result.buffers["data"]`` collects the raw bytes (A-XDR data for DLMS, register words
for Modbus, long frames for M-Bus) and ``result.records`` says what each piece is, so the head-end can decode
the bytes with its own codec and need not trust the gateway's parse (``readings.py``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from osos.field.links import Link, LinkError

if TYPE_CHECKING:
    from osos.field.directives import RunResult

FAIL_PROTOCOL = 7  # the meter refused or answered something unusable (DLMS access denied, Modbus exception ...)
FAIL_NO_SECRET = 8  # the directive needs a meter secret (password, keys) the gateway has not been given
PROTOCOL_OPS = frozenset({"dlms_get", "dlms_profile", "dlms_action", "dlms_set_clock", "modbus_read_map",
                          "mbus_req_ud2"})


def _error(reason: str, index: int, code: int = FAIL_PROTOCOL) -> Exception:
    from osos.field.directives import DirectiveError

    return DirectiveError(reason, step=index, fail_code=code)


def _param(value: Any, result: RunResult, index: int) -> str:
    from osos.field.directives import substitute

    return substitute(str(value), result.params, index)


def _int_param(value: Any, result: RunResult, index: int, what: str) -> int:
    text = _param(value, result, index)
    try:
        return int(text)
    except ValueError:
        raise _error(f"{what} {text!r} is not an integer", index, 5) from None


def _keep(result: RunResult, record: dict[str, Any], raw: bytes) -> None:
    record["offset"], record["length"] = len(result.buffers.get("data", b"")), len(raw)
    result.records.append(record)
    result.buffers["data"] = result.buffers.get("data", b"") + raw


# ---------------------------------------------------------------------------------------------- DLMS
def _dlms_client(link: Link, result: RunResult, index: int) -> Any:
    """The run's association, opened on first use from the run's parameters (profile + inventory)."""
    from osos.field.dlms_client import DlmsClient, HdlcTransport, LinkWrapperTransport, Security

    client = result.sessions.get("dlms")
    if client is not None:
        return client
    params = result.params
    client_sap = _int_param(params.get("client_sap", "16"), result, index, "client_sap")
    timeout = _int_param(params.get("timeout_ms", "5000"), result, index, "timeout_ms") / 1000
    if params.get("auth", "none") == "lls" and not params.get("password"):  # before any byte goes to the meter
        raise _error("DLMS LLS needs this meter's password: none is configured (put it in the gateway's secret "
                     "store and reference it from the meter, see docs/field.md)", index, FAIL_NO_SECRET)
    if params.get("auth", "none") == "hls-gmac":
        _hls_security(params, result, index)  # refuses missing or malformed keys before the link is touched
    if params.get("dlms_transport", "wrapper") == "hdlc":
        physical = params.get("server_physical") or None
        transport: Any = HdlcTransport(lambda n: link.read(n, timeout), link.write, client_sap,
                                       server_logical=int(params.get("server_logical", "1")),
                                       server_physical=int(physical) if physical else None)
        transport.connect()
    else:
        transport = LinkWrapperTransport(link, client_sap, int(params.get("server_logical", "1")), timeout)
    auth = params.get("auth", "none")
    counter_reader = None
    if auth == "hls-gmac":
        security = _hls_security(params, result, index)
        if params.get("dlms_transport", "wrapper") != "hdlc":  # recovery: ask the public client (SAP 16)
            server_logical = int(params.get("server_logical", "1"))

            def counter_reader() -> int:
                from osos.field.dlms_client import read_invocation_counter

                return read_invocation_counter(LinkWrapperTransport(link, 16, server_logical, timeout))
    elif auth == "lls":
        security = Security("lls", password=params.get("password", "").encode("latin-1"))
    else:
        security = Security("none")
    on_counter = None
    slot = _counter_slot(params, security, result)
    if slot is not None:
        store, key = slot
        security.invocation_counter = max(security.invocation_counter, store.next(key))

        def on_counter(ic: int) -> None:
            store.reserve(key, ic)

    client = DlmsClient(transport, security, counter_reader=counter_reader, on_counter=on_counter)
    if slot is not None:
        client.meter_ic_seen = slot[0].meter_seen(slot[1])
        result.sessions["dlms_counters"] = slot
    result.sessions["dlms"] = client  # before associating: close_sessions records the counters even on failure
    client.associate()
    return client


def _counter_slot(params: dict[str, str], security: Any, result: RunResult) -> tuple[Any, str] | None:
    """(counter store, key) when the run keeps HLS-GMAC counters across restarts: the gateway gives its
    interpreter an ``InvocationCounters`` and each meter's ``meter_id``. Keyed by meter, client SAP and our system
    title, since each (key, sender) pair has its own counter."""
    store = result.counters
    meter_id = params.get("meter_id", "")
    if security.mechanism != "hls-gmac" or store is None or not meter_id:
        return None
    return store, f"{meter_id}/{params.get('client_sap', '16')}/{security.system_title.hex()}"


def _hls_security(params: dict[str, str], result: RunResult, index: int) -> Any:
    """HLS-GMAC (security suite 0) from the meter's keys, which come from the gateway's secret store (``ek``/``ak``
    in hex, never from the meter library's data files). The invocation counter starts past the last one this
    gateway used for the meter (persisted, see ``_counter_slot``) and is recovered from the meter when it is
    behind (e.g. another client with the same title talked to it)."""
    from osos.field.dlms_client import Security

    try:
        ek, ak = bytes.fromhex(params.get("ek", "")), bytes.fromhex(params.get("ak", ""))
    except ValueError:
        raise _error("ek/ak must be hexadecimal", index, 5) from None
    if len(ek) != 16 or len(ak) != 16:
        raise _error("HLS-GMAC needs 16-byte ek and ak for this meter (the gateway's secret store)", index,
                     FAIL_NO_SECRET)
    title = params.get("system_title", "")
    try:
        system_title = bytes.fromhex(title) if title else b"OSO\x00\x00\x00\x00\x01"
    except ValueError:
        raise _error("system_title must be hexadecimal", index, 5) from None
    counter = _int_param(params.get("invocation_counter", "1"), result, index, "invocation_counter")
    return Security("hls-gmac", ek=ek, ak=ak, system_title=system_title, invocation_counter=counter)


def _when(text: str, index: int) -> dt.datetime | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _error(f"{text!r} is not an ISO 8601 date-time", index, 5) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _dlms_step(op: str, index: int, step: dict[str, Any], link: Link, result: RunResult) -> None:
    from osos.protocols import dlms as D

    client = _dlms_client(link, result, index)
    obis = _param(step.get("obis", ""), result, index)
    if op == "dlms_get":
        class_id, attr = int(step["class"]), int(step.get("attr", 2))
        value = client.get(class_id, obis, attr)
        _keep(result, {"op": "get", "class": class_id, "obis": obis, "attr": attr}, D.encode_data(value))
    elif op == "dlms_profile":
        start = _when(_param(step.get("start", ""), result, index), index)
        end = _when(_param(step.get("end", ""), result, index), index)
        if (start is None) != (end is None):
            raise _error("a profile range needs both start and end", index, 5)
        access = None
        if start is not None and end is not None:
            clock = D.obis_bytes("0.0.1.0.0.255")
            access = D.AccessSelection(1, D.struct_(
                D.struct_(D.u16(8), D.octets(clock), D.i8(2), D.u16(0)),
                D.octets(D.datetime_to_octets(start)), D.octets(D.datetime_to_octets(end)), D.array([])))
        columns = client.get(7, obis, 3)
        _keep(result, {"op": "get", "class": 7, "obis": obis, "attr": 3}, D.encode_data(columns))
        for column in columns.items or []:  # a register column needs its scaler and unit to be exact
            column_class, column_obis = int(column.items[0].value), D.obis_str(bytes(column.items[1].value))
            if column_class in (3, 4):
                scaler_unit = client.get(column_class, column_obis, 3)
                dotted = ".".join(str(b) for b in bytes(column.items[1].value))
                _keep(result, {"op": "get", "class": column_class, "obis": dotted, "attr": 3},
                      D.encode_data(scaler_unit))
        buffer = client.get(7, obis, 2, access)
        _keep(result, {"op": "get", "class": 7, "obis": obis, "attr": 2}, D.encode_data(buffer))
    elif op == "dlms_action":
        class_id, method = int(step["class"]), _int_param(step["method"], result, index, "method")
        client.action(class_id, obis, method, D.i8(int(step.get("parameter", 0))))
        result.log.append(f"action {class_id}/{obis}/{method} ok")
    elif op == "dlms_set_clock":
        when = _when(_param(step.get("time", "${now}"), result, index), index)
        assert when is not None
        client.set_clock(when)
        result.log.append(f"clock set to {when.isoformat()}")


# ---------------------------------------------------------------------------------------------- Modbus
def _modbus_step(index: int, step: dict[str, Any], link: Link, result: RunResult) -> None:
    from osos.field.modbus_client import ModbusExceptionResponse, as_reader
    from osos.protocols import modbus as M

    name = _param(step["map"], result, index)
    unit = _int_param(step.get("unit", "${unit}"), result, index, "unit")
    regmap = M.load_map(name)
    wanted = [n for n in _param(step.get("names", ""), result, index).split(",") if n] or None
    reader = as_reader(link)
    result.params.setdefault("modbus_map", name)
    for request in M.plan_reads(regmap, wanted):
        try:
            words = reader.read_registers(request, unit)
        except ModbusExceptionResponse as exc:
            result.log.append(f"modbus: {exc}")
            continue
        raw = b"".join(w.to_bytes(2, "big") for w in words)
        _keep(result, {"op": "modbus", "map": name, "unit": unit, "reference": request.reference,
                       "count": request.count, "table": request.table}, raw)
    if not result.records:
        raise _error(f"unit {unit} answered none of the {name} requests", index)


# ---------------------------------------------------------------------------------------------- M-Bus
def _mbus_checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def _mbus_read_frame(link: Link, timeout_s: float, index: int) -> bytes:
    """One EN 13757-2 answer: E5 (single character) or a long frame 68 L L 68 ... CS 16."""
    deadline = time.monotonic() + timeout_s

    def take(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _error(f"M-Bus: no complete answer within {timeout_s} s", index, 2)
            buf += link.read(n - len(buf), remaining)
        return buf

    first = take(1)
    if first == b"\xe5":
        return first
    if first != b"\x68":
        raise _error(f"M-Bus: unexpected start byte {first.hex()}", index, 3)
    head = first + take(3)
    if head[1] != head[2] or head[3] != 0x68:
        raise _error(f"M-Bus: bad long frame header {head.hex()}", index, 3)
    rest = take(head[1] + 2)
    frame = head + rest
    if frame[-1] != 0x16 or _mbus_checksum(frame[4:-2]) != frame[-2]:
        raise _error("M-Bus: checksum or stop byte wrong", index, 6)
    return frame


def _mbus_step(index: int, step: dict[str, Any], link: Link, result: RunResult) -> None:
    """SND_NKE, then REQ_UD2 until the last answer has no "more records follow" (DIF 0x1F), toggling FCB."""
    from osos.protocols import mbus

    address = _int_param(step.get("address", "${primary}"), result, index, "address")
    timeout_s = _int_param(step.get("timeout_ms", 2000), result, index, "timeout_ms") / 1000
    max_frames = int(step.get("max_frames", 8))

    def short(c: int) -> bytes:
        return bytes([0x10, c, address, (c + address) & 0xFF, 0x16])

    link.write(short(0x40))  # SND_NKE
    if _mbus_read_frame(link, timeout_s, index) != b"\xe5":
        raise _error("M-Bus: SND_NKE was not acknowledged with E5", index, 3)
    fcb = 0
    for _ in range(max_frames):
        link.write(short(0x7B if fcb else 0x5B))  # REQ_UD2 (FCV set); FCB (0x20) toggles for each next telegram
        frame = _mbus_read_frame(link, timeout_s, index)
        if frame == b"\xe5":
            raise _error("M-Bus: REQ_UD2 answered with E5 instead of data", index, 3)
        _keep(result, {"op": "mbus", "address": address}, frame)
        try:
            more = mbus.decode(frame).more_records_follow  # DIF 1Fh: the meter has another telegram
        except mbus.MBusError as exc:
            raise _error(f"M-Bus: {exc}", index, 3) from None
        if not more:
            return
        fcb ^= 1
    raise _error(f"M-Bus: still more records after {max_frames} frames", index, 3)


# ---------------------------------------------------------------------------------------------- entry points
def run_step(op: str, index: int, step: dict[str, Any], link: Link, result: RunResult) -> None:
    """Run one protocol step; meter refusals become DirectiveError(failCode 7), dead links LinkError."""
    from osos.field.dlms_client import DlmsClientError
    from osos.field.modbus_client import ModbusClientError
    from osos.protocols.errors import DecodeError

    try:
        if op.startswith("dlms_"):
            _dlms_step(op, index, step, link, result)
        elif op == "modbus_read_map":
            _modbus_step(index, step, link, result)
        elif op == "mbus_req_ud2":
            _mbus_step(index, step, link, result)
        else:
            raise _error(f"unknown op {op!r}", index, 5)
    except (DlmsClientError, ModbusClientError, DecodeError) as exc:
        raise _error(f"{op}: {exc}", index) from None
    except (TimeoutError, ConnectionError) as exc:
        raise LinkError(str(exc)) from None


def close_sessions(result: RunResult) -> None:
    """Release a DLMS association the run opened (best effort: the run's outcome stands)."""
    client = result.sessions.pop("dlms", None)
    slot = result.sessions.pop("dlms_counters", None)
    if client is not None and slot is not None and client.meter_ic_seen:
        with contextlib.suppress(OSError):
            slot[0].saw(slot[1], client.meter_ic_seen)
    if client is not None:
        with contextlib.suppress(Exception):
            client.release()
        with contextlib.suppress(Exception):
            client.t.close()  # HDLC: DISC; the wrapper transport leaves the gateway's link open
